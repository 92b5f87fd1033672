"""gunicorn settings, from the same environment variables as the app (see README.md)."""

from config import load_config

_config = load_config()

bind = f"{_config['HOST']}:{_config['PORT']}"
workers = _config["WORKERS"]
threads = _config["THREADS"]
worker_class = "gthread"
# Never preload: TensorFlow state created in the master before fork() hangs the workers.
preload_app = False
# A worker silent for this long (stuck, not merely busy: gthread heartbeats between requests) is killed and
# replaced; the replacement loads its models again and /readyz says so until it is warm.
timeout = _config["WORKER_TIMEOUT_S"]
# On SIGTERM the master stops accepting, each worker finishes its in-flight requests within this many
# seconds, then exits; what is still running after that is cut off.
graceful_timeout = _config["GRACEFUL_TIMEOUT_S"]
keepalive = 5
# Unread connections wait in the kernel's queue rather than being refused during a burst.
backlog = 2048
# The app writes one structured line per request (app/requestlog.py); gunicorn's own access log would double it.
accesslog = None
loglevel = _config["LOG_LEVEL"].lower()
# Bounds on the request line and headers, before Flask sees anything.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190


def on_starting(server):
    """Fail fast, in the master and without TensorFlow, if the configured weights are not installed."""
    if _config["MODEL_REGISTRY"]:
        server.log.warning("MODEL_REGISTRY=%s: test models, not the installed weights", _config["MODEL_REGISTRY"])
        return
    from models import weights

    try:
        manifest = weights.verify(_config["MODEL_DIR"], [_config["IMAGE_ENCODER"], weights.TEXT_ENCODER])
        if _config["IMAGE_RUNTIME"] == "onnxruntime":
            weights.verify_onnx(_config["MODEL_DIR"], _config["IMAGE_ENCODER"], manifest)
    except weights.WeightsError as err:
        server.log.error("cannot start: %s", err)
        raise SystemExit(1) from None


def worker_exit(server, worker):
    """After a worker's in-flight requests have finished (or graceful_timeout passed), stop its batchers cleanly."""
    loader = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("models")
    registry = getattr(loader, "registry", None)
    if registry is not None and hasattr(registry, "close"):
        try:
            registry.close()
        except Exception:  # noqa: BLE001 - the worker is exiting anyway; say why the batchers did not stop
            server.log.exception("closing the model batchers failed")
