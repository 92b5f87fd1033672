"""Liveness, readiness and what models this worker serves."""

from flask import Blueprint

from app.openapi import documented
from app.registry import current_registry, registry_loader
from app.schemas import HealthResponse, ModelsResponse, ReadyResponse

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@documented(ok=HealthResponse, protected=False)
def healthz():
    """Liveness: the process answers."""
    return {"status": "ok"}


@bp.get("/readyz")
@documented(ok=ReadyResponse, errors=(503,), protected=False)
def readyz():
    """Readiness: 200 once this worker's models are loaded and warm, 503 (loading or failed) before."""
    loader = registry_loader()
    status = loader.status
    if status == "ready":
        return {"status": "ready"}
    body = {"status": status}
    if status == "failed":
        body["error"] = loader.error
    return body, 503, {"Retry-After": "5"} if status == "loading" else {}


@bp.get("/models")
@documented(ok=ModelsResponse, errors=(401, 503))
def models():
    """What models this worker serves, with their weights' SHA-256."""
    return {"models": current_registry().describe()}
