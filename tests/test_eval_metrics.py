"""Metrics: M-BEIR hit-rate recall (fast vectorised path vs the reference's per-query function),
BEIR nDCG@10 / Recall@100 / MRR@10 against hand computation, streaming top-k vs full matrix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from reference_metrics import (
    first_hit_ranks_from_ids,
    full_matrix_topk,
    reference_recall_at_k,
    streaming_topk,
)

from mmembed.eval.metrics import (
    beir_scores,
    first_hit_ranks,
    hit_rate,
    mrr_at_k,
    ndcg_at_k,
    recall_fraction_at_k,
)
from mmembed.index import Index


def test_reference_recall_is_a_hit_rate():
    assert reference_recall_at_k({"a", "b", "c"}, ["x", "b", "y"], 2) == 1.0  # not 1/3
    assert reference_recall_at_k({"a"}, ["x", "y", "a"], 2) == 0.0
    assert reference_recall_at_k(set(), ["x"], 5) == 0.0


def test_first_hit_ranks_matches_reference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 60, size=(200, 10))
    labels[5, 3:] = -1  # a short row
    positives = [set(rng.integers(0, 60, size=rng.integers(0, 6)).tolist()) for _ in range(200)]
    ranks = first_hit_ranks(labels, positives)
    for k in (1, 5, 10):
        ref = np.mean(
            [
                reference_recall_at_k(p, [x for x in row if x >= 0], k)
                for row, p in zip(labels.tolist(), positives, strict=True)
            ]
        )
        assert hit_rate(ranks, k) == pytest.approx(ref)
    ids = [[str(x) for x in row if x >= 0] for row in labels.tolist()]
    by_ids = first_hit_ranks_from_ids(ids, [{str(x) for x in p} for p in positives])
    assert ((by_ids < 10) == (ranks < 10)).all()
    assert (by_ids[ranks < 10] == ranks[ranks < 10]).all()


def test_streaming_topk_equals_full_matrix(tmp_path):
    rng = np.random.default_rng(1)
    q = rng.standard_normal((37, 16)).astype(np.float32)
    c = rng.standard_normal((1001, 16)).astype(np.float32)
    ref_s, ref_i = full_matrix_topk(q, c, 12)
    s, i = streaming_topk(q, c, 12, query_chunk=8, cand_chunk=100)
    assert (i == ref_i).all() and np.allclose(s, ref_s, atol=1e-5)
    np.save(tmp_path / "c.npy", c.astype(np.float16))  # fp16 memmap, the encode output format
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    s16, i16 = streaming_topk(q, mm, 5, cand_chunk=64)
    ref16 = full_matrix_topk(q, c.astype(np.float16).astype(np.float32), 5)
    assert (i16 == ref16[1]).all()


def test_chunked_pipeline_agrees_with_full_matrix_reference():
    """FAISS top-k in query chunks + vectorised hits == dense matrix + the reference function."""
    rng = np.random.default_rng(2)
    c = rng.standard_normal((800, 24)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = c[rng.integers(0, 800, 150)] + 0.8 * rng.standard_normal((150, 24)).astype(np.float32)
    dids = [f"4:{n}" for n in range(800)]
    positives = [
        set(rng.choice(800, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(150)
    ]
    index = Index.build(c, dids)
    _, labels = index.search_labels(q, 10, batch_size=16)
    pos_labels = [set(index.labels_of([dids[j] for j in p]).tolist()) for p in positives]
    ranks = first_hit_ranks(labels, pos_labels)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dense = qn @ c.T  # (Q, N): what the streaming path must never hold
    for k in (1, 5, 10):
        ref = np.mean(
            [
                reference_recall_at_k(
                    {dids[j] for j in p}, [dids[j] for j in np.argsort(-row)[:k]], k
                )
                for row, p in zip(dense, positives, strict=True)
            ]
        )
        assert hit_rate(ranks, k) == pytest.approx(ref)


def test_beir_metrics_by_hand():
    ranked = ["a", "b", "c", "d"]
    grades = {"b": 2, "d": 1, "e": 1}
    # DCG@10: b at rank 2 (gain 2), d at rank 4 (gain 1); ideal order 2, 1, 1
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, grades, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranked, grades, 10) == pytest.approx(0.540585, abs=1e-6)
    assert ndcg_at_k(ranked, grades, 2) == pytest.approx(
        (2 / math.log2(3)) / (2 + 1 / math.log2(3))
    )
    assert mrr_at_k(ranked, grades, 10) == 0.5
    assert mrr_at_k(ranked, grades, 1) == 0.0
    assert recall_fraction_at_k(ranked, grades, 100) == pytest.approx(2 / 3)
    assert recall_fraction_at_k(ranked, grades, 3) == pytest.approx(1 / 3)
    run = {"q1": ranked, "q2": ["q2", "z", "y"], "q3": []}
    qrels = {"q1": grades, "q2": {"y": 1}, "q3": {"x": 1}, "q4": {"x": 0}}
    scores = beir_scores(run, qrels)
    # q2: the identical id is dropped, y moves to rank 2; q3 retrieves nothing; q4 has no
    # relevant document: it scores 0 and counts in the mean, as pytrec_eval and BEIR count it
    q2_ndcg = (1 / math.log2(3)) / 1.0
    assert scores["queries"] == 4 and scores["queries_without_relevant"] == 1
    assert scores["nDCG@10"] == pytest.approx((dcg / idcg + q2_ndcg + 0 + 0) / 4)
    assert scores["MRR@10"] == pytest.approx((0.5 + 0.5 + 0 + 0) / 4)
    assert scores["Recall@100"] == pytest.approx((2 / 3 + 1 + 0 + 0) / 4)
    kept = beir_scores(run, qrels, ignore_identical_ids=False)
    assert kept["MRR@10"] == pytest.approx((0.5 + 1 / 3) / 4)
    dropped = beir_scores(run, qrels, drop_no_relevant=True)  # the option: leave q4 out
    assert dropped["queries"] == 3
    assert dropped["MRR@10"] == pytest.approx((0.5 + 0.5 + 0) / 3)


def test_ties_ranked_as_pytrec_eval_ranks_them():
    """trec_eval orders a run by score descending, then document id descending."""
    from mmembed.eval.metrics import trec_order

    assert trec_order({"a": 0.5, "c": 0.5, "b": 0.5, "z": 0.1, "y": 0.9}) == [
        "y",
        "c",
        "b",
        "a",
        "z",
    ]
    qrels = {"q": {"b": 1}}
    # all tied: b ranks 2nd behind c (by hand: MRR 1/2, nDCG 1/log2(3))
    s = beir_scores({"q": {"a": 0.5, "b": 0.5, "c": 0.5}}, qrels)
    assert s["MRR@10"] == pytest.approx(0.5)
    assert s["nDCG@10"] == pytest.approx(1 / math.log2(3))
    # a ranked list is taken as given
    assert beir_scores({"q": ["b", "a", "c"]}, qrels)["MRR@10"] == 1.0


GOLDEN = Path(__file__).parent / "fixtures" / "beir_scoring" / "golden.json"


@pytest.mark.parametrize("ignore", [True, False])
def test_beir_scores_match_pytrec_eval_and_beir(ignore):
    """Golden from pytrec_eval and BEIR's EvaluateRetrieval (tests/fixtures/beir_scoring):
    graded judgements, queries whose judgements are all 0, an empty result list, tied scores
    and corpora holding the query's own id."""
    g = json.loads(GOLDEN.read_text())
    qrels, run = g["qrels"], g["run"]
    ref = g["pytrec_eval"]["ignore_identical_ids" if ignore else "keep_identical_ids"]
    assert set(ref) == set(qrels)  # every query evaluated, the all-zero ones included
    for q in qrels:  # per query: nDCG@10, Recall@100, reciprocal rank (runs hold <= 10 docs)
        one = beir_scores({q: run[q]}, {q: qrels[q]}, ignore_identical_ids=ignore)
        assert one["nDCG@10"] == pytest.approx(ref[q]["ndcg_cut_10"], abs=1e-12), q
        assert one["Recall@100"] == pytest.approx(ref[q]["recall_100"], abs=1e-12), q
        assert one["MRR@10"] == pytest.approx(ref[q]["recip_rank"], abs=1e-12), q
    s = beir_scores(run, qrels, ignore_identical_ids=ignore)
    all_zero = [q for q, gr in qrels.items() if not any(v > 0 for v in gr.values())]
    assert s["queries"] == len(qrels) and s["queries_without_relevant"] == len(all_zero) == 5
    for ours, theirs in (("nDCG@10", "ndcg_cut_10"), ("Recall@100", "recall_100")):
        assert s[ours] == pytest.approx(np.mean([ref[q][theirs] for q in ref]), abs=1e-12)
    if ignore:  # BEIR's own means (rounded to 5 decimals by BEIR)
        assert s["nDCG@10"] == pytest.approx(g["beir"]["NDCG@10"], abs=5e-6)
        assert s["Recall@100"] == pytest.approx(g["beir"]["Recall@100"], abs=5e-6)
