"""Stage align (mmembed.train.align) on tiny real Embedders: only the projector (and pooler when
named) changes, the language model and vision tower come out bit-identical, the loss falls, a
checkpoint resumes exactly, bad configs are refused; and the image-caption pairs writer
(mmembed.data.offline.pairs) on a small tree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from train_fixtures import config_dict, draw, make_tree, write_model

from mmembed.data.mbeir import Layout, read_pool, read_queries, write_pool, write_queries
from mmembed.data.records import Candidate, Modality, Query
from mmembed.train.config import ConfigError, load_config
from mmembed.train.trainer import LOG_NAME, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("align")
    return make_tree(base / "mbeir"), base


def _align_cfg(root: Path, model: Path, out: Path, tmp: Path, **over) -> Path:
    """Stage align over the tree's image->caption queries (task 3), no instructions."""
    cfg = config_dict(root, model, out, **over)
    cfg["stage"] = "align"
    cfg["model"] = {
        "name": str(model),
        "lora": {"enabled": False},
        "train_modules": cfg["model"].get("train_modules", ["multi_modal_projector", "pooler"]),
        "freeze_vision": True,
    }
    cfg["data"]["use_instructions"] = False
    src = cfg["data"]["sources"][0]
    src["queries"] = ["query/train/mbeir_mscoco_task3_train.jsonl"]
    src["instructions"] = None
    path = tmp / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _state(model_dir: Path) -> dict[str, torch.Tensor]:
    from mmembed.model import load_embedder

    return {k: v.clone() for k, v in load_embedder(str(model_dir)).state_dict().items()}


def _log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.parametrize(
    ("kind", "modules"),
    [
        ("composed", ["multi_modal_projector", "pooler"]),
        ("decoder", ["multi_modal_projector"]),
    ],
)
def test_align_changes_only_the_named_parts_and_the_loss_falls(tree, tmp_path, kind, modules):
    root, _ = tree
    model_dir = write_model(tmp_path / "model", kind)
    before = _state(model_dir)
    over = {"epochs": 12, "model__train_modules": modules}
    cfg = _align_cfg(root, model_dir, tmp_path / "align", tmp_path, **over)
    result = train(load_config(cfg))
    assert result.steps == 24  # 8 image queries, batches of 4, 12 epochs
    after = _state(result.final_model)
    assert before.keys() == after.keys()
    trained = ("backbone.multi_modal_projector.", *(("pooler.",) if "pooler" in modules else ()))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing was trained"
    assert all(k.startswith(trained) for k in changed), sorted(changed)
    # every projector weight moved; the language model and vision tower are bit-identical
    proj = [k for k in before if k.startswith("backbone.multi_modal_projector.")]
    assert set(proj) <= changed
    frozen = [
        k for k in before if k.startswith(("backbone.language_model.", "backbone.vision_tower."))
    ]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    if "pooler" not in modules:
        assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("pooler."))
    losses = [e["loss"] for e in _log(tmp_path / "align" / LOG_NAME)]
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.8 * first, (first, last)


def test_align_resumes_from_a_checkpoint_exactly(tree, tmp_path):
    root, _ = tree
    model_dir = write_model(tmp_path / "model")
    over = {"epochs": 4, "save_every": 4, "keep_last": 2, "optim__warmup_steps": 6}
    over |= {"optim__schedule": "linear"}
    ref = train(load_config(_align_cfg(root, model_dir, tmp_path / "ref", tmp_path, **over)))
    cut_cfg = _align_cfg(root, model_dir, tmp_path / "cut", tmp_path, **over)
    train(load_config(cut_cfg))
    cut = tmp_path / "cut"
    # as if the run died after its step-4 checkpoint: drop the later checkpoint and the model
    assert (cut / "checkpoints" / "step-00000004").is_dir()
    for p in (cut / "checkpoints").iterdir():
        if p.name != "step-00000004":
            shutil.rmtree(p)
    shutil.rmtree(cut / "final")
    resumed = train(load_config(cut_cfg))
    assert resumed.steps == ref.steps == 8
    a, b = _log(cut / LOG_NAME), _log(tmp_path / "ref" / LOG_NAME)
    assert [e["step"] for e in a] == list(range(1, 9))
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6), x["step"]
        assert x["lr"] == y["lr"]
    sa, sb = _state(resumed.final_model), _state(ref.final_model)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6)


def test_align_refuses_lora_unknown_modules_and_text_only_models(tree, tmp_path):
    root, _ = tree
    composed = write_model(tmp_path / "composed")
    lora = _align_cfg(root, composed, tmp_path / "lora", tmp_path)
    data = yaml.safe_load(lora.read_text())
    data["model"]["lora"]["enabled"] = True
    lora.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="lora.enabled: false"):
        train(load_config(lora))
    bad = _align_cfg(
        root, composed, tmp_path / "bad", tmp_path, model__train_modules=["language_model"]
    )
    with pytest.raises(ConfigError, match="train_modules"):
        train(load_config(bad))
    text = _align_cfg(root, write_model(tmp_path / "text", "text"), tmp_path / "t", tmp_path)
    with pytest.raises(ConfigError, match="composed backbone with a vision tower"):
        train(load_config(text))
    with pytest.raises(ConfigError, match="stage must be one of"):
        load_config(lora, ["stage=pretrain"])


def test_align_pairs_pair_every_train_image_with_every_caption(tmp_path):
    from mmembed.data.offline.pairs import POOL_FILE, QUERY_FILE, write_align_pairs

    root = tmp_path / "build"
    lay = Layout(root)
    for rel in ("images/noto/2615.png", "images/gemojione/2615.png", "images/noto/1f600.png",
                "images/noto/1f436.png"):  # fmt: skip
        draw(root / rel, "red", "square")
    train_q = [
        Query("10:1", None, "images/noto/2615.png", Modality.IMAGE, 3, ["10:0"]),
        Query("10:2", "x", "images/gemojione/2615.png", Modality.IMAGE_TEXT, 7, ["10:0"]),
    ]
    test_q = [Query("10:9", None, "images/noto/1f436.png", Modality.IMAGE, 3, ["10:0"])]
    write_queries(lay.query_file("NotoEmoji", 3, "train"), train_q)
    write_queries(lay.query_file("NotoEmoji", 3, "test"), test_q)
    write_pool(
        lay.global_pool_file("train"),
        [
            Candidate("10:0", "hot beverage", None, Modality.TEXT),
            Candidate("10:3", None, "images/noto/1f600.png", Modality.IMAGE),
        ],
    )
    caps = {
        "2615": ["hot beverage", "boisson chaude", "coffee", "hot beverage"],
        "1f600": ["grinning face", "face"],
        "1f436": ["dog face", "face"],
    }
    stats = write_align_pairs(root, tmp_path / "pairs", captions=lambda code: caps.get(code, []))
    # train images only: both styles of 2615 and the pool's 1f600; the test image 1f436 is left out
    assert stats == {"images": 3, "captions": 5, "pairs": 8}
    pool = {c.did: c.text for c in read_pool(tmp_path / "pairs" / POOL_FILE)}
    got = {
        q.image_path: sorted(pool[d] for d in q.pos_dids)
        for q in read_queries(tmp_path / "pairs" / QUERY_FILE)
    }
    assert got == {
        "images/gemojione/2615.png": ["boisson chaude", "coffee", "hot beverage"],
        "images/noto/1f600.png": ["face", "grinning face"],
        "images/noto/2615.png": ["boisson chaude", "coffee", "hot beverage"],
    }
    assert (tmp_path / "pairs/images/noto/1f600.png").is_file()
    assert not (tmp_path / "pairs/images/noto/1f436.png").exists()
