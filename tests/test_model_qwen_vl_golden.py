"""Golden tests: released Qwen-VL embedders (GME, Qwen3-VL-Embedding, VLM2Vec) load from a folder in the
released layout and embed as their reference implementations do, to 1e-5 in fp32. Each fixture
(tests/fixtures/<model>/) holds tiny random weights written by the reference's own model
classes, and the embeddings the reference code produced from them (README.md there says how)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmembed.data.records import Item
from mmembed.model import load_embedder

FIXTURES = Path(__file__).parent / "fixtures"
# fixture folder -> preset it exercises
GOLDEN = {
    "gme_qwen2_vl": "gme-qwen2-vl-2b",
    "qwen3_vl_embedding": "qwen3-vl-embedding-2b",
    "vlm2vec_qwen2_vl": "vlm2vec-qwen2-vl-2b",
}


def model_spec(folder: Path) -> str:
    """``PRESET:FOLDER``; an adapter release (VLM2Vec) is ``PRESET:ADAPTER,BASE``."""
    if (folder / "adapter").is_dir():
        return f"{GOLDEN[folder.name]}:{folder / 'adapter'},{folder / 'base'}"
    return f"{GOLDEN[folder.name]}:{folder}"


@pytest.fixture(scope="module", params=sorted(GOLDEN))
def golden(request):
    folder = FIXTURES / request.param
    emb = load_embedder(model_spec(folder), device="cpu", dtype="float32")
    cases = json.loads((folder / "golden.json").read_text(encoding="utf-8"))["cases"]
    return folder, emb, cases


def _items(folder: Path, case: dict) -> list[Item]:
    images = case["images"] or [None] * len(case["texts"])
    return [
        Item(t, str(folder / i) if i else None) for t, i in zip(case["texts"], images, strict=True)
    ]


def _encode(emb, folder: Path, case: dict, batch_size: int) -> np.ndarray:
    items = _items(folder, case)
    if case["is_query"]:
        return emb.encode_queries(
            items, instructions=case["instruction"], batch_size=batch_size, show_progress=False
        )
    return emb.encode_candidates(items, batch_size=batch_size, show_progress=False)


def test_every_case_matches_the_reference(golden):
    folder, emb, cases = golden
    assert len(cases) >= 7
    for case in cases:
        want = np.asarray(case["embeddings"], dtype=np.float32)
        got = _encode(emb, folder, case, batch_size=8)  # the reference's batch, padded together
        assert got.shape == want.shape, case["name"]
        err = float(np.abs(got - want).max())
        assert err <= 1e-5, f"{folder.name} {case['name']}: max abs diff {err:.2e}"


def test_one_at_a_time_matches_the_reference_batch(golden):
    """Padding must not change an embedding: each item alone equals its row in the batch."""
    folder, emb, cases = golden
    case = next(c for c in cases if c["name"] == "text_query_instruction")
    want = np.asarray(case["embeddings"], dtype=np.float32)
    got = _encode(emb, folder, case, batch_size=1)
    assert float(np.abs(got - want).max()) <= 1e-5


def test_cases_are_distinct_so_the_comparison_can_fail(golden):
    """Guards the fixture: different inputs give clearly different reference embeddings, and
    the instruction changes a query's embedding."""
    folder, emb, cases = golden
    by_name = {c["name"]: np.asarray(c["embeddings"]) for c in cases}
    with_instr = by_name["text_query_instruction"][0]
    without = by_name["text_query_no_instruction"][0]
    assert np.abs(with_instr - without).max() > 1e-2
    images = by_name["image_candidates"]
    assert np.abs(images[0] - images[1]).max() > 1e-3


@pytest.fixture(scope="module")
def vlm2vec():
    folder = FIXTURES / "vlm2vec_qwen2_vl"
    emb = load_embedder(model_spec(folder), device="cpu", dtype="float32")
    cases = json.loads((folder / "golden.json").read_text(encoding="utf-8"))["cases"]
    return folder, emb, {c["name"]: c for c in cases}


def test_vlm2vec_prompts_are_the_strings_the_reference_was_given(vlm2vec):
    """The preset writes MMEB's strings, candidate instructions included (the fixture's
    ``reference_texts``; README.md there gives their sources)."""
    from mmembed.model.prompts import format_prompt

    _, emb, cases = vlm2vec
    for case in cases.values():
        images = case["images"] or [None] * len(case["texts"])
        got = [
            format_prompt(
                t, i is not None, instruction=case["instruction"], is_query=case["is_query"],
                cfg=emb.prompt,
            )[0]
            for t, i in zip(case["texts"], images, strict=True)
        ]  # fmt: skip
        assert got == case["reference_texts"], case["name"]


def test_vlm2vec_candidates_need_their_instruction(vlm2vec):
    """Without MMEB's candidate instructions, the image and image+text candidates no longer
    match the reference: the golden comparison can fail on them."""
    folder, emb, cases = vlm2vec
    saved = emb.prompt.candidate_instructions
    emb.prompt.candidate_instructions = {}
    try:
        for name in ("image_candidates", "image_text_candidates", "mixed_candidate_batch"):
            case = cases[name]
            got = _encode(emb, folder, case, batch_size=8)
            err = float(np.abs(got - np.asarray(case["embeddings"], dtype=np.float32)).max())
            assert err > 1e-3, name
    finally:
        emb.prompt.candidate_instructions = saved


def test_weights_load_from_the_released_names(golden):
    """The fixture's safetensors names are the released layout's, not mmembed's own."""
    from safetensors import safe_open

    folder, emb, _ = golden
    weights = folder / "base" if (folder / "base").is_dir() else folder
    with safe_open(str(weights / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
    assert any(n.startswith(("model.", "visual.")) for n in names)
    assert not any(n.startswith("language_model.") for n in names)
    assert emb.dim == 32
