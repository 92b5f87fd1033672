"""The benchmark suite: raw model, the real server (gunicorn, project defaults), the naive Flask baseline.

    python -m bench.run [--image-encoder efficientnet_lite0|resnet50|all] [--runtime tensorflow|onnxruntime|all]
                        [--env KEY=VALUE ...] [--skip-naive] [--rounds N]

All in one run on one machine, so the ratios hold on a noisy box. The same server with its image model taken
out (bench/no_model.py) measures what a request costs around the model, which bounds the ratios on this
machine. Prints a table, the ratios and those bounds, and writes
bench/results/<encoder>-<runtime>-<time>.json. Every phase is bounded (fixed request counts sized from the raw
rate). ResNet50 runs on random-initialised weights unless MODEL_DIR holds real ones (speed is the same). The
naive baseline (TensorFlow's model.predict) runs once per encoder and is shared by both runtimes' ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench.load import image_bodies, multipart_images, photo_jpegs, run_load, text_bodies

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
PY = sys.executable
CONCURRENCY = (1, 4, 8, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, limit: float = 240) -> float:
    """Seconds until /readyz is 200 on 20 fresh connections in a row (every worker, with several)."""
    started, streak = time.perf_counter(), 0
    while time.perf_counter() - started < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                streak = streak + 1 if resp.status == 200 else 0
        except OSError:
            streak = 0
        if streak >= 20:
            return time.perf_counter() - started
        time.sleep(0.2 if streak == 0 else 0.01)
    raise RuntimeError(f"server not ready after {limit} s")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def model_dir_for(encoder: str) -> str:
    from config import load_config
    from models import weights

    model_dir = load_config()["MODEL_DIR"]
    if encoder in weights.read_manifest(model_dir)["models"]:
        return model_dir
    out = os.path.join(RESULTS, f"model_store_{encoder}_random")
    subprocess.run([PY, "-m", "bench.random_weights", "--source", model_dir, "--out", out], cwd=ROOT, check=True)
    return out


def requests_for(rate: float, concurrency: int, seconds: float) -> int:
    n = max(4 * concurrency, min(600, int(rate * seconds)))
    return -(-n // concurrency) * concurrency


def load_levels(port: int, rate: float, seconds: float, label: str, levels=CONCURRENCY, *, texts: bool = False,
                keepalive: bool = True, cpu_pids=()) -> dict:
    """One bounded load per concurrency level: one JPEG (or one text) a request, to /encode."""
    bodies, out, unit = (text_bodies(), {}, "texts") if texts else (image_bodies(), {}, "images")
    run_load(port, "/encode", bodies, 4, 8, keepalive=keepalive)  # first requests pay for lazy set-up
    for c in levels:
        n = requests_for(rate, c, seconds / (2 if c == 1 else 1))
        r = run_load(port, "/encode", bodies, c, n, keepalive=keepalive, cpu_pids=cpu_pids)
        out[c] = r
        cpu = r["server_cpu_ms_per_request"]
        print(f"{label:>7} c={c:<2} {r['req_per_s']:7.1f} {unit}/s  "
              f"p50 {r['p50_ms']:6.1f}  p90 {r['p90_ms']:6.1f}  p99 {r['p99_ms']:6.1f} ms  "
              + (f"CPU {cpu:5.2f} ms a request  " if cpu is not None else "")
              + f"errors {r['errors']} {r['statuses']}", flush=True)
    return out


def bench_server(encoder: str, model_dir: str, rate: float, seconds: float, extra_env: dict,
                 levels=CONCURRENCY, extras: bool = True, keepalive: bool = True, text_rate: float = 400,
                 label: str = "server") -> dict:
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "IMAGE_ENCODER": encoder, "MODEL_DIR": model_dir,
           "TF_CPP_MIN_LOG_LEVEL": "2", "LOG_LEVEL": "WARNING", **extra_env}
    log = tempfile.NamedTemporaryFile("w+", prefix="bench-gunicorn-", suffix=".log", delete=False)
    proc = subprocess.Popen([os.path.join(os.path.dirname(PY), "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        startup = wait_ready(port, proc)
        print(f" {label} ready in {startup:.1f} s (gunicorn log: {log.name})", flush=True)
        workers = children(proc.pid)
        out = {"startup_s": startup, "env": extra_env, "keepalive": keepalive,
               "levels": load_levels(port, rate, seconds, label, levels, keepalive=keepalive, cpu_pids=workers)}
        if not extras:
            return out
        out["text_levels"] = load_levels(port, text_rate, seconds / 2, "texts", levels, texts=True,
                                         keepalive=keepalive)
        # Past the queue's bound: 16 clients x 16 images each must get 200s or explicit 429s, nothing else.
        jpegs = photo_jpegs()
        big = [multipart_images([jpegs[i % len(jpegs)] for i in range(16)])]
        over = run_load(port, "/encode", big, 16, 32, keepalive=keepalive)
        out["overload_c16x16"] = over
        print(f" server overload 16 clients x 16 images: {over['statuses']}", flush=True)
        out["worker_rss_mib"] = [round(rss_mib(pid), 1) for pid in children(proc.pid)]
        out["master_rss_mib"] = round(rss_mib(proc.pid), 1)
        print(f" worker RSS after load: {out['worker_rss_mib']} MiB (master {out['master_rss_mib']} MiB)")
        return out
    finally:
        stop(proc)


def bench_naive(encoder: str, model_dir: str, rate: float, seconds: float, keepalive: bool = True) -> dict:
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="bench-naive-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [PY, "-m", "bench.naive_server", "--port", str(port), "--image-encoder", encoder, "--model-dir", model_dir],
        cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=log, stderr=subprocess.STDOUT)
    try:
        startup = wait_ready(port, proc)
        print(f" naive server ready in {startup:.1f} s", flush=True)
        return {"startup_s": startup, "levels": load_levels(port, rate, seconds, "naive", keepalive=keepalive)}
    finally:
        stop(proc)


def bench_no_model(encoder: str, model_dir: str, seconds: float, keepalive: bool = True) -> dict:
    """The same server with the image model's forward pass taken out (bench/no_model.py), at c=1 and c=8."""
    env = {"IMAGE_ENCODER": encoder, "IMAGE_RUNTIME": "tensorflow", "MODEL_REGISTRY": "bench.no_model:make_registry"}
    return bench_server(encoder, model_dir, 600, seconds, env, (1, 8), extras=False, keepalive=keepalive,
                        label="nomodel")


def bench_encoder(encoder: str, runtime: str, args, naive: dict, no_model: dict) -> dict:
    print(f"\n=== {encoder} on {runtime} ===", flush=True)
    model_dir = model_dir_for(encoder)
    server_env = {**dict(args.env), "IMAGE_ENCODER": encoder, "IMAGE_RUNTIME": runtime}
    if runtime == "onnxruntime":  # the project's own conversion (kept when up to date)
        subprocess.run([PY, "-m", "models.onnx_export", "--image-encoder", encoder, "--model-dir", model_dir],
                       cwd=ROOT, check=True)
    if args.raw_from:  # sweeps: reuse the raw figures of an earlier run of the same encoder
        with open(args.raw_from) as f:
            raw = json.load(f)["raw"]
    else:
        raw = run_raw(encoder, model_dir, args.raw_seconds, server_env, "whole")
        raw["server_layout"] = run_raw(encoder, model_dir, args.raw_seconds, server_env, "server")
    best = {"per_s": ceiling(raw)[0]}
    result = {"encoder": encoder, "runtime": runtime, "model_dir": model_dir, "raw": raw}
    keepalive = not args.new_connections
    if args.sweep:  # only the server, at c=1 and c=8, once per --env setting
        for setting in args.env:
            print(f"-- {setting[0]}: {setting[1] or 'project defaults'}", flush=True)
            env = dict(kv.split("=", 1) for kv in setting[1].split(",")) if setting[1] else {}
            env = {"IMAGE_ENCODER": encoder, "IMAGE_RUNTIME": runtime, **env}
            bench_server(encoder, model_dir, best["per_s"], args.seconds, env, (1, 8), extras=False,
                         keepalive=keepalive)
        raise SystemExit(0)
    text_rate = raw["texts"][str(raw["best_text_batch"])]["per_s"]
    result["server"] = bench_server(encoder, model_dir, best["per_s"], args.seconds, server_env,
                                    keepalive=keepalive, text_rate=text_rate)
    if not args.skip_naive:
        if encoder not in naive:
            naive[encoder] = bench_naive(encoder, model_dir, min(best["per_s"] * 0.5, 40), args.seconds, keepalive)
        result["naive"] = naive[encoder]
    if encoder not in no_model:  # the request path is the same for both runtimes
        no_model[encoder] = bench_no_model(encoder, model_dir, args.seconds, keepalive)
    result["no_model"] = no_model[encoder]
    result["rounds"] = [round_figures(raw, result["server"]["levels"])]
    for i in range(2, args.rounds + 1):
        # The ratios again, raw and server back to back, so that one slow minute of a shared machine shows
        # as a spread instead of moving the verdict: only the ceiling's batch sizes, and c=1 and c=8.
        print(f"-- round {i} of {args.rounds}: the ceiling and the server at c=1 and c=8 again", flush=True)
        again = run_raw(encoder, model_dir, args.raw_seconds, server_env, "whole",
                        batches=(1, raw["best_image_batch"]))
        again["server_layout"] = run_raw(encoder, model_dir, args.raw_seconds, server_env, "server",
                                         batches=(1, raw["server_layout"]["best_image_batch"]))
        server = bench_server(encoder, model_dir, best["per_s"], args.seconds, server_env, (1, 8), extras=False,
                              keepalive=keepalive)
        result["rounds"].append(round_figures(again, server["levels"]))
    result["ratios"] = ratios(result)
    from config import load_config

    result["bounds"] = bounds(result, load_config()["CPUS"])
    return result


def run_raw(encoder: str, model_dir: str, seconds: float, env: dict, layout: str, batches=None) -> dict:
    extra = ["--batches", ",".join(map(str, batches)), "--images-only"] if batches else []
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        subprocess.run([PY, "-m", "bench.raw", "--image-encoder", encoder, "--model-dir", model_dir,
                        "--seconds", str(seconds), "--layout", layout, "--json", tmp.name, *extra], cwd=ROOT,
                       check=True, env={**os.environ, **env})
        with open(tmp.name) as f:
            return json.load(f)


def round_figures(raw: dict, levels: dict) -> dict:
    """One round's ceiling, server figures and the two ratios against the bare model."""
    best, latency = ceiling(raw)
    return {
        "raw_best_per_s": best,
        "raw_batch1_latency_ms": latency,
        "server8_per_s": levels[8]["req_per_s"],
        "server1_p50_ms": levels[1]["p50_ms"],
        "server8_over_raw_best": levels[8]["req_per_s"] / best,
        "server_p50_1_over_raw_batch1_latency": levels[1]["p50_ms"] / latency,
        # Against the whole-machine run alone (one caller, the runtime's own threads), for comparison.
        "server8_over_whole_best": levels[8]["req_per_s"] / best_batch(raw)["per_s"],
        "server_p50_1_over_whole_batch1_latency": levels[1]["p50_ms"] / raw["images"]["1"]["latency_ms"],
    }


def best_batch(measured: dict) -> dict:
    """The figures of one layout's fastest batch size, as bench.raw wrote them."""
    return measured["images"][str(measured["best_image_batch"])]


def best_batches(raw: dict) -> list[dict]:
    """The fastest batch's figures of each thread layout measured: the whole machine, then the server's."""
    return [best_batch(raw)] + ([best_batch(raw["server_layout"])] if raw.get("server_layout") else [])


def ceiling(raw: dict) -> tuple[float, float]:
    """(best images/s, lowest batch-1 latency in ms) of the bare model over both thread layouts."""
    latency = raw["images"]["1"]["latency_ms"]
    if raw.get("server_layout"):
        latency = min(latency, raw["server_layout"]["batch1_latency_ms"])
    return max(entry["per_s"] for entry in best_batches(raw)), latency


def cheapest_model_cpu_ms(raw: dict) -> float | None:
    """The bare model's lowest CPU time per image at either layout's best batch (None if not measured)."""
    costs = [entry["cpu_ms_per_image"] for entry in best_batches(raw) if entry.get("cpu_ms_per_image")]
    return min(costs) if costs else None


def bounds(result: dict, cpus: int) -> dict | None:
    """What the request path outside the model leaves reachable on `cpus` cores, next to what the server did.

    Each one-image request costs the model's CPU time per image (its cheapest, measured bare) plus what the
    server without the model spends on a request at c=8, so `cpus` fully busy cores answer at most
    cpus / (model + path) requests a second; at c=1 a request takes at least the bare model's batch-1 latency
    plus the model-free server's p50.
    """
    model_cpu, no_model = cheapest_model_cpu_ms(result["raw"]), result.get("no_model")
    if model_cpu is None or not no_model or no_model["levels"][8].get("server_cpu_ms_per_request") is None:
        return None
    best, latency = ceiling(result["raw"])
    path_cpu, path_p50 = no_model["levels"][8]["server_cpu_ms_per_request"], no_model["levels"][1]["p50_ms"]
    most = 1000 * cpus / (model_cpu + path_cpu)
    out = {"cpus": cpus, "model_cpu_ms_per_image": model_cpu, "path_cpu_ms_per_request": path_cpu,
           "path_p50_1_ms": path_p50, "max_server8_per_s": most, "max_server8_over_raw_best": most / best,
           "min_p50_1_over_raw_batch1_latency": (latency + path_p50) / latency}
    server8 = result["server"]["levels"][8]
    if server8.get("server_cpu_ms_per_request") is not None:
        out["server8_cpu_ms_per_request"] = server8["server_cpu_ms_per_request"]
        out["server8_cores_busy"] = server8["req_per_s"] * server8["server_cpu_ms_per_request"] / 1000 / cpus
    return out


ROUND_RATIOS = ("server8_over_raw_best", "server_p50_1_over_raw_batch1_latency", "server8_over_whole_best",
                "server_p50_1_over_whole_batch1_latency")


def ratios(result: dict) -> dict:
    """The first (full) round's ratios; with several rounds, each ratio's median and range too."""
    first = round_figures(result["raw"], result["server"]["levels"])
    out = {key: first[key] for key in ("raw_best_per_s", "raw_batch1_latency_ms", "server8_over_raw_best",
                                       "server_p50_1_over_raw_batch1_latency")}
    if "naive" in result:
        naive8 = result["naive"]["levels"][8]["req_per_s"]
        out["server8_over_naive8"] = first["server8_per_s"] / naive8 if naive8 else float("inf")
    rounds = result.get("rounds", [])
    if len(rounds) > 1:
        for key in ROUND_RATIOS:
            values = [r[key] for r in rounds]
            out[f"{key}_median"] = statistics.median(values)
            out[f"{key}_range"] = [min(values), max(values)]
    return out


def print_summary(result: dict) -> None:
    raw, r = result["raw"], result["ratios"]
    best = raw["best_image_batch"]
    print(f"\n--- {result['encoder']} on {result['runtime']} summary ---")
    layout = raw.get("server_layout")
    if layout:
        lb = layout["best_image_batch"]
        print(f"raw, server's threads ({layout['callers']} passes at once): lone batch 1 "
              f"{layout['batch1_latency_ms']:.1f} ms; best batch {lb}: "
              f"{best_batch(layout)['per_s']:.1f} images/s")
    print(f"raw, whole machine: batch 1: {raw['images']['1']['per_s']:.1f} images/s "
          f"({raw['images']['1']['latency_ms']:.1f} ms); best batch {best}: "
          f"{best_batch(raw)['per_s']:.1f} images/s; "
          f"texts: {raw['texts']['1']['per_s']:.0f}/s at 1, {raw['texts'][str(raw['best_text_batch'])]['per_s']:.0f}/s "
          f"at {raw['best_text_batch']}")
    print("          " + "  ".join(f"c={c:<2}   n/s  p50 ms" for c in CONCURRENCY))
    rows = [(name, result[name]["levels"]) for name in ("server", "naive") if name in result]
    if "text_levels" in result["server"]:
        rows.append(("texts", result["server"]["text_levels"]))
    for name, levels in rows:
        cells = (f"{levels[c]['req_per_s']:8.1f} {levels[c]['p50_ms']:7.1f}" for c in CONCURRENCY)
        print(f"{name:>8}  " + "  ".join(cells))
    print(f"ceiling: {r['raw_best_per_s']:.1f} images/s, batch-1 latency {r['raw_batch1_latency_ms']:.1f} ms")
    print(f"server(8) / raw(best)            = {r['server8_over_raw_best']:.3f}   (target >= 0.90)")
    if "server8_over_naive8" in r:
        print(f"server(8) / naive(8)             = {r['server8_over_naive8']:.2f}   (target >= 1.7)")
    print(f"server p50(1) / raw batch-1 lat. = {r['server_p50_1_over_raw_batch1_latency']:.3f}   (target <= 1.2)")
    rounds = result.get("rounds", [])
    if len(rounds) > 1:
        print(f"over {len(rounds)} rounds (each: ceiling, then server), median (min-max):")
        for key, name in (("server8_over_raw_best", "server(8) / raw(best)"),
                          ("server_p50_1_over_raw_batch1_latency", "server p50(1) / raw batch-1 lat."),
                          ("server8_over_whole_best", "server(8) / whole-machine raw"),
                          ("server_p50_1_over_whole_batch1_latency", "p50(1) / whole-machine batch-1")):
            low, high = r[f"{key}_range"]
            print(f"  {name:<32} = {r[f'{key}_median']:.3f} ({low:.3f}-{high:.3f})")
    b = result.get("bounds")
    if b:
        print(f"the server without its image model: {b['path_cpu_ms_per_request']:.2f} ms CPU a request at c=8, "
              f"p50 {b['path_p50_1_ms']:.1f} ms at c=1; the bare model: {b['model_cpu_ms_per_image']:.2f} ms CPU "
              f"an image at its cheapest")
        print(f"  so on {b['cpus']} cores at most {b['max_server8_per_s']:.1f} images/s: "
              f"server(8) / raw(best) <= {b['max_server8_over_raw_best']:.3f}, "
              f"p50(1) / raw batch-1 lat. >= {b['min_p50_1_over_raw_batch1_latency']:.3f}")
        if "server8_cores_busy" in b:
            print(f"  the server at c=8: {b['server8_cpu_ms_per_request']:.2f} ms CPU a request, "
                  f"{100 * b['server8_cores_busy']:.0f}% of the cores busy")
    s = result["server"]
    print(f"start-up to ready {s['startup_s']:.1f} s; worker RSS {s['worker_rss_mib']} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-encoder", default="efficientnet_lite0",
                        choices=("efficientnet_lite0", "resnet50", "all"))
    parser.add_argument("--runtime", default="tensorflow", choices=("tensorflow", "onnxruntime", "all"),
                        help="what runs the image encoder (raw and server); the naive baseline is always TensorFlow")
    parser.add_argument("--env", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                        help="KEY=VALUE for the server (e.g. BATCH_TIMEOUT_MS=5); repeatable")
    parser.add_argument("--seconds", type=float, default=5.0, help="target length of each load level")
    parser.add_argument("--raw-seconds", type=float, default=2.0)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--new-connections", action="store_true",
                        help="open a new connection for every request (default: each client keeps its own)")
    parser.add_argument("--sweep", action="store_true",
                        help="compare server settings: each --env NAME=K=V[,K=V] is one setting, c=1 and c=8 only")
    parser.add_argument("--raw-from", help="a results JSON whose raw figures to reuse (for settings sweeps)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the ceiling and the server at c=1 and c=8 this many times in all, "
                             "alternately, and print the ratios' median and range")
    args = parser.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    encoders = ("efficientnet_lite0", "resnet50") if args.image_encoder == "all" else (args.image_encoder,)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    runtimes = ("tensorflow", "onnxruntime") if args.runtime == "all" else (args.runtime,)
    naive: dict[str, dict] = {}
    no_model: dict[str, dict] = {}
    for encoder, runtime in itertools.product(encoders, runtimes):
        result = bench_encoder(encoder, runtime, args, naive, no_model)
        result.update(machine=machine, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
        print_summary(result)
        path = os.path.join(RESULTS, f"{encoder}-{runtime}-{time.strftime('%Y%m%d-%H%M%S')}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"written {path}")


if __name__ == "__main__":
    main()
