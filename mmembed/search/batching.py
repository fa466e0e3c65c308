"""Continuous batching of concurrent requests: callers submit items; one worker thread runs
whatever has queued up through a batch function together while the previous batch was running.
There is no waiting window, so a lone request runs at once. Knows nothing of models or HTTP."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_STOP = object()


class Batcher(Generic[T, R]):
    """``fn(items) -> results`` (same length, same order) called on batches of submitted items.

    If a batch fails, its items are retried one by one, so one bad request fails alone.
    ``on_start`` runs once in the worker thread (per-thread settings such as OpenMP threads)."""

    def __init__(self, fn: Callable[[list[T]], list[R]], *, max_batch: int = 32,
                 name: str = "mmembed-batcher", on_start: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.fn = fn
        self.max_batch = max_batch
        self.name = name
        self.on_start = on_start
        self.batches = 0  # batches run
        self.items = 0  # items run
        self.largest = 0  # largest batch seen
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, item: T) -> Future:
        fut: Future = Future()
        self._ensure_worker()
        self._queue.put((item, fut))
        return fut

    def __call__(self, item: T) -> R:
        return self.submit(item).result()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    def _ensure_worker(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()

    def _work(self) -> None:
        if self.on_start is not None:
            self.on_start()
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._run([b for b in batch if not b[1].cancelled()])
            if stop:
                return

    def _run(self, batch: list[tuple[T, Future]]) -> None:
        if not batch:
            return
        self.batches += 1
        self.items += len(batch)
        self.largest = max(self.largest, len(batch))
        try:
            results = self.fn([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch function returned {len(results)} results for {len(batch)} items"
                )
        except Exception as e:  # noqa: BLE001 - delivered to the caller(s), never lost
            if len(batch) == 1:
                batch[0][1].set_exception(e)
                return
            for item, fut in batch:  # isolate the failing request(s)
                try:
                    fut.set_result(self.fn([item])[0])
                except Exception as single:  # noqa: BLE001
                    fut.set_exception(single)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            fut.set_result(result)


def stats(batcher: Batcher) -> dict[str, Any]:
    return {"batches": batcher.batches, "items": batcher.items, "largest": batcher.largest,
            "mean": batcher.items / batcher.batches if batcher.batches else 0.0}  # fmt: skip
