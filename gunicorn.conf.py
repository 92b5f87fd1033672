"""gunicorn settings, from the same environment variables as the app (see README.md)."""

from config import load_config

_config = load_config()

bind = f"{_config['HOST']}:{_config['PORT']}"
workers = _config["WORKERS"]
threads = _config["THREADS"]
worker_class = "gthread"
# Never preload: TensorFlow state created in the master before fork() hangs the workers.
preload_app = False
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = None
loglevel = _config["LOG_LEVEL"].lower()


def on_starting(server):
    """Fail fast, in the master and without TensorFlow, if the configured weights are not installed."""
    from models import weights

    try:
        weights.verify(_config["MODEL_DIR"], [_config["IMAGE_ENCODER"], weights.TEXT_ENCODER])
    except weights.WeightsError as err:
        server.log.error("cannot start: %s", err)
        raise SystemExit(1) from None
