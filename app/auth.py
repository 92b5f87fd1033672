"""Optional API keys (API_KEYS, comma-separated; off when empty): Bearer token or X-API-Key header."""

from __future__ import annotations

import hmac

from flask import Flask, current_app, request

from app.errors import ApiError

# Liveness, readiness and the contract stay reachable without a key (probes and clients need them).
OPEN_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "openapi", "static"})


def _presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-API-Key") or None


def _check_key() -> None:
    keys: tuple[bytes, ...] = current_app.config["API_KEYS"]
    if not keys or request.endpoint is None or request.endpoint in OPEN_ENDPOINTS:
        return
    if request.endpoint.startswith("openapi_docs"):
        return
    presented = _presented_key()
    if presented is not None:
        candidate = presented.encode("utf-8", "surrogateescape")
        # Compare against every key, always, so the timing says nothing about which one nearly matched.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(candidate, key)
        if matched:
            return
    raise ApiError(
        401,
        "unauthorized",
        "A valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
        {"WWW-Authenticate": 'Bearer realm="api"'},
    )


def init_auth(app: Flask) -> None:
    """Check keys before every request to a protected endpoint (a no-op when API_KEYS is empty)."""
    app.config["API_KEYS"] = tuple(
        k.encode() if isinstance(k, str) else k for k in _split(app.config.get("API_KEYS")) if k
    )
    app.before_request(_check_key)


def _split(value) -> list:
    if not value:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return list(value)
