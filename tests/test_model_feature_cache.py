"""mmembed.model.feature_cache: the disk level equals the in-memory level equals running the tower
(float32: bit for bit), is keyed by the tower's weights, is never used for a tower that is being
trained, and reaches the plain CLI (`mmembed --feature-cache`) and the trainer
(`model.feature_cache_dir`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mmembed.data.records import Item
from mmembed.model import feature_cache as fc
from mmembed.model.feature_cache import VisionFeatureCache, attach_feature_cache
from mmembed.testing.tiny_embedders import tiny_embedder

torch.set_num_threads(1)


def _img(i: int) -> Image.Image:
    img = Image.new("RGB", (40, 40), (20 * i % 255, 100, 30))
    img.paste((255 - 20 * i % 255, 40, 90), (5, 5, 25, 30))
    return img


def _npy(folder) -> list:
    return sorted(folder.rglob("*.npy"))


@pytest.fixture(autouse=True)
def _no_process_default():
    fc.use_feature_cache(None)
    yield
    fc.use_feature_cache(None)


def test_disk_equals_memory_equals_direct(tmp_path):
    emb = tiny_embedder(seed=2).eval()
    bb = emb.backbone
    imgs = [_img(i) for i in range(5)]
    px = bb.preprocess_images(imgs)["pixel_values"]  # (5, 3, S, S)
    with torch.no_grad():
        direct = bb.vision_tower(px)  # (5, N, C)
    keys = [f"img{i}" for i in range(5)]

    def loader(missing):
        return bb.preprocess_images([imgs[keys.index(k)] for k in missing])["pixel_values"]

    memory = VisionFeatureCache(emb, torch.float32).features(keys, loader)
    assert torch.equal(memory, direct)

    disk = VisionFeatureCache(emb, torch.float32, folder=tmp_path / "f")
    attach_feature_cache(emb, disk)
    first = disk.features(keys, loader)  # key misses -> the backbone -> the folder
    assert disk.misses == 5 and disk.disk_misses == 5 and disk.disk_hits == 0
    assert len(_npy(tmp_path / "f")) == 5
    assert torch.equal(first, direct)
    again = VisionFeatureCache(emb, torch.float32, folder=tmp_path / "f")  # a new process
    attach_feature_cache(emb, again)
    order = [4, 0, 3, 1, 2]
    got = again.features([keys[i] for i in order], lambda m: loader(m))
    assert again.disk_hits == 5 and again.disk_misses == 0 and len(_npy(tmp_path / "f")) == 5
    assert torch.equal(got, direct[order])
    with torch.no_grad():  # the backbone's own path (evaluation, mining) reads the same files
        assert torch.equal(bb.vision_features(px[[2, 2, 0]]), direct[[2, 2, 0]])
    assert again.disk_hits == 8 and again.disk_misses == 0


def test_embeddings_through_the_folder_equal_uncached(tmp_path):
    emb = tiny_embedder(seed=3).eval()
    items = [Item("x", _img(i)) for i in range(5)] + [Item("text only", None)]
    plain = emb.encode_candidates(items, show_progress=False, batch_size=4)
    cache = VisionFeatureCache(folder=tmp_path / "f")
    attach_feature_cache(emb, cache)
    first = emb.encode_candidates(items, show_progress=False, batch_size=4)
    assert (cache.disk_hits, cache.disk_misses) == (0, 5)
    # the tower may see a different batch (the misses only) than the uncached path: float noise
    np.testing.assert_allclose(first, plain, rtol=0, atol=1e-6)
    again = emb.encode_candidates(items[::-1], show_progress=False, batch_size=3)[::-1]
    assert (cache.disk_hits, cache.disk_misses) == (5, 5)
    np.testing.assert_allclose(again, plain, atol=1e-6)  # other batches: other padding


def test_other_tower_weights_do_not_read_stale_features(tmp_path):
    emb = tiny_embedder(seed=4).eval()
    px = emb.backbone.preprocess_images([_img(1), _img(2)])["pixel_values"]
    cache = VisionFeatureCache(folder=tmp_path / "f")
    attach_feature_cache(emb, cache)
    with torch.no_grad():
        before = emb.backbone.vision_features(px)
        next(emb.backbone.vision_tower.parameters()).add_(0.5)  # in place: a new digest
        after = emb.backbone.vision_features(px)
        direct = emb.backbone.vision_tower(px)
    assert cache.disk_misses == 4 and cache.disk_hits == 0
    assert torch.equal(after, direct) and not torch.allclose(before, after)
    assert len({p.parent for p in _npy(tmp_path / "f")}) == 2  # one folder per tower digest


def test_a_tower_being_trained_is_always_run(tmp_path):
    emb = tiny_embedder(seed=5)
    tower = emb.backbone.vision_tower
    px = emb.backbone.preprocess_images([_img(1)])["pixel_values"]
    cache = VisionFeatureCache(folder=tmp_path / "f")
    attach_feature_cache(emb, cache)
    tower.train()
    emb.backbone.vision_features(px)  # train mode (batch norm, dropout): not cached
    tower.eval()
    for p in tower.parameters():
        p.requires_grad_(True)
    out = emb.backbone.vision_features(px)  # grad through the weights: not cached
    assert out.requires_grad and cache.disk_misses == 0 and not _npy(tmp_path)
    with torch.no_grad():
        emb.backbone.vision_features(px)  # no graph: a fixed function of the pixels
    assert cache.disk_misses == 1


def test_attach_refuses_a_backbone_without_the_hook():
    with pytest.raises(ValueError, match="composed backbone only"):
        attach_feature_cache(torch.nn.Linear(2, 2), VisionFeatureCache(folder="x"))


def test_cli_option_sets_the_process_default(tmp_path):
    from typer.testing import CliRunner

    from mmembed.cli import app

    CliRunner().invoke(app, ["--feature-cache", str(tmp_path / "f"), "data", "--help"])
    cache = fc.default_feature_cache()
    assert cache is not None and cache.folder == tmp_path / "f"
    emb = tiny_embedder(seed=6).eval()  # no cache of its own: the process default applies
    emb.encode_candidates([Item(None, _img(3))], show_progress=False)
    assert cache.disk_misses == 1 and len(_npy(tmp_path / "f")) == 1
    CliRunner().invoke(app, ["data", "--help"])
    assert fc.default_feature_cache() is None  # the next command without the option: none


def test_trainer_folder_gives_the_same_training(tmp_path):
    from train_fixtures import config_dict, make_tree, write_model

    from mmembed.train.config import load_config
    from mmembed.train.trainer import LOG_NAME, train

    root = make_tree(tmp_path / "m")
    model_dir = write_model(tmp_path / "model")
    losses = {}
    for name, folder in (("plain", None), ("disk", tmp_path / "f"), ("read", tmp_path / "f")):
        cfg = config_dict(root, model_dir, tmp_path / name, epochs=1)
        cfg["model"].update(
            {
                "freeze_vision": True,
                "cache_vision_features": True,
                "vision_cache_dtype": "float32",
                "feature_cache_dir": None if folder is None else str(folder),
            }
        )
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        train(load_config(path))
        log = (tmp_path / name / LOG_NAME).read_text().splitlines()
        losses[name] = [json.loads(x)["loss"] for x in log]
        if name == "disk":
            written = _npy(tmp_path / "f")
    assert len(written) == 16  # every image of the tree once
    assert _npy(tmp_path / "f") == written  # the third run only read them
    assert losses["plain"] == losses["disk"] == losses["read"] and len(losses["plain"]) == 4
