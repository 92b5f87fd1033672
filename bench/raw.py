"""The ceiling: the served compiled forward passes alone, no HTTP, at each batch size.

    python -m bench.raw --image-encoder efficientnet_lite0 --model-dir model_store [--layout whole|server]
                        [--batches 1,2,4,8,16,32] [--images-only] [--json out.json]

The image encoder runs on IMAGE_RUNTIME (tensorflow or onnxruntime). `--layout whole` (default): one caller
with the whole machine, each runtime's own thread pools (one thread per core), ONNX Runtime's threads
spinning. `--layout server`: the thread settings a server worker gets (BATCH_CONCURRENCY callers at once,
on a pool of TF_INTRA_OP_THREADS / ONNX_THREADS threads), and a lone caller's batch-1 latency there. bench.run takes the
best of both as the ceiling, so a layout the server profits from raises the bar it is measured against.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

SENTENCE = "a photo of a small grey cat sitting on a wooden table"


def cpu_seconds() -> float:
    """CPU time this process has used so far, every thread and core together."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn, min_seconds: float, min_calls: int = 3) -> tuple[float, float]:
    """(wall seconds, CPU seconds) per call, after two untimed calls."""
    fn()
    fn()
    calls, started, cpu = 0, time.perf_counter(), cpu_seconds()
    while calls < min_calls or time.perf_counter() - started < min_seconds:
        fn()
        calls += 1
    return (time.perf_counter() - started) / calls, (cpu_seconds() - cpu) / calls


# FLOPs of one 224x224 image: 2 x the multiply-adds of the conv and dense layers (counted from the Keras
# models: 3.86 G and 0.385 G), to put images/s against the cores' measured float32 rate.
GFLOP_PER_IMAGE = {"resnet50": 7.7, "efficientnet_lite0": 0.77}


def matmul_gflops(seconds: float = 1.0, n: int = 2048) -> float:
    """The float32 rate a large matrix product reaches with TensorFlow's threads here: a practical peak."""
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    matmul = tf.function(lambda: tf.linalg.matmul(a, a))
    per_call, _ = timed(lambda: matmul().numpy(), seconds)
    return 2 * n**3 / per_call / 1e9


def timed_concurrent(fn, callers: int, min_seconds: float) -> tuple[float, float]:
    """(wall seconds, CPU seconds) per call across `callers` threads calling `fn` at once (after two untimed
    calls each)."""
    counts = [0] * callers
    stop = threading.Event()

    def loop(i: int) -> None:
        fn()
        fn()
        barrier.wait()
        while not stop.is_set():
            fn()
            counts[i] += 1

    barrier = threading.Barrier(callers + 1)
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    barrier.wait()
    started, cpu = time.perf_counter(), cpu_seconds()
    time.sleep(min_seconds)
    stop.set()
    for t in threads:
        t.join()
    calls = max(1, sum(counts))
    return (time.perf_counter() - started) / calls, (cpu_seconds() - cpu) / calls


def measure(image_encoder: str, model_dir: str, batches=(1, 2, 4, 8, 16, 32), seconds: float = 2.0,
            layout: str = "whole", images_only: bool = False) -> dict:
    from config import load_config
    from models import weights
    from models.image_encoders import BATCH_BUCKETS
    from models.loading import configure_tensorflow, load_served_image_encoder, load_text_encoder

    config = load_config()
    server = layout == "server"
    configure_tensorflow(config if server else {})  # {}: TensorFlow's defaults, every core
    manifest = weights.verify(model_dir, [image_encoder, weights.TEXT_ENCODER])
    threads, spinning = (config["ONNX_THREADS"], config["ONNX_SPINNING"]) if server else (0, True)
    image = load_served_image_encoder(image_encoder, model_dir, manifest, config["IMAGE_RUNTIME"], threads, spinning)
    image.buckets = BATCH_BUCKETS
    if server:
        return _measure_server_layout(image, image_encoder, config, batches, seconds)
    size = image.input_size
    rng = np.random.default_rng(0)
    out = {"runtime": config["IMAGE_RUNTIME"], "images": {}, "texts": {}}
    label = f"{image_encoder} ({config['IMAGE_RUNTIME']})"
    for n in batches:
        pixels = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
        per_call, cpu = timed(lambda p=pixels: image(p), seconds)
        out["images"][n] = {"latency_ms": 1000 * per_call, "per_s": n / per_call, "cpu_ms_per_image": 1000 * cpu / n}
        print(f"raw {label} batch {n:>2}: {n / per_call:7.1f} images/s  ({1000 * per_call:.1f} ms/call, "
              f"{1000 * cpu / n:.2f} ms CPU an image)", flush=True)
    best = max(out["images"], key=lambda k: out["images"][k]["per_s"])
    out["best_image_batch"] = best
    if images_only:
        return out
    text = load_text_encoder(model_dir, manifest["models"][weights.TEXT_ENCODER])
    text.buckets = BATCH_BUCKETS
    for n in (1, 8, 32):
        texts = [SENTENCE] * n
        per_call, _ = timed(lambda t=texts: text.encode(t), seconds / 2)
        out["texts"][n] = {"latency_ms": 1000 * per_call, "per_s": n / per_call}
        print(f"raw minilm batch {n:>2}: {n / per_call:7.1f} texts/s  ({1000 * per_call:.1f} ms/call)", flush=True)
    out["matmul_gflops"] = matmul_gflops(seconds / 2)
    model_gflops = out["images"][best]["per_s"] * GFLOP_PER_IMAGE[image_encoder]
    out["model_gflops"] = model_gflops
    print(f"raw {label}: {model_gflops:.0f} GFLOP/s at batch {best} "
          f"({GFLOP_PER_IMAGE[image_encoder]} GFLOP an image); a 2048x2048 float32 matmul reaches "
          f"{out['matmul_gflops']:.0f} GFLOP/s here", flush=True)
    out["best_text_batch"] = max(out["texts"], key=lambda k: out["texts"][k]["per_s"])
    return out


def _measure_server_layout(image, image_encoder: str, config: dict, batches, seconds: float) -> dict:
    """Throughput with the worker's concurrent passes, and a lone caller's batch-1 latency, on its threads."""
    callers = config["BATCH_CONCURRENCY"]
    size = image.input_size
    rng = np.random.default_rng(0)
    pool = config["ONNX_THREADS"] if config["IMAGE_RUNTIME"] == "onnxruntime" else config["TF_INTRA_OP_THREADS"]
    label = f"{image_encoder} ({config['IMAGE_RUNTIME']}, {callers} passes at once on a pool of {pool} threads)"
    out = {"runtime": config["IMAGE_RUNTIME"], "callers": callers, "images": {}}
    one = rng.integers(0, 255, (1, size, size, 3), dtype=np.uint8)
    out["batch1_latency_ms"] = 1000 * timed(lambda: image(one), seconds / 2)[0]
    print(f"raw {label} lone caller batch 1: {out['batch1_latency_ms']:.1f} ms", flush=True)
    for n in batches:
        pixels = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
        per_call, cpu = timed_concurrent(lambda p=pixels: image(p), callers, seconds)
        out["images"][n] = {"per_s": n / per_call, "cpu_ms_per_image": 1000 * cpu / n}
        print(f"raw {label} batch {n:>2}: {n / per_call:7.1f} images/s  ({1000 * cpu / n:.2f} ms CPU an image)",
              flush=True)
    out["best_image_batch"] = max(out["images"], key=lambda k: out["images"][k]["per_s"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-encoder", default="efficientnet_lite0")
    parser.add_argument("--model-dir", default="model_store")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--layout", choices=("whole", "server"), default="whole")
    parser.add_argument("--batches", default="1,2,4,8,16,32", help="image batch sizes, comma-separated")
    parser.add_argument("--images-only", action="store_true", help="skip the text encoder and the matmul rate")
    parser.add_argument("--json")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))
    result = measure(args.image_encoder, args.model_dir, batches, args.seconds, args.layout, args.images_only)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
