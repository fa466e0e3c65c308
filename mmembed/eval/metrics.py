"""Retrieval metrics over ranked lists: M-BEIR's hit-rate Recall@k (vectorised), and nDCG@k,
Recall@k and MRR@k as BEIR (pytrec_eval) defines them. No benchmark or model knowledge; the slow
references these are tested against live in tests/reference_metrics.py."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np

# --------------------------------------------------------------------------- M-BEIR recall

NO_HIT = np.iinfo(np.int64).max  # first-hit rank of a query with no positive retrieved


def first_hit_ranks(labels: np.ndarray, positives: Sequence[Collection[int]]) -> np.ndarray:
    """0-based rank of the first positive in each row of ``labels`` (Q, K), or NO_HIT when none.

    Vectorised: (query, label) pairs are packed into one int64 key and matched with np.isin,
    so the cost is O(QK log) whatever the number of positives per query."""
    labels = np.asarray(labels, dtype=np.int64)
    nq = labels.shape[0]
    if len(positives) != nq:
        raise ValueError(f"{nq} ranked rows but {len(positives)} positive sets")
    if nq == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.int64(1) << np.int64(40)  # labels (hashed dids) stay far below 2**40
    counts = np.fromiter((len(p) for p in positives), dtype=np.int64, count=nq)
    pos = np.fromiter(
        (int(x) for p in positives for x in p), dtype=np.int64, count=int(counts.sum())
    )
    if len(pos) and (pos.max() >= shift or pos.min() < 0):
        raise ValueError("labels must lie in [0, 2**40) to be matched")
    pos_keys = np.repeat(np.arange(nq, dtype=np.int64), counts) * shift + pos  # (P,)
    row = np.arange(nq, dtype=np.int64)[:, None]  # (Q, 1)
    keys = np.where(labels >= 0, row * shift + labels, -1)  # (Q, K); -1 never matches
    hit = np.isin(keys, pos_keys)  # (Q, K) bool
    first = np.where(hit.any(axis=1), hit.argmax(axis=1), NO_HIT)  # (Q,)
    return first.astype(np.int64)


def hit_rate(first_ranks: np.ndarray, k: int) -> float:
    """Mean over queries of 1[first positive rank < k] (M-BEIR's Recall@k)."""
    if len(first_ranks) == 0:
        return float("nan")
    return float(np.mean(np.asarray(first_ranks) < k))


# --------------------------------------------------------------------------- BEIR metrics


def ndcg_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain (trec_eval / pytrec_eval ``ndcg_cut``): sum rel_i / log2(i + 1)."""
    dcg = sum(max(grades.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_fraction_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int = 100) -> float:
    """Fraction of the relevant documents (grade > 0) found in the top k (BEIR's Recall@k)."""
    relevant = {d for d, g in grades.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """1 / rank of the first relevant document within the top k, else 0."""
    for i, d in enumerate(ranked[:k]):
        if grades.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def trec_order(scores: Mapping[str, float]) -> list[str]:
    """Document ids ranked as trec_eval ranks a run (so pytrec_eval, BEIR's nDCG and recall,
    and mteb): score descending, ties by document id descending (string order)."""
    return [d for d, _ in sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]


def beir_scores(
    run: Mapping[str, Sequence[str] | Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    ndcg_k: int = 10,
    recall_k: int = 100,
    mrr_k: int = 10,
    ignore_identical_ids: bool = True,
    drop_no_relevant: bool = False,
) -> dict[str, float]:
    """Mean nDCG@10, Recall@100, MRR@10 over the queries of ``qrels``, as BEIR / pytrec_eval.

    - ``run[qid]``: ``{doc: score}`` (ranked by ``trec_order``: ties as pytrec_eval breaks
      them) or a list already ranked (used as given).
    - A query whose judgements are all 0 scores 0 and counts in the mean, as pytrec_eval and
      BEIR's EvaluateRetrieval do; ``drop_no_relevant=True`` leaves such queries out instead.
    - A query of ``qrels`` missing from ``run`` scores 0 (pytrec_eval would leave it out of
      the mean; BEIR's MRR counts it; ``evaluate_beir`` always retrieves for every query).
    - ``ignore_identical_ids`` drops a retrieved document whose id equals the query id (BEIR's
      default, for corpora that hold the queries; mteb sets it per task, e.g. ArguAna, Quora)."""
    totals = {f"nDCG@{ndcg_k}": 0.0, f"Recall@{recall_k}": 0.0, f"MRR@{mrr_k}": 0.0}
    n = no_relevant = 0
    for qid, grades in qrels.items():
        if not any(g > 0 for g in grades.values()):
            no_relevant += 1
            if drop_no_relevant:
                continue
        row = run.get(qid, ())
        ranked = trec_order(row) if isinstance(row, Mapping) else list(row)
        if ignore_identical_ids:
            ranked = [d for d in ranked if d != qid]
        totals[f"nDCG@{ndcg_k}"] += ndcg_at_k(ranked, grades, ndcg_k)
        totals[f"Recall@{recall_k}"] += recall_fraction_at_k(ranked, grades, recall_k)
        totals[f"MRR@{mrr_k}"] += mrr_at_k(ranked, grades, mrr_k)
        n += 1
    means = {name: (v / n if n else float("nan")) for name, v in totals.items()}
    return means | {"queries": n, "queries_without_relevant": no_relevant}
