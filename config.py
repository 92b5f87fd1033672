"""Server configuration, read from the environment when the app is created (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

IMAGE_ENCODERS = ("efficientnet_lite0", "resnet50")
# What runs the image encoder's forward pass: TensorFlow (default), or ONNX Runtime on a model converted from
# the same weights by `python -m models.onnx_export` (see README.md, Throughput).
IMAGE_RUNTIMES = ("tensorflow", "onnxruntime")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false (1/0), got {env.get(name)!r}")


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw


def available_cpus() -> int:
    """Cores this process may run on: its CPU affinity, bounded by a cgroup v2 quota (`docker run --cpus`)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return count


def default_model_dir() -> str:
    """Where converted weights live unless MODEL_DIR says otherwise: ./model_store beside this file."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_store")


def load_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the app's configuration from environment variables (documented in README.md)."""
    env = os.environ if env is None else env
    image_encoder = _str(env, "IMAGE_ENCODER", "efficientnet_lite0")
    if image_encoder not in IMAGE_ENCODERS:
        raise ValueError(f"IMAGE_ENCODER must be one of {', '.join(IMAGE_ENCODERS)}, got {image_encoder!r}")
    image_runtime = _str(env, "IMAGE_RUNTIME", "tensorflow")
    if image_runtime not in IMAGE_RUNTIMES:
        raise ValueError(f"IMAGE_RUNTIME must be one of {', '.join(IMAGE_RUNTIMES)}, got {image_runtime!r}")
    # Layout, measured on 2 cores (README.md, Throughput). EfficientNet-Lite0 serves most with one worker
    # running a forward pass per core at once, one thread each (its small depthwise convolutions gain little
    # from a second thread: batch-1 latency 8.6 ms on one thread, 10-14 ms on two); ResNet50 with one pass on
    # every core (a second thread cuts its batch-1 latency from 38 to 29 ms). One worker: a single queue
    # takes every connection (kept-alive connections stick to one worker), and the models are held once.
    cpus = _int(env, "CPUS", available_cpus(), minimum=1)
    workers = _int(env, "WORKERS", 1, minimum=1)
    per_worker = max(1, cpus // workers)
    concurrency = _int(env, "BATCH_CONCURRENCY", min(per_worker, 4) if image_encoder == "efficientnet_lite0" else 1,
                       minimum=1)
    threads_per_pass = max(1, per_worker // concurrency)
    max_batch = _int(env, "MAX_BATCH_SIZE", 8 if concurrency == 1 else 4, minimum=1)
    return {
        "HOST": _str(env, "HOST", "127.0.0.1"),
        "PORT": _int(env, "PORT", 8000, minimum=1),
        "CPUS": cpus,
        "WORKERS": workers,
        # Forward passes each model runs at once per worker (each on TF_INTRA_OP_THREADS threads).
        "BATCH_CONCURRENCY": concurrency,
        # Request threads per worker: enough for every concurrent pass to fill its batch from one-image requests.
        "THREADS": _int(env, "THREADS", max(8, max_batch * concurrency), minimum=1),
        "MODEL_DIR": _str(env, "MODEL_DIR", default_model_dir()),
        "IMAGE_ENCODER": image_encoder,
        "IMAGE_RUNTIME": image_runtime,
        "RESNET50_WEIGHTS": env.get("RESNET50_WEIGHTS") or None,
        "FUSION_HEAD": env.get("FUSION_HEAD") or None,
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", 32 * 1024 * 1024, minimum=1),
        "MAX_FORM_PARTS": _int(env, "MAX_FORM_PARTS", 400, minimum=1),
        "MAX_IMAGES": _int(env, "MAX_IMAGES", 64, minimum=1),
        "MAX_TEXTS": _int(env, "MAX_TEXTS", 256, minimum=1),
        "MAX_TEXT_CHARS": _int(env, "MAX_TEXT_CHARS", 10_000, minimum=1),
        "MAX_IMAGE_PIXELS": _int(env, "MAX_IMAGE_PIXELS", 40_000_000, minimum=1),
        "MAX_CANDIDATES": _int(env, "MAX_CANDIDATES", 256, minimum=1),
        # Threads per forward pass (0: the runtime's own default, one per core); TensorFlow runs each
        # concurrent pass's kernels on an inter-op thread, so it needs one per pass.
        "TF_INTRA_OP_THREADS": _int(env, "TF_INTRA_OP_THREADS", threads_per_pass),
        "TF_INTER_OP_THREADS": _int(env, "TF_INTER_OP_THREADS", concurrency),
        # ONNX Runtime (IMAGE_RUNTIME=onnxruntime): the intra-op pool of the worker's session, shared by the
        # passes running at once, so a lone pass uses every core of the worker (EfficientNet-Lite0 on 2 cores:
        # c=1 p50 7.0-7.5 against 8.1-8.3 ms with a thread per pass, c=8 224-226 against 210-215 images/s);
        # and whether idle threads spin (faster alone, but spinning takes the cores from the request threads:
        # measured slower when serving).
        "ONNX_THREADS": _int(env, "ONNX_THREADS", per_worker),
        "ONNX_SPINNING": _bool(env, "ONNX_SPINNING", False),
        "REQUEST_TIMEOUT_S": _float(env, "REQUEST_TIMEOUT_S", 30.0),
        # Dynamic batching (models/batching.py), per model per worker; defaults measured with bench/run.py on
        # 2 cores: ResNet50 on one pass at a time is fastest per image from batches of 8 (16/32 within noise);
        # with two passes at once EfficientNet-Lite0 is fastest at 4 (157 against 136-149 images/s from 8 at
        # 8 clients: a pass of 8 leaves the other idle). The timeout only bounds the wait for callers known
        # to be on their way back.
        "MAX_BATCH_SIZE": max_batch,
        "BATCH_TIMEOUT_MS": _float(env, "BATCH_TIMEOUT_MS", 20.0),
        "MAX_QUEUE": _int(env, "MAX_QUEUE", 64, minimum=1),
        "MAX_TEXT_QUEUE": _int(env, "MAX_TEXT_QUEUE", 1024, minimum=1),
        "LOG_LEVEL": _str(env, "LOG_LEVEL", "INFO").upper(),
        # Optional API keys, comma-separated; empty means no authentication (health endpoints stay open anyway).
        "API_KEYS": tuple(k.strip() for k in env.get("API_KEYS", "").split(",") if k.strip()),
        # gunicorn: seconds a silent worker lives before it is killed and replaced; seconds in-flight
        # requests get to finish after SIGTERM.
        "WORKER_TIMEOUT_S": _int(env, "WORKER_TIMEOUT_S", 120, minimum=1),
        "GRACEFUL_TIMEOUT_S": _int(env, "GRACEFUL_TIMEOUT_S", 30, minimum=1),
        # Test hook: "module:function" returning a ModelRegistry, used instead of the installed weights
        # (tests/test_server.py runs real gunicorn with tests.conftest:make_tiny_registry). Not for production.
        "MODEL_REGISTRY": env.get("MODEL_REGISTRY") or None,
    }
