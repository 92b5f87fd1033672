"""The dynamic batcher on plain NumPy functions, the registry on tiny models, and 429 back-pressure."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from models.batching import Batcher, BatcherClosedError, BatchSettings, BatchTimeoutError, QueueFullError
from tests.conftest import PeakConcurrency


def double_and_sum(rows: np.ndarray):
    if (rows < 0).any():
        raise ValueError("negative row")
    return rows * 2, rows.sum(axis=1)


class Recorder:
    """A forward pass that records its batch sizes and can be held until released."""

    def __init__(self, fn=double_and_sum):
        self.fn, self.sizes, self.seen = fn, [], []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, rows):
        self.entered.set()
        self.gate.wait(10)
        self.sizes.append(len(rows))
        self.seen.extend(np.asarray(rows).reshape(len(rows), -1)[:, 0].tolist())
        return self.fn(rows)


@pytest.fixture
def make_batcher():
    made = []

    def make(forward, **kwargs):
        kwargs.setdefault("timeout_ms", 2)
        batcher = Batcher(forward, name="test", **kwargs).start()
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close(timeout=5)


def rows(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)[:, None].repeat(3, axis=1)


def gets_its_own_rows(batcher: Batcher, start: int, n: int) -> bool:
    """Submit rows(start, n) to a double_and_sum batcher: True if exactly their outputs came back, in order."""
    x = rows(start, n)
    doubled, sums = batcher.submit(x, timeout=30)
    return np.array_equal(doubled, x * 2) and np.array_equal(sums, x.sum(axis=1))


def test_each_caller_gets_its_own_rows_in_order_from_many_threads(make_batcher):
    forward = Recorder()
    batcher = make_batcher(forward, max_batch_size=8, max_queue=10_000)
    sizes = [1, 3, 8, 9, 20, 2, 1, 5] * 6  # mixed, some bigger than a batch
    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(lambda i: gets_its_own_rows(batcher, 1000 * i, sizes[i]), range(len(sizes))))
    assert max(forward.sizes) <= 8 and sum(forward.sizes) == sum(sizes)
    assert len(forward.sizes) < len(sizes)  # requests really were batched together


def test_concurrent_passes_overlap_and_every_caller_gets_its_rows(make_batcher):
    passes = PeakConcurrency()

    def slow(rows):
        passes.hold(0.05)
        return double_and_sum(rows)

    batcher = make_batcher(slow, max_batch_size=2, concurrency=2, max_queue=1000)
    sizes = [1, 2, 3, 1, 5, 1, 2, 1] * 2
    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(lambda i: gets_its_own_rows(batcher, 100 * i, sizes[i]), range(len(sizes))))
    assert passes.peak == 2 and batcher.rows == sum(sizes)


def test_a_split_request_merges_in_order_when_its_passes_end_out_of_order(make_batcher):
    calls = []

    def first_is_slowest(rows):
        calls.append(len(rows))
        time.sleep(0.3 if len(calls) == 1 else 0.0)
        return double_and_sum(rows)

    batcher = make_batcher(first_is_slowest, max_batch_size=2, concurrency=2)
    assert gets_its_own_rows(batcher, 0, 5) and len(calls) == 3


def test_a_lone_caller_does_not_wait_for_the_batch_timeout(make_batcher):
    batcher = make_batcher(double_and_sum, max_batch_size=8, timeout_ms=500)
    for i in range(3):
        started = time.monotonic()
        batcher.submit(rows(i, 1))
        assert time.monotonic() - started < 0.25
        time.sleep(0.01)


def test_a_request_bigger_than_the_batch_is_split_and_merged(make_batcher):
    forward = Recorder()
    batcher = make_batcher(forward, max_batch_size=4)
    x = rows(0, 10)
    doubled, sums = batcher.submit(x)
    assert np.array_equal(doubled, x * 2) and forward.sizes == [4, 4, 2]


def test_lists_of_strings_batch_too(make_batcher):
    batcher = make_batcher(lambda texts: np.array([len(t) for t in texts]), max_batch_size=3)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: batcher.submit(["x" * n, "y" * (n + 1)]).tolist(), range(8)))
    assert results == [[n, n + 1] for n in range(8)]


def test_a_timed_out_caller_is_dropped_before_its_forward_pass(make_batcher):
    forward = Recorder()
    batcher = make_batcher(forward, max_batch_size=1)
    forward.gate.clear()
    first = threading.Thread(target=batcher.submit, args=(rows(1, 1),))
    first.start()
    assert forward.entered.wait(5)
    with pytest.raises(BatchTimeoutError):
        batcher.submit(rows(2, 1), timeout=0.05)
    forward.gate.set()
    first.join(5)
    assert np.array_equal(batcher.submit(rows(3, 1))[0], rows(3, 1) * 2)
    assert forward.seen == [1, 3]  # row 2 never reached the model


def test_a_full_queue_refuses_at_once_with_a_retry_hint(make_batcher):
    forward = Recorder()
    batcher = make_batcher(forward, max_batch_size=2, max_queue=4)
    forward.gate.clear()
    threads = [threading.Thread(target=batcher.submit, args=(rows(i, 2),)) for i in range(3)]
    threads[0].start()
    assert forward.entered.wait(5)  # the first 2 rows are in the model, 4 more fill the queue
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 5
    while batcher._queued_rows < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.monotonic()
    with pytest.raises(QueueFullError) as err:
        batcher.submit(rows(9, 1))
    assert time.monotonic() - started < 0.5 and err.value.retry_after >= 1
    forward.gate.set()
    for t in threads:
        t.join(5)
    assert len(batcher.submit(rows(0, 9))[0]) == 9  # bigger than the bound, but the queue is empty


@pytest.mark.parametrize("concurrency", [1, 2])
def test_close_with_requests_in_flight_does_not_deadlock(make_batcher, concurrency):
    forward = Recorder()
    batcher = make_batcher(forward, max_batch_size=1, concurrency=concurrency)
    forward.gate.clear()
    outcomes = []

    def call(i):
        try:
            batcher.submit(rows(i, 1))
            outcomes.append("ok")
        except BatcherClosedError:
            outcomes.append("closed")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while batcher._inflight_rows < concurrency and time.monotonic() < deadline:  # every pass has started
        time.sleep(0.005)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.05)
    forward.gate.set()
    closer.join(5)
    for t in threads:
        t.join(5)
    assert not closer.is_alive() and not any(t.is_alive() for t in threads)
    assert sorted(outcomes) == ["closed"] * (5 - concurrency) + ["ok"] * concurrency
    with pytest.raises(BatcherClosedError):
        batcher.submit(rows(0, 1))


def test_a_failing_forward_pass_fails_only_its_batch(make_batcher):
    forward = Recorder()
    batcher = make_batcher(forward, max_batch_size=2)
    with pytest.raises(ValueError, match="negative row"):
        batcher.submit(np.concatenate([rows(0, 3), -rows(1, 1), rows(5, 2)]))  # fails in the 2nd pass
    assert batcher._queued_rows == 0 and not batcher._queue
    assert np.array_equal(batcher.submit(rows(7, 3))[0], rows(7, 3) * 2)


# -- the registry on tiny models ------------------------------------------------------------------
def test_warm_registry_batches_and_matches_the_unbatched_models(tiny_registry):
    assert tiny_registry.image_batcher.running and tiny_registry.text_batcher.running
    rng = np.random.default_rng(0)
    size = tiny_registry.image_encoder.input_size
    pixels = [rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8) for n in (1, 3, 5, 17, 2, 1, 8, 4)]
    texts = [[f"text {i} " * (i + 1) for i in range(n)] for n in (1, 3, 5, 17, 2, 1, 8, 4)]
    with ThreadPoolExecutor(8) as pool:
        images = list(pool.map(tiny_registry.encode_images, pixels))
        embeddings = list(pool.map(tiny_registry.encode_texts, texts))
    for batch, result in zip(pixels, images, strict=True):
        features, probs = tiny_registry.image_encoder(batch)
        np.testing.assert_allclose(result.features, features, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(result.probs, probs, rtol=1e-4, atol=1e-6)
    for batch, result in zip(texts, embeddings, strict=True):
        np.testing.assert_allclose(result, tiny_registry.text_encoder.encode(batch), rtol=1e-4, atol=1e-5)


def test_no_retracing_after_warmup(tiny_registry):
    image, text = tiny_registry.image_encoder, tiny_registry.text_encoder
    assert image.buckets[-1] == tiny_registry.batching.max_batch_size
    traced = image.tracing_count(), text.tracing_count()
    assert traced[0] == len(image.buckets)  # warm-up traced one graph per bucket
    size = image.input_size
    for n in range(1, 2 * image.buckets[-1] + 2):
        image(np.zeros((n, size, size, 3), np.uint8))
    for n in (1, 3, 7, 20, 40):
        text.encode(["a sentence " * n] * n)
    assert (image.tracing_count(), text.tracing_count()) == traced


def test_close_stops_the_batchers_and_falls_back_to_direct_calls():
    from tests.conftest import make_tiny_registry

    registry = make_tiny_registry()
    registry.batching = BatchSettings(max_batch_size=4)
    registry.warmup()
    batcher = registry.image_batcher
    registry.close()
    assert not batcher.running and registry.image_batcher is None
    assert registry.encode_texts(["still works"]).shape == (1, registry.text_encoder.dim)


def test_a_full_queue_is_a_json_429_with_retry_after(client, tiny_registry, photos, monkeypatch):
    def full(items, timeout=None):
        raise QueueFullError("image", 64, 1, 64, retry_after=3)

    monkeypatch.setattr(tiny_registry.image_batcher, "submit", full)
    resp = client.post("/encode", data={"image": (io.BytesIO(photos["rocket"]), "r.jpg")})
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "3"
    assert resp.json["error"]["code"] == "queue_full"
