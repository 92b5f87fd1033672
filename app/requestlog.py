"""One structured (JSON) log line per request, never the payload, and an X-Request-ID on every response."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Flask, g, request

log = logging.getLogger("app.access")
# A client's id is echoed only if it is short and plain: no log injection through it.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)


def _start() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _SAFE_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.started = time.perf_counter()


def _finish(response):
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers["X-Request-ID"] = request_id
    started = g.get("started")
    record = {
        "request_id": request_id,
        "method": request.method,
        "route": request.url_rule.rule if request.url_rule is not None else None,
        "status": response.status_code,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
        "images": g.get("n_images", 0),
        "texts": g.get("n_texts", 0),
        "bytes_in": request.content_length or 0,
    }
    error = g.get("error_code")
    if error:
        record["error"] = error
    log.info(json.dumps(record))
    return response


def init_request_log(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
