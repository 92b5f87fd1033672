"""WSGI entry point for gunicorn: each worker imports this after the fork and builds its own models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from app import create_app  # noqa: E402 - the log level must be set before TensorFlow loads

app = create_app()
