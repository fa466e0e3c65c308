"""`mmembed train` and `mmembed mine` through the real CLI (typer runner, in process)."""

from __future__ import annotations

import json

import torch
import yaml
from train_fixtures import config_dict, make_tree, write_model
from typer.testing import CliRunner

from mmembed.cli import app
from mmembed.data.mbeir import read_queries

torch.set_num_threads(1)


def test_train_and_mine_commands(tmp_path):
    root = make_tree(tmp_path / "m")
    model = write_model(tmp_path / "model")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(root, model, tmp_path / "run")))
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(cfg), "epochs=1", "--", "--data.batch_size=8"])
    assert res.exit_code == 0, res.output
    assert "done: 2 steps" in res.output
    saved = yaml.safe_load((tmp_path / "run/config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["data"]["batch_size"] == 8

    bad = runner.invoke(app, ["train", str(cfg), "data.batch_sise=8"])
    assert bad.exit_code == 2 and "unknown key(s) ['batch_sise']" in bad.output

    res = runner.invoke(
        app,
        [
            "mine",
            "--data",
            str(root),
            "--queries",
            "query/train/*.jsonl",
            "--pool",
            "cand_pool/global/mbeir_union_train_cand_pool.jsonl",
            "--out",
            str(tmp_path / "mined"),
            "--model",
            str(tmp_path / "run/final"),
            "--top-k",
            "32",
            "--rank-threshold",
            "4",
            "--max-negatives",
            "3",
            "--positive-ratio",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    mined = [q for p in sorted((tmp_path / "mined").glob("*.jsonl")) for q in read_queries(p)]
    assert len(mined) == 16 and all(
        len(q.neg_dids) == 3 for q in mined
    )  # 32-pool, ratio filter off
    assert all(not set(q.neg_dids) & set(q.pos_dids) for q in mined)
    assert (
        json.loads((tmp_path / "mined/mining.json").read_text())["settings"]["max_negatives"] == 3
    )
