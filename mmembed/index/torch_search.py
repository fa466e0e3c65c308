"""Exact inner-product top-k in torch on any device (a GPU without faiss-gpu, or the CPU): the pool
is scanned in chunks with a running top-k, candidates are rescored in float32 so fp16 storage does
not reorder the result, and shards searched apart merge to the same answer as one pool.
Knows nothing of ids, manifests or models: rows are integers into the pool (or shard list)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _compute_dtype(pool: torch.Tensor) -> torch.dtype:
    """Matmul dtype: the pool's own on a GPU (tensor cores), float32 on the CPU (no fast fp16)."""
    return pool.dtype if pool.device.type == "cuda" else torch.float32


def _order(scores: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by score descending, ties by row ascending (deterministic)."""
    by_row = torch.argsort(rows, dim=1, stable=True)  # (Q, k)
    scores, rows = scores.gather(1, by_row), rows.gather(1, by_row)
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)  # (Q, k)
    return scores.gather(1, by_score), rows.gather(1, by_score)


@torch.no_grad()
def exact_topk(
    queries: torch.Tensor,
    pool: torch.Tensor,
    k: int,
    *,
    pool_chunk: int = 1 << 20,
    refine: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of ``queries`` (Q, D) against ``pool`` (N, D) by inner product, on the pool's device.

    Returns (scores (Q, k) float32, rows (Q, k) int64), best first, ties by row. The scan keeps
    ``k + refine`` per query in the pool's dtype, then those are rescored in float32 and the best
    k kept, so the result equals a float32 search over the stored vectors unless fp16 rounding
    moved a true top-k row below ``k + refine`` others. Memory: O(Q x pool_chunk)."""
    n = pool.shape[0]
    k = min(int(k), n)
    keep = min(k + max(0, int(refine)), n)
    dt = _compute_dtype(pool)
    q = queries.to(pool.device, dt)  # (Q, D)
    best_s = torch.empty((q.shape[0], 0), device=pool.device, dtype=torch.float32)
    best_i = torch.empty((q.shape[0], 0), device=pool.device, dtype=torch.long)
    for start in range(0, n, pool_chunk):
        chunk = pool[start : start + pool_chunk].to(dt)  # (c, D)
        s = (q @ chunk.T).float()  # (Q, c)
        top_s, top_i = s.topk(min(keep, s.shape[1]), dim=1)  # (Q, keep)
        best_s = torch.cat([best_s, top_s], dim=1)  # (Q, <= 2 keep)
        best_i = torch.cat([best_i, top_i + start], dim=1)
        if best_s.shape[1] > keep:
            best_s, j = best_s.topk(keep, dim=1)  # (Q, keep)
            best_i = best_i.gather(1, j)
    # rescore the survivors exactly in float32: (Q, keep, D) x (Q, D) -> (Q, keep)
    exact = torch.einsum("qkd,qd->qk", pool[best_i].float(), queries.to(pool.device).float())
    s, i = _order(exact, best_i)
    return s[:, :k], i[:, :k]


@torch.no_grad()
def sharded_topk(
    queries: torch.Tensor, shards: Sequence[torch.Tensor], k: int, **kw: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over shards searched one by one (each may live on its own device) and merged on the
    first shard's device. Rows number the shards' concatenation; equals ``exact_topk`` of it."""
    if not shards:
        raise ValueError("sharded_topk needs at least one shard")
    home = shards[0].device
    parts_s, parts_i, offset = [], [], 0
    for shard in shards:
        s, i = exact_topk(queries, shard, k, **kw)  # (Q, k_s)
        parts_s.append(s.to(home))
        parts_i.append(i.to(home) + offset)
        offset += shard.shape[0]
    s, i = _order(torch.cat(parts_s, dim=1), torch.cat(parts_i, dim=1))  # (Q, sum k_s)
    k = min(int(k), offset)
    return s[:, :k], i[:, :k]
