"""CLIP score fusion over a tiny open_clip architecture built without weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.records import Item
from mmembed.model import load_embedder

torch.set_num_threads(1)
import open_clip  # noqa: E402,F401  (a core dependency: a broken install fails, never skips)

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def sf():
    from mmembed.model.clip_sf import load_clip_sf

    torch.manual_seed(0)
    return load_clip_sf(TINY, device="cpu")


def test_score_fusion_is_the_normalised_sum(sf):
    img = Image.new("RGB", (40, 30), (10, 200, 90))
    t, v, c = sf.encode_candidates(
        [Item("a green box"), Item(None, img), Item("a green box", img)], show_progress=False
    )
    assert np.allclose(np.linalg.norm([t, v, c], axis=1), 1, atol=1e-5)
    want = (t + v) / np.linalg.norm(t + v)
    assert np.abs(c - want).max() < 1e-5


def test_instruction_prefixes_query_text_only(sf):
    q = sf.encode_queries([Item("cats")], instructions="Find a photo.", show_progress=False)
    plain = sf.encode_candidates([Item("Find a photo. cats")], show_progress=False)
    assert np.abs(q - plain).max() < 1e-5


def test_save_load_and_weights_file(sf, tmp_path):
    items = [Item("x"), Item(None, Image.new("RGB", (8, 8), (1, 2, 3)))]
    a = sf.encode_candidates(items, show_progress=False)
    sf.save_pretrained(tmp_path / "sf")
    back = load_embedder(tmp_path / "sf", device="cpu")
    assert np.array_equal(back.encode_candidates(items, show_progress=False), a)
    assert back.fingerprint == sf.fingerprint
    # weights from a local open_clip-style checkpoint (plain state dict, no 'model.' prefix)
    torch.save(sf.model.state_dict(), tmp_path / "w.pt")
    from mmembed.model.clip_sf import load_clip_sf

    again = load_clip_sf(TINY, weights=tmp_path / "w.pt", device="cpu")
    assert np.array_equal(again.encode_candidates(items, show_progress=False), a)


def test_builtin_architecture_name_resolves():
    from mmembed.model.clip_sf import model_config

    assert model_config("ViT-B-32")["embed_dim"] == 512
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        model_config("no-such-arch")
