"""Slow references the library's fast paths are tested against, kept out of the library because
only tests use them: M-BEIR's per-query Recall@k as its reference evaluation computes it, first-hit
ranks over string ids, the whole-matrix exact top-k, and a chunked numpy exact top-k (the CPU
reference tests/test_gpu.py compares GPU search with; itself checked against the whole matrix in
tests/test_eval_metrics.py). Holds no tests itself."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from mmembed.eval.metrics import NO_HIT


def reference_recall_at_k(relevant: Collection[str], retrieved: Sequence[str], k: int) -> float:
    """M-BEIR's Recall@k for one query, as its reference evaluation computes it: 1.0 if any
    relevant candidate is among the first k retrieved, else 0.0 (0.0 with no relevant)."""
    if not relevant:
        return 0.0
    return 1.0 if set(relevant) & set(retrieved[:k]) else 0.0


def first_hit_ranks_from_ids(
    ranked: Sequence[Sequence[str]], positives: Sequence[Collection[str]]
) -> np.ndarray:
    """``first_hit_ranks`` for string ids (run files): rank of the first positive or NO_HIT."""
    out = np.empty(len(ranked), dtype=np.int64)
    for i, (row, pos) in enumerate(zip(ranked, positives, strict=True)):
        out[i] = next((r for r, d in enumerate(row) if d in pos), NO_HIT)
    return out


def streaming_topk(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    *,
    query_chunk: int = 1024,
    cand_chunk: int = 32_768,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (scores (Q, k), rows (Q, k) int64) without a Q x N matrix:
    candidates (any float dtype, a memmap is fine) are scanned in chunks and a running top-k is
    kept, so memory is O(query_chunk x cand_chunk + Q x k). Ties keep the lower row first."""
    q_all = np.ascontiguousarray(queries, dtype=np.float32)
    nq, n = q_all.shape[0], candidates.shape[0]
    k = min(k, n)
    out_s = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    for qs in range(0, nq, query_chunk):
        q = q_all[qs : qs + query_chunk]  # (b, d)
        best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
        best_i = np.empty((len(q), 0), dtype=np.int64)
        for cs in range(0, n, cand_chunk):
            c = np.asarray(candidates[cs : cs + cand_chunk], dtype=np.float32)  # (c, d)
            s = q @ c.T  # (b, c)
            idx = np.broadcast_to(np.arange(cs, cs + len(c), dtype=np.int64), s.shape)
            s = np.concatenate([best_s, s], axis=1)  # (b, k + c)
            idx = np.concatenate([best_i, idx], axis=1)
            if s.shape[1] > k:
                part = np.argpartition(-s, k - 1, axis=1)[:, :k]  # (b, k) unordered
                best_s, best_i = np.take_along_axis(s, part, 1), np.take_along_axis(idx, part, 1)
            else:
                best_s, best_i = s, idx
        # final order: score descending, then row ascending (deterministic ties)
        order = np.lexsort((best_i, -best_s), axis=1)
        out_s[qs : qs + len(q)] = np.take_along_axis(best_s, order, 1)
        out_i[qs : qs + len(q)] = np.take_along_axis(best_i, order, 1)
    return out_s, out_i


def full_matrix_topk(
    queries: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The slow reference: the whole (Q, N) score matrix, sorted (ties by row)."""
    s = np.asarray(queries, np.float32) @ np.asarray(candidates, np.float32).T  # (Q, N)
    order = np.lexsort((np.broadcast_to(np.arange(s.shape[1]), s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1), order.astype(np.int64)
