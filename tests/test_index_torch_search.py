"""Exact top-k in torch (mmembed.index.torch_search) against the full-matrix reference: chunked
scan, fp16 storage rescored in fp32, shards merged, k larger than the pool, ties by row."""

from __future__ import annotations

import numpy as np
import torch
from reference_metrics import full_matrix_topk

from mmembed.index.torch_search import exact_topk, sharded_topk


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_chunked_scan_equals_full_matrix() -> None:
    pool, q = _unit(5_000, 32, 0), _unit(40, 32, 1)
    ref_s, ref_i = full_matrix_topk(q, pool, 12)
    s, i = exact_topk(torch.from_numpy(q), torch.from_numpy(pool), 12, pool_chunk=333)
    assert torch.equal(i, torch.from_numpy(ref_i))
    np.testing.assert_allclose(s.numpy(), ref_s, atol=1e-6)
    assert s.dtype == torch.float32 and i.dtype == torch.int64


def test_fp16_pool_is_rescored_in_fp32() -> None:
    pool16 = _unit(4_000, 64, 2).astype(np.float16)
    q = _unit(30, 64, 3)
    ref_s, ref_i = full_matrix_topk(q, pool16.astype(np.float32), 10)
    s, i = exact_topk(torch.from_numpy(q), torch.from_numpy(pool16), 10, pool_chunk=1_000)
    assert torch.equal(i, torch.from_numpy(ref_i))
    np.testing.assert_allclose(s.numpy(), ref_s, atol=1e-6)  # fp32 scores, not fp16-rounded


def test_shards_merge_to_one_pool_and_small_pools() -> None:
    pool, q = _unit(3_000, 16, 4), _unit(20, 16, 5)
    whole = torch.from_numpy(pool)
    one_s, one_i = exact_topk(torch.from_numpy(q), whole, 7)
    two_s, two_i = sharded_topk(torch.from_numpy(q), [whole[:1_234], whole[1_234:]], 7)
    assert torch.equal(two_i, one_i) and torch.allclose(two_s, one_s)
    s, i = exact_topk(torch.from_numpy(q), whole[:5], 50)  # k beyond the pool: all 5, ordered
    assert i.shape == (20, 5) and sorted(i[0].tolist()) == [0, 1, 2, 3, 4]
    assert (s[:, :-1] >= s[:, 1:]).all()


def test_ties_are_broken_by_row() -> None:
    pool = torch.zeros(10, 4)
    pool[[2, 5, 7], 0] = 1.0  # three rows tie for the top
    s, i = exact_topk(torch.tensor([[1.0, 0, 0, 0]]), pool, 3, pool_chunk=4)
    assert i.tolist() == [[2, 5, 7]] and s.tolist() == [[1.0, 1.0, 1.0]]
