"""Hard-negative mining (docs/training.md): retrieve the top K for each training query from the training
pool with a given model, then keep modality-aware negatives (candidates of the wrong modality for
the task at any rank; right-modality candidates only beyond a rank threshold), never a positive,
and drop any scoring above a fraction of the positive's score. Writes M-BEIR query files with
``neg_cand_list``. The selection is one plain function; knows nothing about training."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmembed.data.records import TASKS, Candidate, Query

log = logging.getLogger(__name__)


@dataclass
class MiningConfig:
    top_k: int = 50
    rank_threshold: int = 45  # right-modality candidates are kept only at 1-based rank > this
    positive_ratio: float | None = 0.95  # drop negatives scoring above ratio x the positive's score
    max_negatives: int | None = None  # keep at most this many per query (best-ranked first)
    modality_aware: bool = (
        True  # False: plain rank-range mining (every modality beyond the threshold)
    )


@dataclass
class MiningStats:
    queries: int = 0
    kept: Counter = field(default_factory=Counter)  # wrong_modality / right_modality
    dropped: Counter = field(
        default_factory=Counter
    )  # positive / within_threshold / above_ratio / over_max

    def as_dict(self) -> dict[str, Any]:
        return {"queries": self.queries, "kept": dict(self.kept), "dropped": dict(self.dropped)}


def select_negatives(
    retrieved: Sequence[tuple[str, float]],
    *,
    positives: set[str],
    positive_score: float | None,
    target_modality: str,
    modality_of: dict[str, str],
    cfg: MiningConfig,
    stats: MiningStats | None = None,
) -> list[str]:
    """Negatives from one query's ranked list ``[(did, score), ...]`` (best first).

    A positive is never returned. With ``modality_aware``, a candidate whose modality differs from
    ``target_modality`` (the task's candidate modality) is a negative at any rank; one of the right
    modality only beyond ``rank_threshold``. ``positive_ratio`` drops negatives with
    ``score > ratio * positive_score`` (likely unlabelled positives)."""
    stats = stats or MiningStats()
    out: list[str] = []
    for rank, (did, score) in enumerate(retrieved, 1):
        if did in positives:
            stats.dropped["positive"] += 1
            continue
        wrong = cfg.modality_aware and modality_of.get(did) != target_modality
        if not wrong and rank <= cfg.rank_threshold:
            stats.dropped["within_threshold"] += 1
            continue
        if (
            cfg.positive_ratio is not None
            and positive_score is not None
            and score > cfg.positive_ratio * positive_score
        ):
            stats.dropped["above_ratio"] += 1
            continue
        if cfg.max_negatives is not None and len(out) >= cfg.max_negatives:
            stats.dropped["over_max"] += 1
            continue
        stats.kept["wrong_modality" if wrong else "right_modality"] += 1
        out.append(did)
    return out


def mine_hard_negatives(
    model: Any,
    queries: Sequence[Query],
    pool: Sequence[Candidate],
    *,
    cfg: MiningConfig | None = None,
    image_root: str | Path | None = None,
    instructions: Sequence[str | None] | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
    index_factory: str = "Flat",
) -> tuple[list[Query], MiningStats]:
    """Queries with ``neg_dids`` replaced by mined negatives, and counts of what was kept/dropped."""
    from mmembed.index import Index

    cfg = cfg or MiningConfig()
    if not pool:
        raise ValueError("the candidate pool is empty: nothing to mine from")
    dids = [c.did for c in pool]
    pos_of = {d: i for i, d in enumerate(dids)}
    cand = model.encode_candidates(
        list(pool), image_root=image_root, batch_size=batch_size, show_progress=show_progress
    )  # (N, D)
    index = Index.build(cand, dids, factory=index_factory, fingerprint=model.fingerprint)
    qemb = model.encode_queries(
        list(queries),
        instructions=instructions,
        image_root=image_root,
        batch_size=batch_size,
        show_progress=show_progress,
    )  # (Q, D)
    scores, ids = index.search(qemb, min(cfg.top_k, len(pool)), fingerprint=model.fingerprint)
    modality_of = {c.did: c.modality.value for c in pool}
    stats = MiningStats()
    out = []
    for qi, q in enumerate(queries):
        positives = set(q.pos_dids)
        rows = [pos_of[d] for d in q.pos_dids if d in pos_of]
        pos_score = float(np.min(cand[rows] @ qemb[qi])) if rows else None  # (P,) -> min
        ranked = [(d, float(s)) for d, s in zip(ids[qi], scores[qi], strict=True) if np.isfinite(s)]
        negs = select_negatives(
            ranked,
            positives=positives,
            positive_score=pos_score,
            target_modality=TASKS[q.task_id][1],
            modality_of=modality_of,
            cfg=cfg,
            stats=stats,
        )
        stats.queries += 1
        out.append(replace(q, neg_dids=negs))
    log.info("mined %d queries: %s", stats.queries, stats.as_dict())
    return out, stats
