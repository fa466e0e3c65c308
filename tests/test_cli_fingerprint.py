"""The model fingerprint depends on weights, config and the tokeniser's definition only: encoding
text (which makes transformers rewrite the tokeniser's truncation/padding state) must not change
it, so an index built in one process loads in another (issue 19, item 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny saved model whose tokenizer.json carries truncation and padding, as the shipped
    MiniLM tokenizer does (transformers resets both on the first encode)."""
    from mmembed.testing.tiny_embedders import tiny_embedder

    emb = tiny_embedder(seed=0)
    emb.tokenizer.backend_tokenizer.enable_truncation(max_length=128)
    emb.tokenizer.backend_tokenizer.enable_padding(length=128, pad_id=0, pad_token="<pad>")
    out = tmp_path_factory.mktemp("fp") / "tiny"
    emb.save_pretrained(out)
    return out


def _python(code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


ENCODE_AND_SAVE = """
import sys
from mmembed.data.records import Item
from mmembed.index import Index
from mmembed.model import load_embedder
model = load_embedder(sys.argv[1], device="cpu")
emb = model.encode_candidates([Item("a red apple"), Item("a blue sky")], show_progress=False)
Index.build(emb, ["0:1", "0:2"], fingerprint=model.fingerprint).save(sys.argv[2])
print(model.fingerprint)
"""

LOAD_AND_SEARCH = """
import sys
from mmembed.data.records import Item
from mmembed.index import Index
from mmembed.model import load_embedder
model = load_embedder(sys.argv[1], device="cpu")
before = model.fingerprint  # nothing encoded yet in this process
index = Index.load(sys.argv[2], expect_fingerprint=before)
q = model.encode_queries([Item("an apple")], show_progress=False)
scores, ids = index.search(q, 2, fingerprint=model.fingerprint)
print(before, ids[0][0])
"""


def test_index_from_one_process_loads_in_another(model_dir: Path, tmp_path: Path) -> None:
    fp_a = _python(ENCODE_AND_SAVE, str(model_dir), str(tmp_path / "ix"))
    fp_b, top = _python(LOAD_AND_SEARCH, str(model_dir), str(tmp_path / "ix")).split()
    assert fp_a == fp_b and fp_a.startswith("sha256:")
    assert top in {"0:1", "0:2"}


def test_fingerprint_ignores_tokenizer_call_state_but_not_vocabulary(model_dir: Path) -> None:
    from mmembed.data.records import Item
    from mmembed.model import load_embedder
    from mmembed.testing.tiny_embedders import tiny_embedder

    model = load_embedder(str(model_dir), device="cpu")
    before = model.fingerprint
    model.encode_queries([Item("hello")], show_progress=False)
    model._fp = None  # recompute, not the cached value
    assert model.fingerprint == before
    other = tiny_embedder(seed=0)
    other.tokenizer.add_tokens(["<extra>"])  # same weights, another tokeniser
    assert other.fingerprint != tiny_embedder(seed=0).fingerprint
