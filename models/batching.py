"""Dynamic batching across requests: one loop thread per model forms the batches of many callers.

Request threads `submit()` their rows (a uint8 array, a list of strings); the loop forms a batch of at
most `max_batch_size` rows, runs one forward pass and hands each caller its own rows back, in order. Before
a pass it waits, at most `timeout_ms`, until as many rows are queued as were recently outstanding at once
(the callers of the last batch are on their way back), so batches fill under load and a lone caller never
waits. With `concurrency` > 1, that many passes run at once (each on its own thread; the rows outstanding are
shared between them), so one batch is computed while the next one's callers are still being parsed and
decoded. A request larger than the batch is cut across several passes and merged again. The queue is bounded
in rows: past it `submit` raises `QueueFullError` at once, and rows whose caller has given up are dropped
before they cost a pass.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSettings:
    """How a worker batches; the defaults are the measured ones documented in config.py."""

    max_batch_size: int = 8
    timeout_ms: float = 20.0
    max_queue: int = 64
    max_text_queue: int = 1024
    request_timeout_s: float = 30.0
    concurrency: int = 1

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BatchSettings:
        return cls(
            max_batch_size=config["MAX_BATCH_SIZE"],
            timeout_ms=config["BATCH_TIMEOUT_MS"],
            max_queue=config["MAX_QUEUE"],
            max_text_queue=config["MAX_TEXT_QUEUE"],
            request_timeout_s=config["REQUEST_TIMEOUT_S"],
            concurrency=config.get("BATCH_CONCURRENCY", 1),
        )


class BatcherError(Exception):
    """Base of the errors a caller of `Batcher.submit` can get that are not the model's own."""


class QueueFullError(BatcherError):
    """The queue holds `max_queue` rows already: the caller should come back after `retry_after` s."""

    def __init__(self, name: str, queued: int, requested: int, max_queue: int, retry_after: int):
        super().__init__(
            f"The {name} queue is full ({queued} queued + {requested} requested > {max_queue}); "
            f"retry in {retry_after} s."
        )
        self.retry_after = retry_after


class BatchTimeoutError(BatcherError):
    """The caller's deadline passed before its rows were computed; they were dropped from the queue."""


class BatcherClosedError(BatcherError):
    """The batcher was closed (worker shutting down) before the rows were computed."""


class _Request:
    """One caller's rows, the parts computed so far, and the event it waits on."""

    __slots__ = ("items", "size", "taken", "computed", "parts", "done", "error", "deadline", "cancelled")

    def __init__(self, items, deadline: float):
        self.items = items
        self.size = len(items)
        self.taken = 0  # rows handed to a batch so far
        self.computed = 0  # rows whose outputs are in `parts`
        self.parts: dict[int, tuple[np.ndarray, ...]] = {}  # first row -> outputs (passes may end out of order)
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.deadline = deadline
        self.cancelled = False

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


def _concat(parts: list):
    if isinstance(parts[0], np.ndarray):
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    return [item for part in parts for item in part]


class Batcher:
    """Runs `forward(rows) -> array or tuple of arrays` (leading axis = rows) over batches of callers."""

    def __init__(
        self,
        forward: Callable[[Any], np.ndarray | tuple[np.ndarray, ...]],
        *,
        name: str = "model",
        max_batch_size: int = 8,
        timeout_ms: float = 20.0,
        max_queue: int = 64,
        concurrency: int = 1,
    ):
        if max_batch_size < 1 or max_queue < 1 or timeout_ms < 0 or concurrency < 1:
            raise ValueError(
                f"need max_batch_size >= 1, max_queue >= 1, timeout_ms >= 0, concurrency >= 1; "
                f"got {max_batch_size}, {max_queue}, {timeout_ms}, {concurrency}"
            )
        self.forward = forward
        self.name = name
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_ms / 1000
        self.max_queue = max_queue
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)  # passes that may run at once
        self._passes: concurrent.futures.ThreadPoolExecutor | None = None
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._seconds_per_row = 0.05  # running estimate, for Retry-After
        # How many rows are usually outstanding (queued or in the model) at once: the concurrency the
        # loop waits for, instead of always waiting `timeout_s` (which would tax a lone caller).
        self._inflight_rows = 0
        self._peak = [0, 0]  # the peak of this window and of the previous one
        self._window_started = 0.0
        self._window = 0.1  # seconds: a few forward passes, so the estimate follows the load quickly
        self.batches = 0  # forward passes run, for tests and logs
        self.rows = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Batcher:
        with self._cond:
            if self._thread is None:
                self._closed = False
                if self.concurrency > 1:
                    self._passes = concurrent.futures.ThreadPoolExecutor(self.concurrency, f"batcher-{self.name}")
                self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.name}", daemon=True)
                self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closed

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new rows, fail the queued ones, let the batch in flight finish, join the loop."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
            self._cond.notify_all()
        for request in pending:
            request.fail(BatcherClosedError(f"the {self.name} batcher is shutting down"))
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._passes is not None:
            self._passes.shutdown(wait=True)  # the passes in flight finish and answer their callers
            self._passes = None
        self._thread = None

    # -- callers --------------------------------------------------------------------------------
    def submit(self, items: Sequence | np.ndarray, timeout: float | None = None):
        """Block until `items` have gone through the model; returns what `forward` returns, for them only."""
        if len(items) == 0:
            raise ValueError("submit() needs at least one row")
        deadline = time.monotonic() + (timeout if timeout is not None else math.inf)
        request = _Request(items, deadline)
        with self._cond:
            if self._closed or self._thread is None:
                raise BatcherClosedError(f"the {self.name} batcher is not running")
            # An empty queue takes any request, so a request bigger than the bound is slow, never refused.
            if self._queued_rows and self._queued_rows + request.size > self.max_queue:
                retry = max(1, math.ceil(self._queued_rows * self._seconds_per_row))
                raise QueueFullError(self.name, self._queued_rows, request.size, self.max_queue, retry)
            self._queue.append(request)
            self._queued_rows += request.size
            self._note_outstanding()
            self._cond.notify_all()
        if not request.done.wait(None if timeout is None else max(0.0, deadline - time.monotonic())):
            with self._cond:
                request.cancelled = True  # the loop drops what is still queued of it
            if not request.done.is_set():
                raise BatchTimeoutError(f"{self.name}: no result within {timeout:.1f} s; the rows were dropped")
        if request.error is not None:
            raise request.error
        parts = [request.parts[start] for start in sorted(request.parts)]
        if len(parts) == 1:
            return parts[0] if len(parts[0]) > 1 else parts[0][0]
        merged = tuple(np.concatenate(column) for column in zip(*parts, strict=True))
        return merged if len(merged) > 1 else merged[0]

    # -- the loop -------------------------------------------------------------------------------
    def _drop_dead(self, now: float) -> None:
        """Forget requests whose caller gave up or whose deadline passed (called with the lock held)."""
        for request in [r for r in self._queue if r.cancelled or r.deadline <= now]:
            self._queue.remove(request)
            self._queued_rows -= request.size - request.taken
            request.fail(BatchTimeoutError(f"{self.name}: the request timed out while queued; dropped"))

    def _take(self) -> list[tuple[_Request, int, int]] | None:
        """Wait for rows and cut the next batch: [(request, start, stop)], or None once closed."""
        with self._cond:
            while True:
                self._drop_dead(time.monotonic())
                if self._closed:
                    return None
                if self._queue:
                    break
                self._cond.wait()
            # Wait (at most `timeout_s`) for this pass's share of the rows recently outstanding at once:
            # callers of the last batches are on their way back. A lone caller therefore never waits.
            self._note_outstanding()
            target = min(self.max_batch_size, -(-max(self._peak) // self.concurrency))
            until = time.monotonic() + self.timeout_s
            while self._queued_rows < target and not self._closed:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._drop_dead(time.monotonic())
            if self._closed:
                return None
            batch, room = [], self.max_batch_size
            while self._queue and room:
                request = self._queue[0]
                n = min(room, request.size - request.taken)
                batch.append((request, request.taken, request.taken + n))
                request.taken += n
                room -= n
                self._queued_rows -= n
                if request.taken == request.size:
                    self._queue.popleft()
            self._inflight_rows += self.max_batch_size - room
            return batch

    def _note_outstanding(self) -> None:
        """Track the peak of queued + computing rows over recent windows (called with the lock held)."""
        now = time.monotonic()
        if now - self._window_started > self._window:
            self._peak = [0, self._peak[0]]
            self._window_started = now
        self._peak[0] = max(self._peak[0], self._queued_rows + self._inflight_rows)

    def _loop(self) -> None:
        while True:
            # With concurrency > 1, a batch is cut only when a pass can start at once: rows keep
            # gathering in the queue meanwhile.
            while not self._slots.acquire(timeout=0.1):
                if self._closed:
                    return
            batch = self._take()
            if not batch:
                self._slots.release()
                if batch is None:
                    return
                continue
            if self._passes is None:
                self._run(batch)
            else:
                self._passes.submit(self._run, batch)

    def _run(self, batch: list[tuple[_Request, int, int]]) -> None:
        """One forward pass over `batch`, its rows handed back to their callers; frees its slot."""
        try:
            rows = _concat([request.items[start:stop] for request, start, stop in batch])
            started = time.perf_counter()
            try:
                outputs = self.forward(rows)
            except Exception as exc:  # noqa: BLE001 - goes to this batch's callers; the loop keeps serving
                log.warning("%s batch of %d rows failed: %s", self.name, len(rows), exc)
                with self._cond:
                    self._inflight_rows -= len(rows)
                self._fail_batch(batch, exc)
                return
            elapsed = time.perf_counter() - started
            with self._cond:
                self._inflight_rows -= len(rows)
                self._window = max(0.1, 3 * elapsed)
                self._seconds_per_row = 0.8 * self._seconds_per_row + 0.2 * elapsed / len(rows) / self.concurrency
                self.batches += 1
                self.rows += len(rows)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            offset = 0
            for request, start, stop in batch:
                n = stop - start
                part = tuple(out[offset : offset + n] for out in outputs)
                offset += n
                with self._cond:
                    request.parts[start] = part
                    request.computed += n
                    finished = request.computed == request.size
                if finished and request.error is None:
                    request.done.set()
        finally:
            self._slots.release()

    def _fail_batch(self, batch: list[tuple[_Request, int, int]], error: Exception) -> None:
        with self._cond:
            for request, _start, stop in batch:
                if stop < request.size and request in self._queue:  # the rest of it is still queued
                    self._queue.remove(request)
                    self._queued_rows -= request.size - request.taken
                request.fail(error)
