"""Liveness, readiness and what models this worker serves."""

from flask import Blueprint

from app.registry import current_registry, registry_loader

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    loader = registry_loader()
    status = loader.status
    if status == "ready":
        return {"status": "ready"}
    body = {"status": status}
    if status == "failed":
        body["error"] = loader.error
    return body, 503, {"Retry-After": "5"} if status == "loading" else {}


@bp.get("/models")
def models():
    return {"models": current_registry().describe()}
