"""Run files and result tables read back exactly: a TREC run round-trips (rank order, not file
order), and the TSV and the top-1 error table of a hand-computed evaluation hold the numbers
derived in tests/test_eval_recall.py."""

from __future__ import annotations

import pytest
from eval_fixtures import RankingEncoder, toy_tree

from mmembed.data.runfile import read_run, write_run
from mmembed.eval.mbeir_run import evaluate_model
from mmembed.eval.tables import error_table, tsv


def test_run_round_trip_keeps_rank_order(tmp_path):
    run = {"q1": [("d3", 0.9), ("d1", 0.5), ("d2", 0.5)], "q2": [("d9", -0.25)]}
    write_run(tmp_path / "r.trec", run)
    assert read_run(tmp_path / "r.trec") == run
    # lines out of order in the file: the rank column decides
    (tmp_path / "s.trec").write_text("a 0 x 2 0.5 t\na 0 y 1 0.7 t\nb 0 z 1 0.1 t\n")
    assert read_run(tmp_path / "s.trec") == {"a": [("y", 0.7), ("x", 0.5)], "b": [("z", 0.1)]}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tables")
    return evaluate_model(
        toy_tree(tmp / "data"), RankingEncoder(), out_dir=tmp / "o", show_progress=False
    )


def test_tsv_rows(report):
    lines = tsv(report).splitlines()
    assert lines[0] == "task_id\ttask\tdataset\tdataset_id\tsplit\tsystem\tmetric\tvalue"
    vn = "0\t0: text → image\tVisualNews\t0\ttest"
    assert f"{vn}\tglobal\tR@5\t50.0000" in lines
    assert f"{vn}\tlocal\tR@5\t75.0000" in lines
    assert f"{vn}\tglobal\ttop1_wrong_modality\t1" in lines
    assert f"{vn}\tlocal\tqueries\t4" in lines
    assert lines[-2:] == [
        f"\tmean\t\t\ttest\tlocal\theadline_mean\t{(75 + 200 / 3 + 100) / 3:.4f}",
        f"\tmean\t\t\ttest\tglobal\theadline_mean\t{(50 + 100 / 3 + 50) / 3:.4f}",
    ]


def test_error_table_rows(report):
    rows = [r for r in error_table(report).splitlines()[2:]]
    # % of queries: global VisualNews misses 0:0 (wrong domain), 0:1 (wrong modality), 0:2
    assert "| global | 0: text → image | VisualNews | 75.0 | 25.0 | 25.0 | 25.0 |" in rows
    assert "| local | 0: text → image | VisualNews | 25.0 | 0.0 | 0.0 | 25.0 |" in rows
    # all 9 global queries: 2 wrong modality (0:1, 9:0), 2 wrong domain (0:0, 7:0), 2 other
    assert "| global | **all** |  | 66.7 | 22.2 | 22.2 | 22.2 |" in rows
    assert "| local | **all** |  | 22.2 | 0.0 | 0.0 | 22.2 |" in rows


def test_recall_cut_offs_follow_the_reference(tmp_path):
    """UniIR reports R@10/20/50 for Fashion200K and FashionIQ (R@10 the headline), R@1/5/10
    with R@5 the headline elsewhere (DESIGN §3)."""
    from mmembed.eval.mbeir import TaskFiles

    def task(dataset: str) -> TaskFiles:
        return TaskFiles(dataset.lower(), dataset, 1, 0, "test", tmp_path, tmp_path, tmp_path)

    for name in ("Fashion200K", "FashionIQ"):
        assert (task(name).ks, task(name).headline_k) == ((10, 20, 50), 10)
    for name in ("VisualNews", "MSCOCO", "WebQA", "CIRR"):
        assert (task(name).ks, task(name).headline_k) == ((1, 5, 10), 5)
