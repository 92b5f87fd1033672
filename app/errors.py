"""JSON errors: one exception type for the API and handlers registered on the app."""

from __future__ import annotations

import logging
import re

from flask import Flask, g, has_request_context, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client caused or must know about, sent as JSON with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    """The one JSON shape every error takes: {"error": {"code", "message"}}."""
    response = jsonify({"error": {"code": code, "message": message}})
    if has_request_context():
        g.error_code = code  # for the request log line (app/requestlog.py)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# Werkzeug's own exceptions (routing 404/405, 413 from MAX_CONTENT_LENGTH, ...) get stable codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _handle_api_error(err: ApiError):
    return error_response(err.status, err.code, err.message, err.headers)


def _handle_http_exception(err: HTTPException):
    status = err.code or 500
    code = _HTTP_CODES.get(status) or _snake(err.name or "error")
    message = err.description or err.name or "HTTP error"
    if status == 413:
        message = "The request body is larger than this server accepts (MAX_CONTENT_LENGTH)."
    headers = {}
    if status == 405 and getattr(err, "valid_methods", None):
        headers["Allow"] = ", ".join(err.valid_methods)
    return error_response(status, code, message, headers)


def _handle_unexpected(err: Exception):
    # A bug, not bad input: log it with its traceback and answer a JSON 500, never a 200.
    log.exception("unhandled error while serving a request")
    return error_response(500, "internal_error", "The server failed to process the request.")


def _handle_batcher_error(err):
    # Back-pressure from models/batching.py: a full queue is a 429 the client can retry, not a 5xx.
    from models.batching import BatcherClosedError, QueueFullError

    if isinstance(err, QueueFullError):
        return error_response(429, "queue_full", str(err), {"Retry-After": str(err.retry_after)})
    if isinstance(err, BatcherClosedError):
        return error_response(503, "shutting_down", str(err), {"Retry-After": "1"})
    return error_response(503, "timeout", str(err), {"Retry-After": "1"})


def register_error_handlers(app: Flask) -> None:
    """Make every error, routing ones included, a JSON body with the right status."""
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
    from models.batching import BatcherError

    app.register_error_handler(BatcherError, _handle_batcher_error)
