"""The shipped default model mmembed-mini (issue 8): it is what load_embedder(None) loads, its
folder stays under 50 MB, it embeds text and images to unit vectors, and emoji names pick out
their own Noto pictures among a few (real assertions on the real trained weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmembed.data.records import Item
from mmembed.model.registry import TRAINED_DEFAULT, WEIGHTS_DIR, default_model_name, load_embedder

# (English CLDR name, sequence): training-split emoji of the --limit 40 offline build.
EMOJI = [
    ("hot beverage", "\u2615"),
    ("evergreen tree", "\U0001f332"),
    ("necktie", "\U0001f454"),
    ("bathtub", "\U0001f6c1"),
    ("egg", "\U0001f95a"),
]


@pytest.fixture(scope="module")
def mini():
    torch.set_num_threads(2)
    return load_embedder(None, device="cpu")


def test_default_model_is_the_shipped_mini(monkeypatch):
    monkeypatch.delenv("MMEMBED_MODEL", raising=False)
    assert default_model_name() == TRAINED_DEFAULT
    folder = WEIGHTS_DIR / TRAINED_DEFAULT
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert 0 < size <= 50 * 2**20


def test_mini_embeds_and_names_find_their_emoji(mini, monkeypatch):
    from mmembed.data.offline.assets import find_assets
    from mmembed.data.offline.instructions import PROMPTS
    from mmembed.data.offline.render import render_noto

    font = find_assets().font
    images = [render_noto(seq, font) for _, seq in EMOJI]
    names = [name for name, _ in EMOJI]
    instruction = PROMPTS[("NotoEmoji", "text", "image")][0]
    q = mini.encode_queries(
        [Item(n, None) for n in names], instructions=instruction, show_progress=False
    )  # (5, dim)
    c = mini.encode_candidates([Item(None, im) for im in images], show_progress=False)  # (5, dim)
    assert q.shape == c.shape == (len(EMOJI), mini.dim)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-4)
    top = (q @ c.T).argmax(axis=1)  # (5,)
    hits = int((top == np.arange(len(EMOJI))).sum())
    assert top[0] == 0, f"'hot beverage' ranked image {top[0]} first"
    assert hits >= 4, f"only {hits}/5 names rank their own image first: {top.tolist()}"
