"""evaluate_model against recall computed by hand: a transparent encoder (one-hot candidates,
queries that rank the pool in the order tests/eval_fixtures.py writes down) on the toy M-BEIR
tree, so every number of the local and global tables, and the top-1 error kinds, follows from
those lists and nothing goes through score_task twice. Instructions are part of the input: a
query encoded without its task's instruction ranks every positive last."""

from __future__ import annotations

import pytest
from eval_fixtures import RankingEncoder, toy_tree

from mmembed.eval.mbeir_run import evaluate_model


def _table(report, system):
    return {
        (r.dataset_id, r.task_id): (r.headline, round(r.value, 4), r.errors)
        for r in report.results
        if r.system == system
    }


def _recalls(report, system):
    return {
        (r.dataset_id, r.task_id): {k: round(v, 4) for k, v in r.recall.items()}
        for r in report.results
        if r.system == system
    }


def _errors(wm=0, wd=0, other=0):
    return {"wrong_modality": wm, "wrong_domain": wd, "other": other}


def test_recall_and_errors_match_the_hand_computed_tables(tmp_path):
    root = toy_tree(tmp_path / "data")
    report = evaluate_model(root, RankingEncoder(), out_dir=tmp_path / "o", show_progress=False)
    # local: VisualNews 3 of 4 hit; FashionIQ (R@10) 2 of 3; MSCOCO's pool has 4 < 5 candidates
    assert _table(report, "local") == {
        (0, 0): ("R@5", 75.0, _errors(other=1)),  # 0:2's top-1 is 0:4
        (7, 7): ("R@10", 66.6667, _errors(other=1)),  # 7:1's top-1 is 7:2
        (9, 3): ("R@5", 100.0, _errors()),
    }
    # global: other tasks' candidates push positives out of the top k
    assert _table(report, "global") == {
        # top-1 misses: 0:0 -> 7:1 (an image of another dataset), 0:1 -> 9:100 (a text), 0:2 -> 0:4
        (0, 0): ("R@5", 50.0, _errors(wm=1, wd=1, other=1)),
        (7, 7): ("R@10", 33.3333, _errors(wd=1, other=1)),  # 7:0 -> 0:0, 7:1 -> 7:2
        (9, 3): ("R@5", 50.0, _errors(wm=1)),  # 9:0 -> 0:0, an image for an image->text task
    }
    assert report.mean("local") == pytest.approx((75 + 200 / 3 + 100) / 3)
    assert report.mean("global") == pytest.approx((50 + 100 / 3 + 50) / 3)
    # every cut-off from the first-positive ranks above; FashionIQ reports R@10/20/50
    # local ranks: VisualNews 1, 1, 6, 1; FashionIQ 1, 12, 1; MSCOCO 1, 1
    assert _recalls(report, "local") == {
        (0, 0): {"R@1": 75.0, "R@5": 75.0, "R@10": 100.0},
        (7, 7): {"R@10": 66.6667, "R@20": 100.0, "R@50": 100.0},
        (9, 3): {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0},
    }
    # global ranks: VisualNews 4, 6, 6, 1; FashionIQ 11, 12, 1; MSCOCO 6, 1
    assert _recalls(report, "global") == {
        (0, 0): {"R@1": 25.0, "R@5": 50.0, "R@10": 100.0},
        (7, 7): {"R@10": 33.3333, "R@20": 100.0, "R@50": 100.0},
        (9, 3): {"R@1": 50.0, "R@5": 50.0, "R@10": 100.0},
    }
    assert all(r.missing == 0 and r.no_positive == 0 for r in report.results)


def test_a_query_without_positives_counts_as_a_miss(tmp_path):
    root = toy_tree(tmp_path / "data")
    qrels = root / "qrels/test/mbeir_visualnews_task0_test_qrels.txt"
    lines = qrels.read_text().splitlines(keepends=True)
    qrels.write_text("".join(x for x in lines if not x.startswith("0:3 ")))  # 0:3 loses its qrel
    report = evaluate_model(
        root, RankingEncoder(), out_dir=tmp_path / "o", pools=("local",), show_progress=False
    )
    vn = next(r for r in report.results if r.task_id == 0)
    assert vn.no_positive == 1 and vn.queries == 4
    assert vn.recall == {"R@1": 50.0, "R@5": 50.0, "R@10": 75.0}  # 0:0, 0:1 hit; 0:2 at rank 6


def test_without_instructions_every_positive_ranks_last(tmp_path):
    root = toy_tree(tmp_path / "data")
    report = evaluate_model(
        root, RankingEncoder(), out_dir=tmp_path / "o", instructions=False, show_progress=False
    )
    local, glob = _table(report, "local"), _table(report, "global")
    # only MSCOCO's local pool (4 candidates, all within R@5) still finds its positives
    assert {k: v[1] for k, v in local.items()} == {(0, 0): 0.0, (7, 7): 0.0, (9, 3): 100.0}
    assert {k: v[1] for k, v in glob.items()} == {(0, 0): 0.0, (7, 7): 0.0, (9, 3): 0.0}
    assert report.mean("global") == 0.0
