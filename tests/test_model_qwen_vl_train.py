"""The MM-Embed recipe on a tiny random Qwen2-VL backbone, through the CLI: stage "random"
(`mmembed train`), modality-aware mining, stage "hard" with LoRA, GradCache and mined negatives,
then `mmembed eval mbeir` on a tiny M-BEIR tree (about 20 s of CPU)."""

from __future__ import annotations

import json
import shutil

import torch
import yaml
from train_fixtures import config_dict, make_tree
from typer.testing import CliRunner

from mmembed.cli import app
from mmembed.data.mbeir import Layout, read_queries, write_qrels, write_queries
from mmembed.testing.tiny_qwen_vl import tiny_qwen_embedder

torch.set_num_threads(1)


def _add_test_split(root):
    """The training queries again as the test split (the model is scored on what it saw: this
    checks the pipeline, not generalisation), with qrels and the union test pool."""
    lay = Layout(root)
    for task in (0, 3):
        queries = list(read_queries(lay.query_file("MSCOCO", task, "train")))
        write_queries(lay.query_file("MSCOCO", task, "test"), queries)
        write_qrels(lay.qrels_file("MSCOCO", task, "test"), queries)
    shutil.copy(lay.global_pool_file("train"), lay.global_pool_file("test"))


def _log(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_recipe_on_a_tiny_qwen2_vl_then_eval_mbeir(tmp_path):
    root = make_tree(tmp_path / "mbeir")
    _add_test_split(root)
    base = tmp_path / "base"
    tiny_qwen_embedder("qwen2_vl", bidirectional=True, max_tokens=4).save_pretrained(base)
    runner = CliRunner()
    qwen_model = {
        "vision_modules": ["visual"],
        "train_modules": ["visual.merger", "pooler"],
    }

    # stage random: in-batch negatives, full fine-tuning of the text model
    stage1 = config_dict(root, base, tmp_path / "random", epochs=3)
    stage1["model"].update(qwen_model, freeze_vision=False)
    (tmp_path / "random.yaml").write_text(yaml.safe_dump(stage1))
    res = runner.invoke(app, ["train", str(tmp_path / "random.yaml")])
    assert res.exit_code == 0, res.output
    log = _log(tmp_path / "random" / "train_log.jsonl")
    assert len(log) == 12
    first, last = log[0]["loss"], sum(e["loss"] for e in log[-4:]) / 4
    assert last < first, [e["loss"] for e in log]

    # modality-aware mining with the stage-random model
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
            str(tmp_path / "random" / "final"),
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
    mined = sorted((tmp_path / "mined").glob("*.jsonl"))
    assert all(q.neg_dids for p in mined for q in read_queries(p))

    # stage hard: from the base again, LoRA on the text model, GradCache, mined negatives
    stage2 = config_dict(root, base, tmp_path / "hard", epochs=3)
    stage2["model"].update(
        qwen_model,
        freeze_vision=True,
        lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
    )
    stage2["data"]["hard_negatives"] = 1
    stage2["data"]["sources"][0]["queries"] = [str(p) for p in mined]
    stage2["loss"].update(grad_cache=True, chunk_size=3)
    (tmp_path / "hard.yaml").write_text(yaml.safe_dump(stage2))
    res = runner.invoke(app, ["train", str(tmp_path / "hard.yaml")])
    assert res.exit_code == 0, res.output
    final = tmp_path / "hard" / "final"
    assert (final / "config.json").is_file()
    saved = json.loads((final / "config.json").read_text())
    assert saved["backbone"]["type"] == "qwen_vl" and saved["backbone"]["family"] == "qwen2_vl"

    # evaluation the M-BEIR way: the base, stage random and stage hard
    scores = {}
    for name, model in (("base", base), ("random", tmp_path / "random" / "final"), ("hard", final)):
        res = runner.invoke(
            app,
            [
                "eval",
                "mbeir",
                "--data",
                str(root),
                "--model",
                str(model),
                "--out",
                str(tmp_path / f"eval_{name}"),
                "--no-progress",
            ],
        )
        assert res.exit_code == 0, res.output
        report = json.loads((tmp_path / f"eval_{name}" / "results.json").read_text())
        tasks = {(r["dataset"], r["task_id"]) for r in report["results"]}
        assert tasks == {("MSCOCO", 0), ("MSCOCO", 3)}
        assert set(report["means"]) == {"local", "global"}
        scores[name] = report["means"]
    print(scores)
    assert scores["random"]["local"] > scores["base"]["local"]
    assert scores["hard"]["local"] > scores["base"]["local"]
