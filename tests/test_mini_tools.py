"""scripts/mini_tools.py and mmembed.model.delta: WordNet BEIR folders, the shipped-delta round
trip, and the results tables (late fusion and the feature cache the script uses are the library's:
tests/test_model_fusion.py, tests/test_model_feature_cache.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.records import Item

ROOT = Path(__file__).resolve().parents[1]


def _tools():
    spec = importlib.util.spec_from_file_location("mini_tools", ROOT / "scripts" / "mini_tools.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mini_tools"] = mod
    spec.loader.exec_module(mod)
    return mod


def _img(color: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (40, 40), color)
    img.paste((255 - color[0], color[1], 90), (5, 5, 25, 30))
    return img


def test_wordnet_beir_folders_are_split_disjoint(tmp_path):
    from mmembed.data.offline.assets import AssetMissingError, find_assets

    try:
        find_assets()
    except AssetMissingError as e:
        pytest.fail(f"offline assets missing on this machine: {e}")
    tools = _tools()
    tr = tools.wordnet_beir(tmp_path / "tr", 300, "train")
    te = tools.wordnet_beir(tmp_path / "te", 100, "test")
    assert tr["queries"] == 300 and te["queries"] == 100
    q_tr = [
        json.loads(x)["_id"] for x in (tmp_path / "tr" / "queries.jsonl").read_text().splitlines()
    ]
    q_te = [
        json.loads(x)["_id"] for x in (tmp_path / "te" / "queries.jsonl").read_text().splitlines()
    ]
    assert not set(q_tr) & set(q_te)
    from mmembed.data.beir import read_beir
    from mmembed.data.errors import ErrorLog

    data = read_beir(tmp_path / "te", "test", ErrorLog(strict=True))
    assert len(data.queries) == 100
    assert all(len(v) == 1 and next(iter(v)) in data.corpus for v in data.qrels.values())


def test_delta_round_trip_on_the_real_preset(tmp_path):
    torch.set_num_threads(2)
    from mmembed.model import load_embedder
    from mmembed.model.delta import is_delta_folder
    from mmembed.model.delta_export import export_delta

    emb = load_embedder("mmembed-mini-latent", device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    sd = emb.state_dict()
    with torch.no_grad():
        proj = next(k for k in sd if "multi_modal_projector" in k and k.endswith("weight"))
        sd[proj].add_(0.01 * torch.randn(sd[proj].shape, generator=g))
        lin = next(k for k in sd if k.endswith("attention.self.query.weight"))
        out_f, in_f = sd[lin].shape
        up = torch.randn(out_f, 2, generator=g) * 0.05  # (out, 2)
        sd[lin].add_(up @ torch.randn(2, in_f, generator=g))  # a rank-2 change, like merged LoRA
    info = export_delta(emb, tmp_path / "m", base="mmembed-mini-latent", rank=4)
    assert is_delta_folder(tmp_path / "m")
    assert info["tensors"]["lowrank"] == 1
    assert info["tensors"]["full"] >= 1  # the projector, and the unseeded pooler of the preset
    assert info["bytes"] < 15_000_000  # pooler (~10 MB) + projector in full; MiniLM as factors
    assert info["max_embedding_difference"] < 1e-4
    again = load_embedder(str(tmp_path / "m"), device="cpu")  # through the registry
    items = [Item("a red square", None), Item(None, _img((200, 0, 0)))]
    np.testing.assert_allclose(
        again.encode_candidates(items, show_progress=False),
        emb.encode_candidates(items, show_progress=False),
        atol=1e-4,
    )
    (tmp_path / "m" / "delta.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="delta.safetensors"):
        load_embedder(tmp_path / "m")


def test_tables_from_a_run_folder(tmp_path):
    tools = _tools()
    runs = tmp_path / "runs"
    res = {
        "means": {"local": 40.0, "global": 30.0},
        "error_rates": {"global": {"wrong_modality": 12.5}},
        "settings": {"fingerprint": "sha256:ab", "seconds": 3.0},
        "results": [
            {"dataset": "NotoEmoji", "task_id": t, "system": s, "queries": 10, "recall": {"R@5": v}}
            for t, v in ((0, 50.0), (7, 20.0), (8, 40.0))
            for s in ("local", "global")
        ],  # fmt: skip
    }
    (runs / "eval" / "hard" / "beir").mkdir(parents=True)
    (runs / "eval" / "hard" / "results.json").write_text(json.dumps(res))
    (runs / "eval" / "hard" / "beir" / "beir_test.json").write_text(
        json.dumps({"nDCG@10": 0.5, "queries": 7})
    )
    (runs / "times.tsv").write_text("train_hard\t12\ntotal\t99\n")
    md_path = tools.write_tables(runs, tmp_path / "out")[1]
    got = json.loads((tmp_path / "out" / "results.json").read_text())["systems"]["hard"]
    assert got["composed_local"] == pytest.approx(30.0)
    assert got["wrong_modality_global"] == 12.5 and got["ndcg10"] == 50.0
    md = md_path.read_text()
    assert "| hard | 40.0 | 30.0 | 30.0 | 30.0 | 12.5 | 50.0 |" in md
    assert "| total | 99 |" in md


def test_tables_list_other_seed_runs_after_their_system(tmp_path):
    tools = _tools()
    runs = tmp_path / "runs"
    res = {
        "means": {"local": 1.0, "global": 2.0},
        "error_rates": {"global": {"wrong_modality": 3.0}},
        "settings": {},
        "results": [],
    }
    for name in ("random", "random_s2", "random_s1", "score_fusion_s1", "nosuch_s1"):
        (runs / "eval" / name).mkdir(parents=True)
        (runs / "eval" / name / "results.json").write_text(json.dumps(res))
    got = tools.collect(runs)["systems"]
    assert list(got) == ["random", "random_s1", "random_s2", "score_fusion_s1"]
    assert got["random_s2"]["seed"] == 2 and got["random"]["seed"] == 0
    assert got["score_fusion_s1"]["config"] == "configs/mini/score_fusion.yaml + seed=1"
