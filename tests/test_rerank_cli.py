"""`mmembed rerank` end to end on a tiny M-BEIR tree with a tiny LLaVA-Next checkpoint saved to
disk and loaded back through load_reranker (the path a user's --model takes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch  # core dependencies: a broken install fails here, never skips
import transformers  # noqa: F401
import typer
from eval_fixtures import rerank_tree
from typer.testing import CliRunner  # noqa: E402

from mmembed.data.runfile import read_run, write_run  # noqa: E402
from mmembed.rerank.cli import default_out, rerank  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from mmembed.testing.tiny_rerankers import tiny_llava_parts

    folder = tmp_path_factory.mktemp("tiny-llava")
    model, processor = tiny_llava_parts(seed=1)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_rerank_command_writes_new_run_beside_input(tmp_path, checkpoint):
    run = rerank_tree(tmp_path / "data")
    run_path = tmp_path / "runs" / "first.trec"
    write_run(run_path, run, tag="first")
    app = typer.Typer()
    app.command()(rerank)
    res = CliRunner().invoke(
        app,
        [
            str(run_path),
            "--data",
            str(tmp_path / "data"),
            "--model",
            str(checkpoint),
            "--k",
            "5",
            "--batch-size",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    out = default_out(run_path, 5)
    assert out == tmp_path / "runs" / "first.rerank5.trec" and out.exists()
    new = read_run(out)
    assert set(new) == set(run)
    for qid in run:
        assert new[qid][5:] == run[qid][5:]
        assert sorted(new[qid][:5]) != [] and {d for d, _ in new[qid][:5]} == {
            d for d, _ in run[qid][:5]
        }
        assert new[qid][1][0] == "9:17"  # the unreadable candidate kept rank 2
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["pairs"] == 15 and report["scored"] == 12 and report["reranked_queries"] == 3
    assert any(p["did"] == "9:17" and "7.png" in p["reason"] for p in report["problems"])
    rows = out.with_suffix(".scores.tsv").read_text().splitlines()
    assert (
        rows[0].split("\t") == ["qid", "did", "old_rank", "new_rank", "prob", "status"]
        and len(rows) == 16
    )
    probs = {
        (c[0], c[1]): float(c[4]) for c in (r.split("\t") for r in rows[1:]) if c[4]
    }  # (qid, did) -> P(True)
    assert len(probs) == 12
    # within each query the new order is the order of the probabilities (readable pairs)
    for qid in run:
        scored = [d for d, _ in new[qid][:5] if (qid, d) in probs]
        assert [probs[qid, d] for d in scored] == sorted(
            (probs[qid, d] for d in scored), reverse=True
        )
    assert "9:17" in res.output  # reported on the console too

    # --scores rerank writes probabilities; the dataset's instruction reaches the prompt
    out2 = tmp_path / "r2.trec"
    res = CliRunner().invoke(
        app,
        [
            str(run_path),
            "--data",
            str(tmp_path / "data"),
            "--model",
            str(checkpoint),
            "--k",
            "5",
            "--out",
            str(out2),
            "--scores",
            "rerank",
        ],
    )
    assert res.exit_code == 0, res.output
    new2 = read_run(out2)
    # the scores written are the probabilities of the first run's table, pair by pair
    for qid in new2:
        for d, sc in new2[qid][:5]:
            if (qid, d) in probs:
                assert sc == pytest.approx(probs[qid, d], abs=1e-4), (qid, d)
    assert [d for d, _ in new2["9:0"]] == [d for d, _ in new["9:0"]]  # same order, other scores


def test_instruction_from_table_is_used(tmp_path, checkpoint):
    from mmembed.rerank.inputs import load_inputs
    from mmembed.rerank.load import load_reranker
    from mmembed.rerank.pipeline import rerank_run

    run = rerank_tree(tmp_path / "data")
    inputs = load_inputs(tmp_path / "data", run, k=3)
    assert set(inputs.queries) == set(run) and len(inputs.candidates) == 3
    r = load_reranker(checkpoint)
    seen: list[str] = []
    score_batch = r.score_batch
    r.score_batch = lambda prompts, images=None: (
        seen.extend(prompts),
        score_batch(prompts, images),
    )[1]
    rerank_run(
        run,
        inputs.queries,
        inputs.candidates,
        r,
        k=3,
        image_root=tmp_path / "data",
        instructions=inputs.instructions,
        show_progress=False,
    )
    assert seen and all(p.startswith("Find me an everyday image") for p in seen)
    rerank_run(
        run,
        inputs.queries,
        inputs.candidates,
        r,
        k=3,
        image_root=tmp_path / "data",
        show_progress=False,
    )
    assert seen[-1].startswith(r.prompts.for_task(0).instruction)


def test_bad_arguments_give_clear_errors(tmp_path, checkpoint):
    run = rerank_tree(tmp_path / "data")
    run_path = tmp_path / "first.trec"
    write_run(run_path, run)
    app = typer.Typer()
    app.command()(rerank)
    res = CliRunner().invoke(
        app,
        [
            str(run_path),
            "--data",
            str(tmp_path / "data"),
            "--model",
            str(checkpoint),
            "--split",
            "val",
        ],
    )
    assert res.exit_code != 0 and "no M-BEIR query files for split 'val'" in str(res.exception)
    res = CliRunner().invoke(
        app,
        [
            str(run_path),
            "--data",
            str(tmp_path / "data"),
            "--model",
            str(tmp_path / "nope"),
            "--k",
            "2",
        ],
    )
    assert res.exit_code != 0 and "nope" in str(res.exception)


def test_rerank_is_registered_in_the_cli():
    from mmembed.cli import app

    res = CliRunner().invoke(app, ["rerank", "--help"])  # the real entry point, not the table
    assert res.exit_code == 0, res.output
    assert "--k" in res.output and "--scores" in res.output


def test_model_paths_that_cannot_load_say_so(tmp_path):
    from mmembed.rerank.load import load_reranker

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json and no .gguf"):
        load_reranker(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such model file or folder"):
        load_reranker(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="could not be fetched as a hub model"):
        load_reranker("some-org/not-a-local-model")
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "a.gguf").write_bytes(b"x")
    (tmp_path / "two" / "b.gguf").write_bytes(b"x")
    with pytest.raises(ValueError, match="several GGUF files"):
        load_reranker(tmp_path / "two")
