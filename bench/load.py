"""A bounded HTTP load generator on loopback: N requests from C threads, latencies and errors counted."""

from __future__ import annotations

import http.client
import io
import json
import os
import threading
import time
import uuid

import numpy as np

PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png")


def photo_jpegs() -> list[bytes]:
    """scikit-image's sample photos, re-encoded as JPEG (quality 90)."""
    from PIL import Image

    from evaluation import photo_path

    out = []
    for name in PHOTOS:
        buf = io.BytesIO()
        Image.open(photo_path("skimage", name)).convert("RGB").save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def multipart_images(jpegs: list[bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body with one "image" part per JPEG, and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{i}.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode() + jpeg + b"\r\n"
        for i, jpeg in enumerate(jpegs)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def image_bodies() -> list[tuple[bytes, str]]:
    """One body per photo, one image each."""
    return [multipart_images([jpeg]) for jpeg in photo_jpegs()]


def text_bodies() -> list[tuple[bytes, str]]:
    texts = ["a cat sleeping on a sofa", "a cup of coffee on a saucer", "an astronaut in a white space suit"]
    return [(json.dumps({"texts": [t]}).encode(), "application/json") for t in texts]


def process_cpu_seconds(pids) -> float:
    """CPU time the processes `pids` have used so far (all their threads; 0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def run_load(port: int, path: str, bodies, concurrency: int, requests: int, timeout: float = 60,
             keepalive: bool = True, cpu_pids=()) -> dict:
    """POST `requests` bodies (round-robin) with `concurrency` threads.

    Each thread keeps its HTTP/1.1 connection open between requests, as a client with a connection pool
    does (reconnecting whenever the server closes it); `keepalive=False` opens one connection per request.
    With `cpu_pids` (the server's workers), the CPU time they used per answered request is counted too.
    """
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(requests))

    def post(conn: http.client.HTTPConnection, body: bytes, ctype: str) -> http.client.HTTPResponse:
        conn.request("POST", path, body, {"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        return resp

    def worker():
        conn = None
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body, ctype = bodies[i % len(bodies)]
            started = time.perf_counter()
            try:
                reused = conn is not None
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                try:
                    resp = post(conn, body, ctype)
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                    if not reused:
                        raise
                    conn.close()  # the server closed an idle kept-alive connection: one fresh try
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                    resp = post(conn, body, ctype)
                status = str(resp.status)
                if resp.will_close or not keepalive:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                if conn is not None:
                    conn.close()
                    conn = None
            elapsed = time.perf_counter() - started
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == "200":
                    latencies.append(elapsed)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started, cpu = time.perf_counter(), process_cpu_seconds(cpu_pids)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    cpu = process_cpu_seconds(cpu_pids) - cpu
    ok = statuses.get("200", 0)
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ok": ok,
        "errors": requests - ok,
        "statuses": statuses,
        "seconds": wall,
        "req_per_s": ok / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p90_ms": float(np.percentile(lat, 90)),
        "p99_ms": float(np.percentile(lat, 99)),
        "server_cpu_ms_per_request": 1000 * cpu / ok if cpu_pids and ok else None,
    }
