"""The Flask application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from config import load_config


def create_app(test_config: dict[str, Any] | None = None, registry=None) -> Flask:
    """Build the app: config from the environment (overridden by `test_config`), errors, models, routes."""
    from app.forms import ApiRequest
    from app.jsonprovider import ApiFlask

    app = ApiFlask(__name__)
    app.request_class = ApiRequest  # multipart text must be strict UTF-8
    app.config.from_mapping(load_config())
    if test_config:
        app.config.from_mapping(test_config)
    app.json.sort_keys = False
    configure_logging(app)
    register_error_handlers(app)
    register_request_hooks(app)
    register_blueprints(app)
    register_openapi(app)
    from app.registry import init_registry

    init_registry(app, registry)
    return app


def configure_logging(app: Flask) -> None:
    logging.basicConfig(
        level=app.config["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
    )


def register_error_handlers(app: Flask) -> None:
    from app.errors import register_error_handlers as register

    register(app)


def register_request_hooks(app: Flask) -> None:
    """Request ids and the access log first, then the optional API-key check."""
    from app.auth import init_auth
    from app.requestlog import init_request_log

    init_request_log(app)
    init_auth(app)


def register_openapi(app: Flask) -> None:
    from app.openapi import init_openapi

    init_openapi(app)


def register_blueprints(app: Flask) -> None:
    from app.api import caption, encode, fuse, health

    for module in (health, encode, fuse, caption):
        app.register_blueprint(module.bp)
