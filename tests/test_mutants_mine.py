"""mine_hard_negatives end to end with a transparent model (one-hot candidates, hand-weighted
queries), so the mined lists can be written down by hand: the target modality is the task's
candidate side, and the positive-aware filter uses the weakest positive."""

from __future__ import annotations

import numpy as np

from mmembed.data.records import Candidate, Modality, Query
from mmembed.train.mine import MiningConfig, mine_hard_negatives

# pool: did -> modality; a candidate's embedding is the one-hot of its position here
POOL = {
    "9:1": Modality.IMAGE,
    "9:2": Modality.TEXT,
    "9:3": Modality.IMAGE,
    "9:4": Modality.IMAGE,
    "9:5": Modality.TEXT,
    "9:6": Modality.IMAGE,
}
DIDS = list(POOL)


class Transparent:
    """Candidates are one-hot; a query is the unit vector of its given did -> weight map."""

    fingerprint = "transparent-test-model"
    dim = len(DIDS)

    def __init__(self, weights: dict[str, dict[str, float]]) -> None:
        self.weights = weights

    def encode_candidates(self, cands, **kw) -> np.ndarray:
        return np.eye(self.dim, dtype=np.float32)[[DIDS.index(c.did) for c in cands]]  # (N, D)

    def encode_queries(self, queries, **kw) -> np.ndarray:
        out = np.zeros((len(queries), self.dim), dtype=np.float32)  # (Q, D)
        for i, q in enumerate(queries):
            for did, w in self.weights[q.qid].items():
                out[i, DIDS.index(did)] = w
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _pool() -> list[Candidate]:
    return [
        Candidate(
            d, "t" if m is Modality.TEXT else None, "i.png" if m is Modality.IMAGE else None, m
        )
        for d, m in POOL.items()
    ]


def test_target_modality_is_the_tasks_candidate_side():
    # a text -> image query (task 0): ranks 9:1 img, 9:2 txt, 9:3 img (positive), 9:4 img, 9:5 txt
    q = Query("9:100", "a cat", None, Modality.TEXT, 0, ["9:3"])
    model = Transparent({"9:100": {"9:1": 0.9, "9:2": 0.8, "9:3": 0.7, "9:4": 0.6, "9:5": 0.5}})
    cfg = MiningConfig(top_k=5, rank_threshold=2, positive_ratio=None)
    mined, stats = mine_hard_negatives(model, [q], _pool(), cfg=cfg, show_progress=False)
    # images are the right modality: 9:1 (rank 1) is too close to be a safe negative, 9:4
    # (rank 4) is beyond the threshold; texts are the wrong modality and kept at any rank
    assert mined[0].neg_dids == ["9:2", "9:4", "9:5"]
    assert stats.kept == {"wrong_modality": 2, "right_modality": 1}
    assert stats.dropped == {"positive": 1, "within_threshold": 1}
    # the mirrored task (image -> text, task 3) with the same ranking: texts are now the target
    q3 = Query("9:100", None, "q.png", Modality.IMAGE, 3, ["9:3"])
    mined, _ = mine_hard_negatives(model, [q3], _pool(), cfg=cfg, show_progress=False)
    assert mined[0].neg_dids == ["9:1", "9:4", "9:5"]


def test_positive_ratio_uses_the_weakest_positive():
    # two positives scoring 0.9 and 0.5 (times a common norm); negatives at 0.7, 0.4 and 0.2
    q = Query("9:100", "a cat", None, Modality.TEXT, 0, ["9:1", "9:3"])
    w = {"9:1": 0.9, "9:2": 0.7, "9:3": 0.5, "9:5": 0.4, "9:6": 0.2}
    model = Transparent({"9:100": w})
    cfg = MiningConfig(top_k=6, rank_threshold=0, positive_ratio=0.9)
    mined, stats = mine_hard_negatives(model, [q], _pool(), cfg=cfg, show_progress=False)
    # limit 0.9 * 0.5 = 0.45 (in units of the query norm): 9:2 (0.7) is dropped as a likely
    # unlabelled positive, 9:5 (0.4) and 9:6 (0.2) stay; so does 9:4 (score 0, not retrieved
    # above anything), the last of the top 6
    assert mined[0].neg_dids == ["9:5", "9:6", "9:4"]
    assert stats.dropped["above_ratio"] == 1 and stats.dropped["positive"] == 2


def test_defaults_follow_the_recipe_and_the_cap_is_counted():
    from mmembed.train.mine import MiningStats, select_negatives

    cfg = MiningConfig()  # DESIGN §4: top 50, right modality only beyond rank ~45, 95 % filter
    assert (cfg.top_k, cfg.rank_threshold, cfg.positive_ratio) == (50, 45, 0.95)
    assert cfg.modality_aware and cfg.max_negatives is None
    ranked = [(f"9:{i}", 1.0 - i / 10) for i in range(1, 6)]
    stats = MiningStats()
    out = select_negatives(
        ranked,
        positives=set(),
        positive_score=None,
        target_modality="image",
        modality_of={d: "text" for d, _ in ranked},  # all wrong modality: kept at any rank
        cfg=MiningConfig(max_negatives=2),
        stats=stats,
    )
    assert out == ["9:1", "9:2"]
    assert stats.kept == {"wrong_modality": 2} and stats.dropped == {"over_max": 3}
