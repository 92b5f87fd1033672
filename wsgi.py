"""WSGI entry point for gunicorn: each worker imports this after the fork and builds its own models."""

from app import create_app

app = create_app()
