"""Real gunicorn on a free loopback port with tiny models: a mixed flood, a killed worker, SIGTERM under load.

gunicorn is started with MODEL_REGISTRY=tests.test_server:make_server_registry (the documented test hook),
so each worker builds tiny models after the fork, exactly as it would build the real ones.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode_image, make_tiny_registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
SLOW = "__test_sleep__"  # a text that makes the test registry sleep, to hold a request in flight


def make_server_registry():
    """The tiny registry, warmed, whose text encoder sleeps 2 s on the text SLOW (test-only, never in app/)."""
    registry = make_tiny_registry()
    registry.warmup()
    encode_texts = registry.encode_texts

    def encode(texts):
        if SLOW in texts:
            time.sleep(2.0)
        return encode_texts(texts)

    registry.encode_texts = encode
    delay = float(os.environ.get("TEST_TEXT_BATCH_DELAY_S", "0"))
    if delay and registry.text_batcher is not None:
        forward = registry.text_batcher.forward  # a slower text model, so that the text queue fills up

        def slow_forward(rows):
            time.sleep(delay)
            return forward(rows)

        registry.text_batcher.forward = slow_forward
    return registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp_path, workers: int, threads: int, **extra_env: str):
        self.port = free_port()
        self.log_path = tmp_path / f"gunicorn-{self.port}.log"
        env = dict(
            os.environ,
            HOST="127.0.0.1",
            PORT=str(self.port),
            WORKERS=str(workers),
            THREADS=str(threads),
            MODEL_REGISTRY="tests.test_server:make_server_registry",
            TF_CPP_MIN_LOG_LEVEL="2",
            GRACEFUL_TIMEOUT_S="20",
            LOG_LEVEL="INFO",
            PYTHONPATH=ROOT,
            **extra_env,
        )
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30
    ) -> tuple[int, bytes]:
        status, answer, _ = self.exchange(method, path, body, headers, timeout)
        return status, answer

    def exchange(self, method, path, body=None, headers=None, timeout: float = 30) -> tuple[int, bytes, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()

    def workers(self) -> set[int]:
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return {int(pid) for pid in f.read().split()}

    def wait_ready(self, timeout: float = 120) -> None:
        """Ready when /readyz has answered 200 from every worker (the log line names the worker's pid)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log_text()[-3000:]
            try:
                self.request("GET", "/readyz", timeout=5)
            except OSError:
                pass
            workers = self.workers()
            if workers and workers <= self.ready_pids():
                return
            time.sleep(0.2)
        raise AssertionError("server not ready:\n" + self.log_text()[-3000:])

    def ready_pids(self) -> set[int]:
        pids = set()
        for match in re.finditer(r"\[(\d+)\] (\{.*\})", self.log_text()):
            line = json.loads(match.group(2))
            if line.get("route") == "/readyz" and line.get("status") == 200:
                pids.add(int(match.group(1)))
        return pids

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("gunicorn"), workers=2, threads=4)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _requests() -> list[tuple[str, str, bytes, dict, str]]:
    """(kind, path, body, headers, expected) mixes: good ones expect 200, bad ones a 4xx."""
    from tests.test_hostile import header_bomb_png  # not at import: the workers import this module too

    rng = np.random.default_rng(1)
    png = encode_image(Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)))
    jpeg = encode_image(Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)), "JPEG")
    js = {"Content-Type": "application/json"}

    def j(obj) -> bytes:
        return json.dumps(obj).encode()

    boundary = "fLoOd"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'.encode()
        + jpeg
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\na cat\r\n--{boundary}--\r\n'.encode()
    )
    mp = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    bomb = header_bomb_png(50_000)
    return [
        ("good", "/encode", j({"images": [_b64(png)], "texts": ["a cat", "a dog"]}), js, "200"),
        ("good", "/fuse", j({"images": [_b64(jpeg)], "texts": ["a cat"]}), js, "200"),
        ("good", "/caption", j({"images": [_b64(png)], "top_k": 3, "candidates": ["x", "y"]}), js, "200"),
        ("good", "/encode", multipart, mp, "200"),
        ("good", "/encode", j({"texts": ["just text"] * 8}), js, "200"),
        ("bad", "/encode", b"{oops", js, "400"),
        ("bad", "/encode", j({"images": ["!!!"]}), js, "400"),
        ("bad", "/encode", j({"images": [_b64(png[:100])]}), js, "400"),
        ("bad", "/encode", j({"images": [_b64(bomb)]}), js, "413"),
        ("bad", "/encode", j({"texts": [" "]}), js, "422"),
        ("bad", "/caption", j({"images": [_b64(png)], "top_k": 0}), js, "422"),
        ("bad", "/encode", b"texts=a", {"Content-Type": "text/plain"}, "415"),
        ("bad", "/encode", j({"texts": ["a"] * 300}), js, "422"),
        ("bad", "/encode", j({"images": [_b64(b"II*\x00" + b"\x00" * 64)]}), js, "415"),
        ("bad", "/nope", b"", {}, "404"),
    ]


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024


def test_flood_of_mixed_requests(server):
    """2,000 requests at concurrency 32, half of them bad: every answer 200/4xx/429, no 5xx, nothing dropped."""
    kinds = _requests()
    total, concurrency = 2000, 32
    plan = [kinds[i % len(kinds)] for i in range(total)]
    statuses: Counter = Counter()
    mismatches, dropped = [], []

    def one(item):
        kind, path, body, headers, expected = item
        try:
            status, answer = server.request("POST" if path != "/nope" else "GET", path, body, headers)
        except OSError as err:
            dropped.append(repr(err))
            return
        statuses[status] += 1
        if status >= 400 and json.loads(answer)["error"]["code"] == "":
            mismatches.append((path, "a JSON error", answer[:100]))
        if str(status) != expected and status != 429:
            mismatches.append((path, expected, status))

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, plan))
    elapsed = time.perf_counter() - started
    peaks = {pid: round(_peak_rss_mb(pid)) for pid in server.workers()}
    print(
        f"\nFLOOD requests={total} concurrency={concurrency} statuses={dict(sorted(statuses.items()))} "
        f"seconds={elapsed:.1f} req/s={total / elapsed:.0f} worker_peak_rss_mb={peaks} "
        f"master_peak_rss_mb={round(_peak_rss_mb(server.proc.pid))}"
    )
    assert not dropped, dropped[:5]
    assert sum(statuses.values()) == total
    assert all(s < 500 for s in statuses), statuses
    assert all(s == 200 or 400 <= s < 500 for s in statuses)
    assert not mismatches, mismatches[:10]
    assert server.request("GET", "/readyz")[0] == 200
    assert "Traceback" not in server.log_text() and "internal_error" not in server.log_text()


def test_a_killed_worker_is_replaced_and_comes_back_ready(server):
    before = server.workers()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.time() + 30
    while time.time() < deadline and (victim in server.workers() or len(server.workers()) < len(before)):
        time.sleep(0.1)
    replacement = server.workers() - before
    assert len(replacement) == 1 and victim not in server.workers()
    server.wait_ready()  # the new pid itself has answered /readyz with 200
    assert replacement <= server.ready_pids()
    for _ in range(20):
        assert (
            server.request(
                "POST", "/encode", json.dumps({"texts": ["back"]}).encode(), {"Content-Type": "application/json"}
            )[0]
            == 200
        )


def test_sigterm_lets_in_flight_requests_finish(server):
    """Runs last on this server: SIGTERM while 8 slow requests are in flight; all complete, the master exits 0."""
    results: list = []

    def slow():
        try:
            results.append(
                server.request(
                    "POST", "/encode", json.dumps({"texts": [SLOW]}).encode(), {"Content-Type": "application/json"}
                )[0]
            )
        except OSError as err:
            results.append(repr(err))

    threads = [threading.Thread(target=slow) for _ in range(8)]  # 2 workers x 4 threads
    for t in threads:
        t.start()
    time.sleep(0.8)  # every request is now inside a handler, sleeping 2 s
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(OSError):  # no longer accepting
        server.request("GET", "/healthz", timeout=2)
    for t in threads:
        t.join(30)
    assert results == [200] * 8, results
    assert server.proc.wait(30) == 0
    assert "Shutting down: Master" in server.log_text()


def test_a_full_queue_answers_429_with_retry_after(tmp_path):
    """Back-pressure meets the batcher: a small text queue and a slow text model; the overflow is a 429."""
    server = Server(tmp_path, workers=1, threads=8, MAX_TEXT_QUEUE="16", TEST_TEXT_BATCH_DELAY_S="0.05")
    try:
        server.wait_ready()
        body = json.dumps({"texts": [f"text {i}" for i in range(8)]}).encode()
        headers = {"Content-Type": "application/json"}
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: server.exchange("POST", "/encode", body, headers), range(200)))
        statuses = Counter(status for status, _, _ in answers)
        print(f"\nBACK-PRESSURE requests=200 concurrency=16 statuses={dict(sorted(statuses.items()))}")
        assert set(statuses) <= {200, 429} and statuses[200] and statuses[429], statuses
        for status, answer, response_headers in answers:
            if status == 429:
                assert json.loads(answer)["error"]["code"] == "queue_full"
                assert int(response_headers["Retry-After"]) >= 1
        assert server.request("GET", "/readyz")[0] == 200
        assert server.request("POST", "/encode", body, headers)[0] == 200
    finally:
        server.stop()
