"""M-BEIR evaluation: hand-computed recall and error analysis from run files on a tree with the
real M-BEIR naming (lower-case names, MSCOCO's split-specific pool), several runs side by side,
and a model evaluated end to end on local and global pools whose run files score the same."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_fixtures import hand_run, toy_tree
from typer.testing import CliRunner

from mmembed.data.mbeir import Layout
from mmembed.data.runfile import read_run_ids, write_run
from mmembed.eval.mbeir import discover, score_run


def test_discover_names_order_and_split_specific_pool(tmp_path):
    tasks = discover(toy_tree(tmp_path / "data"))
    assert [(t.dataset, t.task_id) for t in tasks] == [
        ("VisualNews", 0),
        ("MSCOCO", 3),
        ("FashionIQ", 7),
    ]
    assert tasks[1].pool_file.name == "mbeir_mscoco_task3_test_cand_pool.jsonl"
    assert tasks[2].ks == (10, 20, 50) and tasks[2].headline_k == 10 and tasks[0].headline_k == 5
    with pytest.raises(FileNotFoundError, match="no M-BEIR query files"):
        discover(tmp_path / "data", "val")


def test_run_scoring_by_hand(tmp_path):
    root = toy_tree(tmp_path / "data")
    tasks = discover(root)
    lay = Layout(root)
    results = score_run(
        read_run_ids(hand_run(tmp_path / "hand.trec")),
        tasks,
        "hand",
        pool_files=[lay.global_pool_file("test")],
    )
    vn, coco, fiq = results
    assert vn.recall == pytest.approx({"R@1": 25.0, "R@5": 50.0, "R@10": 50.0})
    assert vn.errors == {"wrong_modality": 1, "wrong_domain": 1, "other": 0} and vn.missing == 1
    assert fiq.recall == pytest.approx({"R@10": 100 / 3, "R@20": 200 / 3, "R@50": 200 / 3})
    assert fiq.headline == "R@10" and fiq.errors == {
        "wrong_modality": 0,
        "wrong_domain": 0,
        "other": 2,
    }
    assert coco.recall == pytest.approx({"R@1": 50.0, "R@5": 100.0, "R@10": 100.0})
    from mmembed.eval.mbeir import Report

    report = Report("test", tasks, results)
    assert report.mean("hand") == pytest.approx((50.0 + 100 / 3 + 100.0) / 3)
    assert report.error_rates("hand")["wrong_modality"] == pytest.approx(100 / 9)


def test_cli_scores_several_runs_side_by_side(tmp_path):
    from mmembed.cli import app

    root = toy_tree(tmp_path / "data")
    hand_run(tmp_path / "before.trec")
    write_run(tmp_path / "after.trec", {"0:0": [("0:0", 1.0)], "0:3": [("0:4", 1.0)]}, tag="after")
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "mbeir",
            "--data",
            str(root),
            "--run",
            str(tmp_path / "before.trec"),
            "--run",
            f"reranked={tmp_path / 'after.trec'}",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert res.exit_code == 0, res.output
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| task | dataset | metric | before | reranked |" in md
    assert "| 0: text → image | VisualNews | R@5 | 50.0 | 50.0 |" in md
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["means"]["reranked"] == pytest.approx(50.0 / 3)
    tsv = (tmp_path / "out" / "results.tsv").read_text().splitlines()
    assert "7\t7: image+text → image\tFashionIQ\t7\ttest\tbefore\tR@20\t66.6667" in tsv
    bad = tmp_path / "other.trec"
    write_run(bad, {"5:1": [("5:2", 1.0)]})
    res = CliRunner().invoke(
        app,
        ["eval", "mbeir", "--data", str(root), "--run", str(bad), "--out", str(tmp_path / "o2")],
    )
    assert res.exit_code == 2 and "answers none" in res.output  # one clean line, no traceback


@pytest.fixture(scope="module")
def tiny():
    import torch

    torch.set_num_threads(1)
    from mmembed.testing.tiny_embedders import tiny_embedder

    return tiny_embedder(seed=0)


def test_model_eval_local_and_global(tmp_path, tiny):
    from mmembed.eval.mbeir_run import evaluate_model
    from mmembed.eval.tables import write_report

    root = toy_tree(tmp_path / "data")
    report = evaluate_model(
        root, tiny, out_dir=tmp_path / "out", show_progress=False, model_name="tiny"
    )
    assert report.systems == ["local", "global"]
    assert len(report.results) == 6 and all(r.queries in (2, 3, 4) for r in report.results)
    # a run file written by the evaluation scores exactly like the evaluation itself
    tasks = discover(root)
    for system in ("local", "global"):
        run = read_run_ids(tmp_path / "out" / "runs" / f"{system}.trec")
        assert len(run) == 9
        pools = (
            [Layout(root).global_pool_file("test")]
            if system == "global"
            else [t.pool_file for t in tasks]
        )
        again = score_run(run, tasks, system, pool_files=pools)
        ours = [r for r in report.results if r.system == system]
        assert [(r.recall, r.errors) for r in again] == [(r.recall, r.errors) for r in ours]
    local_run = read_run_ids(tmp_path / "out" / "runs" / "local.trec")
    assert all(
        d.startswith("9:") for d in local_run["9:0"]
    )  # the local pool holds only MSCOCO texts
    assert len(local_run["0:0"]) == 12 and len(local_run["7:0"]) == 15
    global_run = read_run_ids(tmp_path / "out" / "runs" / "global.trec")
    assert len(global_run["0:0"]) == 31  # the union pool
    paths = write_report(report, tmp_path / "out")
    assert [p.suffix for p in paths] == [".md", ".json", ".tsv"]
    md = paths[0].read_text()
    assert "wrong modality" in md and "| **mean** |" in md
    meta = json.loads(paths[1].read_text())
    assert (
        meta["settings"]["fingerprint"] == tiny.fingerprint
        and meta["settings"]["instructions"] is True
    )
    # a second evaluation reuses the cached embeddings and gives the same numbers
    again = evaluate_model(
        root, tiny, out_dir=tmp_path / "out", show_progress=False, model_name="tiny"
    )
    assert [r.recall for r in again.results] == [r.recall for r in report.results]


def test_model_eval_instructions_off_and_local_only(tmp_path, tiny):
    from mmembed.eval.mbeir_run import evaluate_model

    root = toy_tree(tmp_path / "data")
    (root / "instructions" / "query_instructions.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="--instructions off"):
        evaluate_model(root, tiny, out_dir=tmp_path / "o", show_progress=False)
    report = evaluate_model(
        root,
        tiny,
        out_dir=tmp_path / "o",
        pools=("local",),
        instructions=False,
        show_progress=False,
    )
    assert report.systems == ["local"] and not (tmp_path / "o" / "runs" / "global.trec").exists()
    # the same recall by brute force: the model's own encodings, a numpy ranking, a hit in top k
    from mmembed.data.mbeir import read_pool, read_qrels, read_queries
    from mmembed.eval.mbeir import discover

    for task in discover(root, "test"):
        qs, pool = list(read_queries(task.query_file)), list(read_pool(task.pool_file))
        qrels = read_qrels(task.qrels_file)
        q = tiny.encode_queries(qs, image_root=root, show_progress=False)  # (Q, D), no instruction
        c = tiny.encode_candidates(pool, image_root=root, show_progress=False)  # (N, D)
        top = np.argsort(-(q @ c.T), axis=1, kind="stable")[:, : task.headline_k]  # (Q, k)
        hits = [
            bool({pool[j].did for j in row} & qrels[x.qid]) for x, row in zip(qs, top, strict=True)
        ]
        got = next(r for r in report.results if r.task_id == task.task_id)
        assert got.value == pytest.approx(100.0 * np.mean(hits)), task.key


def test_offline_benchmark_end_to_end(tmp_path, tiny):
    """The offline benchmark (dataset ids >= 10, names from its files) through the CLI, unchanged."""
    from mmembed.cli import app
    from mmembed.data.offline import build

    build(tmp_path / "offline", limit=4, show_progress=False)
    tiny.save_pretrained(tmp_path / "model")
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "mbeir",
            "--data",
            str(tmp_path / "offline"),
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    tasks = {(r["dataset"], r["task_id"]) for r in data["results"]}
    assert {t for _, t in tasks} == {0, 1, 2, 3, 4, 6, 7, 8}
    assert all(r["dataset_id"] >= 10 for r in data["results"])
    assert not any(name.islower() for name, _ in tasks)  # display names come from the dataset's tsv
    assert set(data["means"]) == {"local", "global"}
    # the rerank path: score the model's own global run next to it
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "mbeir",
            "--data",
            str(tmp_path / "offline"),
            "--run",
            f"again={tmp_path / 'out' / 'runs' / 'global.trec'}",
            "--out",
            str(tmp_path / "o2"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o2" / "results.json").read_text())["means"][
        "again"
    ] == pytest.approx(data["means"]["global"])


def test_cli_config_fills_options_left_at_defaults(tmp_path):
    from mmembed.cli import app

    root = toy_tree(tmp_path / "data")
    hand_run(tmp_path / "hand.trec")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {root}\nout: {tmp_path / 'from_config'}\nsplit: val\n")
    # split comes from the config (val: no queries) unless the command line says otherwise
    res = CliRunner().invoke(
        app, ["eval", "mbeir", "--config", str(cfg), "--run", str(tmp_path / "hand.trec")]
    )
    assert res.exit_code == 2 and "no M-BEIR query files" in res.output
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "mbeir",
            "--config",
            str(cfg),
            "--split",
            "test",
            "--run",
            str(tmp_path / "hand.trec"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "from_config" / "results.json").is_file()
    cfg.write_text("nonsense: 1\n")
    res = CliRunner().invoke(app, ["eval", "mbeir", "--config", str(cfg)])
    # the error box wraps at the terminal's width: compare words, not lines
    words = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code != 0 and "unknown key" in words


def test_graded_qrels_count_as_positive_as_uniir_reads_them(tmp_path):
    """UniIR's load_qrel keeps a line when int(relevance) > 0; grade 2 is a positive, 0 and -1
    are not. positives="one" keeps only grade 1 (mmembed's rule before issue 13)."""
    from mmembed.data.mbeir import read_qrels
    from mmembed.eval.mbeir import load_task

    root = toy_tree(tmp_path / "data")
    tasks = discover(root)
    vn = tasks[0]
    # query 0:2's hand-run top-1 is 7:0 and rank 2 is 0:5: judge 0:5 grade 2, 7:0 grade 0
    with open(vn.qrels_file, "a") as f:
        f.write("0:2 0 0:5 2 0\n0:2 0 7:0 0 0\n0:3 0 0:4 -1 0\n")
    assert read_qrels(vn.qrels_file)["0:2"] == {"0:3", "0:5"}
    assert read_qrels(vn.qrels_file, positives="one")["0:2"] == {"0:3"}
    assert load_task(vn).positives[2] == {"0:3", "0:5"}
    with pytest.raises(ValueError, match="choose one of positive, one"):
        read_qrels(vn.qrels_file, positives="two")
    results = score_run(read_run_ids(hand_run(tmp_path / "hand.trec")), tasks, "hand")
    # by hand: 0:0 hit@1, 0:1 hit@5, 0:2 now hit@2 (0:5, grade 2), 0:3 unanswered
    assert results[0].recall == pytest.approx({"R@1": 25.0, "R@5": 75.0, "R@10": 75.0})


def test_cli_qrels_rule_picks_the_positives(tmp_path):
    """`eval mbeir --qrels one` scores with relevance-1 lines only; the default is UniIR's > 0.
    Same tree and hand run as above: 0:2's only hit in the top 5 is 0:5, judged grade 2."""
    from mmembed.cli import app

    root = toy_tree(tmp_path / "data")
    vn = discover(root)[0]
    with open(vn.qrels_file, "a") as f:
        f.write("0:2 0 0:5 2 0\n")
    hand_run(tmp_path / "hand.trec")
    rows = {}
    for rule in ("positive", "one"):
        args = ["eval", "mbeir", "--data", str(root), "--run", f"hand={tmp_path / 'hand.trec'}"]
        res = CliRunner().invoke(app, [*args, "--qrels", rule, "--out", str(tmp_path / rule)])
        assert res.exit_code == 0, res.output
        md = (tmp_path / rule / "results.md").read_text()
        rows[rule] = [ln for ln in md.splitlines() if "| VisualNews | R@5 |" in ln]
        data = json.loads((tmp_path / rule / "results.json").read_text())
        assert data["settings"]["qrels"] == rule
    # by hand: 0:0 hit@1, 0:1 hit@5, 0:3 unanswered; 0:2 a hit only when grade 2 counts
    assert rows["positive"] == ["| 0: text → image | VisualNews | R@5 | 75.0 |"]
    assert rows["one"] == ["| 0: text → image | VisualNews | R@5 | 50.0 |"]
    res = CliRunner().invoke(app, ["eval", "mbeir", "--data", str(root), "--qrels", "two"])
    assert res.exit_code != 0 and "--qrels must be positive or one" in res.output
