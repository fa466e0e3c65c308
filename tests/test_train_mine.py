"""Hard-negative mining: the selection rules on hand-made ranked lists, and a real mining run
with a tiny model over a tiny M-BEIR tree (a positive is never a negative)."""

from __future__ import annotations

import json

import torch
from train_fixtures import make_tree

from mmembed.data.mbeir import read_queries
from mmembed.train.mine import MiningConfig, MiningStats, select_negatives
from mmembed.train.mine_files import mine_files

torch.set_num_threads(1)

MOD = {
    "p": "image",
    "a": "image",
    "b": "text",
    "c": "image",
    "d": "image,text",
    "e": "image",
    "f": "image",
}
RANKED = [("a", 0.99), ("p", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6), ("e", 0.5), ("f", 0.4)]


def _sel(**kw):
    base = {"rank_threshold": 3, "positive_ratio": None}
    stats = MiningStats()
    out = select_negatives(
        RANKED,
        positives={"p"},
        positive_score=0.9,
        target_modality="image",
        modality_of=MOD,
        cfg=MiningConfig(**{**base, **kw}),
        stats=stats,
    )
    return out, stats


def test_modality_aware_selection():
    out, stats = _sel()
    # wrong modality (b, d) kept at any rank; right modality only beyond rank 3; p never
    assert out == ["b", "c", "d", "e", "f"]
    assert stats.kept == {"wrong_modality": 2, "right_modality": 3}
    assert stats.dropped == {"positive": 1, "within_threshold": 1}  # a (rank 1, right modality)


def test_plain_rank_range_selection():
    out, _ = _sel(modality_aware=False)
    assert out == ["c", "d", "e", "f"]  # rank > 3 whatever the modality, p excluded


def test_positive_aware_filter_and_cap():
    out, stats = _sel(positive_ratio=0.85)  # drop anything scoring above 0.765
    assert out == ["c", "d", "e", "f"]
    assert stats.dropped["above_ratio"] == 1  # b (0.8 > 0.85 * 0.9)
    out, _ = _sel(max_negatives=2)
    assert out == ["b", "c"]


def test_a_positive_is_never_a_negative_even_when_it_ranks_anywhere():
    for thr in (0, 2, 10):
        for aware in (True, False):
            out, _ = _sel(rank_threshold=thr, modality_aware=aware)
            assert "p" not in out


def test_mine_files_with_tiny_model(tmp_path):
    from mmembed.testing.tiny_embedders import tiny_embedder

    root = make_tree(tmp_path / "m")
    # give one query a second positive that sits in the pool: it must not come back as a negative
    qf = root / "query/train/mbeir_mscoco_task0_train.jsonl"
    rows = [json.loads(x) for x in qf.read_text().splitlines()]
    rows[0]["pos_cand_list"].append("9:2")
    qf.write_text("".join(json.dumps(r) + "\n" for r in rows))
    written, stats = mine_files(
        root,
        ["query/train/*.jsonl"],
        ["cand_pool/global/mbeir_union_train_cand_pool.jsonl"],
        tmp_path / "mined",
        model=tiny_embedder(0),
        cfg=MiningConfig(top_k=32, rank_threshold=5, positive_ratio=None),
        show_progress=False,
    )
    assert [p.name for p in written] == [
        "mbeir_mscoco_task0_train.jsonl",
        "mbeir_mscoco_task3_train.jsonl",
    ]
    mined = [q for p in written for q in read_queries(p)]
    assert len(mined) == 16 and stats.queries == 16
    assert all(q.neg_dids for q in mined)
    for q in mined:
        assert not set(q.neg_dids) & set(q.pos_dids), q.qid
    assert (
        stats.dropped["positive"] == 17
    )  # top 32 = the whole pool: every positive came back and was refused
    # modality-aware: a text->image query may get caption (wrong-modality) negatives at any rank
    t0 = [q for q in mined if q.task_id == 0]
    assert any(d.startswith("9:1") and int(d.split(":")[1]) >= 100 for q in t0 for d in q.neg_dids)
    report = json.loads((tmp_path / "mined/mining.json").read_text())
    assert report["settings"]["rank_threshold"] == 5 and report["stats"]["queries"] == 16
