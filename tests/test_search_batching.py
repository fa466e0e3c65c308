"""Continuous batching of concurrent searches: the batched path gives what one-at-a-time gives
(within 1e-5 with a real tiny model), concurrent requests really share batches, and one bad
request fails alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmembed.search.batching import Batcher, stats
from mmembed.search.library import Library, update_library
from mmembed.search.query import Searcher
from mmembed.testing.colour_embedder import draw_corpus


def test_concurrent_submissions_share_batches() -> None:
    sizes: list[int] = []

    def slow_square(items: list[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.05)
        return [x * x for x in items]

    b = Batcher(slow_square, max_batch=8)
    barrier = threading.Barrier(16)

    def call(x: int) -> int:
        barrier.wait()
        return b(x)

    with ThreadPoolExecutor(16) as pool:
        out = list(pool.map(call, range(16)))
    assert out == [x * x for x in range(16)]
    assert sum(sizes) == 16 and len(sizes) < 16 and max(sizes) <= 8 and max(sizes) > 1
    assert stats(b)["items"] == 16
    b.close()


def test_one_bad_request_fails_alone() -> None:
    def fn(items: list[int]) -> list[int]:
        if any(x < 0 for x in items):
            raise ValueError("negative input")
        time.sleep(0.02)
        return [x + 1 for x in items]

    b = Batcher(fn)
    futures = [b.submit(x) for x in (1, 2, -3, 4)]
    assert [f.result() for i, f in enumerate(futures) if i != 2] == [2, 3, 5]
    with pytest.raises(ValueError, match="negative"):
        futures[2].result()
    b.close()


def test_batched_search_equals_one_at_a_time(tmp_path: Path) -> None:
    import torch

    from mmembed.testing.tiny_embedders import tiny_embedder

    torch.set_num_threads(1)
    photos = tmp_path / "photos"
    draw_corpus(photos, colours=("red", "green", "blue", "yellow", "white", "black"))
    emb = tiny_embedder(seed=0)
    update_library(tmp_path / "lib", [photos], emb)
    searcher = Searcher(Library.open(tmp_path / "lib"), emb)
    img = Image.open(photos / "blue.png").convert("RGB")
    queries = [("a red thing", None), (None, img), ("bluer", img), ("notes about green", None)] * 3
    alone = [searcher.search(t, i, k=5) for t, i in queries]  # one at a time

    calls: list[int] = []
    real = searcher._run_batch

    def counting(requests):
        calls.append(len(requests))
        time.sleep(0.05)  # let the other requests queue up behind this batch
        return real(requests)

    searcher._batcher.fn = counting
    with ThreadPoolExecutor(len(queries)) as pool:
        together = list(pool.map(lambda q: searcher.search(q[0], q[1], k=5), queries))
    assert max(calls) > 1 and sum(calls) == len(queries)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
        assert [h.entry.did for h in a] == [h.entry.did for h in b]
    searcher.close()
