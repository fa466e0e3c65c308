"""Issue 19's smaller promises: Index.search ids and scores of one length; `eval mbeir --pool
local` reuses a `both` run's cached global embeddings; encode's manifest counts skipped input;
a running server follows a re-index with another model (or refuses, never stale results);
scripts call python3."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_index_search_ids_and_scores_have_one_length() -> None:
    from mmembed.index import Index

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8)).astype(np.float32)
    index = Index.build(x, ["a", "b", "c"])
    scores, ids = index.search(x[:2], 10)  # k larger than the index
    assert scores.shape == (2, 3)
    assert [len(row) for row in ids] == [3, 3] and np.isfinite(scores).all()
    for row_s, row_ids in zip(scores, ids, strict=True):  # what callers do (mine.py is strict)
        assert len(list(zip(row_s, row_ids, strict=True))) == 3
    index.remove(["b"])
    scores, ids = index.search(x[:1], 5)
    assert scores.shape == (1, 2) and ids == [[ids[0][0], ids[0][1]]] and "b" not in ids[0]


class CountingEncoder:
    """An embedder that counts candidate items it encodes (everything else delegated)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.candidates = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_candidates(self, items, **kw):
        items = list(items)
        self.candidates += len(items)
        return self.inner.encode_candidates(items, **kw)


def test_eval_local_reuses_a_both_runs_global_embeddings(tmp_path: Path) -> None:
    import torch
    from eval_fixtures import toy_tree

    from mmembed.eval.mbeir_run import evaluate_model
    from mmembed.testing.tiny_embedders import tiny_embedder

    torch.set_num_threads(1)
    root = toy_tree(tmp_path / "data")
    enc = CountingEncoder(tiny_embedder(seed=0))
    both = evaluate_model(root, enc, out_dir=tmp_path / "out", show_progress=False)
    assert enc.candidates > 0
    enc.candidates = 0
    local = evaluate_model(
        root, enc, out_dir=tmp_path / "out", pools=("local",), show_progress=False
    )
    assert enc.candidates == 0  # nothing re-encoded: rows gathered from the cached global pool
    ours = [(r.dataset, r.task_id, r.recall) for r in local.results]
    assert ours == [(r.dataset, r.task_id, r.recall) for r in both.results if r.system == "local"]


def test_encode_manifest_counts_skipped_files_of_a_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mmembed.cli import app
    from mmembed.testing.colour_embedder import draw_corpus
    from mmembed.testing.tiny_embedders import tiny_embedder

    tiny_embedder(seed=0).save_pretrained(tmp_path / "m")
    folder = tmp_path / "photos"
    draw_corpus(folder)
    good = sum(1 for p in folder.rglob("*") if p.is_file())
    for i in range(6):
        (folder / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    r = CliRunner().invoke(
        app,
        ["encode", str(folder), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "m"),
         "--no-progress"],
        catch_exceptions=False,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert meta["skipped_input"] == 6 and meta["skipped"] == 6 + meta["skipped_encode"]
    assert meta["count"] >= good - 1 and meta["complete"]


def test_serving_searcher_follows_a_reindex_with_another_model(tmp_path: Path) -> None:
    from PIL import Image

    from mmembed.search.library import Library, LibraryError, update_library
    from mmembed.search.query import Searcher
    from mmembed.testing.colour_embedder import ColourEmbedder, draw_corpus

    photos = tmp_path / "photos"
    draw_corpus(photos)
    update_library(tmp_path / "lib", [photos], ColourEmbedder(), model_spec="colour-a")
    loaded: list[str | None] = []

    def load_model(spec):
        loaded.append(spec)
        if spec == "colour-b":
            return ColourEmbedder(salt="b")
        raise ValueError(f"no model {spec!r} here")

    s = Searcher(Library.open(tmp_path / "lib"), ColourEmbedder(), load_model=load_model)
    Image.new("RGB", (30, 30), (250, 250, 250)).save(photos / "white.png")
    update_library(tmp_path / "lib", [], ColourEmbedder(salt="b"), model_spec="colour-b")
    assert s.refresh(min_interval=0) and loaded == ["colour-b"]
    assert s.embedder.fingerprint == ColourEmbedder(salt="b").fingerprint
    hits = s.search("white", k=1)
    assert Path(hits[0].entry.image).name == "white.png"  # the new index, not the stale one

    update_library(tmp_path / "lib", [], ColourEmbedder(salt="c"), model_spec="colour-c")
    assert not s.refresh(min_interval=0)  # colour-c cannot load here: refuse, clearly
    with pytest.raises(LibraryError, match="re-indexed with model colour-c.*restart"):
        s.search("white", k=1)


def test_server_answers_409_when_it_cannot_follow_the_model(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmembed.search.library import Library, update_library
    from mmembed.search.query import Searcher
    from mmembed.search.server import create_app
    from mmembed.testing.colour_embedder import ColourEmbedder, draw_corpus

    draw_corpus(tmp_path / "photos")
    update_library(tmp_path / "lib", [tmp_path / "photos"], ColourEmbedder(), model_spec="a")

    def cannot_load(spec):
        raise FileNotFoundError(f"{spec}: not here")

    s = Searcher(Library.open(tmp_path / "lib"), ColourEmbedder(), load_model=cannot_load)
    client = TestClient(create_app(s, reload_interval=0.0))
    assert client.get("/api/search", params={"q": "red"}).status_code == 200
    update_library(tmp_path / "lib", [], ColourEmbedder(salt="z"), model_spec="z")
    r = client.get("/api/search", params={"q": "red"})
    assert r.status_code == 409 and "re-indexed with model z" in r.json()["detail"]


def test_scripts_call_python3() -> None:
    bare = re.compile(r"(?<![\w./-])python(?=\s+(-m\b|scripts/|\S+\.py\b))|PYTHON:-python\}")
    offenders = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in sorted((ROOT / "scripts").glob("*"))
        if p.suffix in (".sh", ".py")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if bare.search(line)
    ]
    assert not offenders, offenders
