"""Golden tests against the reference MM-Embed code: tests/fixtures/mmembed_release holds a tiny
checkpoint written in the released layout by the reference modeling file itself (transformers
4.43.4) and the reference's embeddings for each case (see its README). mmembed must load the
folder with load_embedder and reproduce every case to 1e-5 in fp32, token ids and pooling mask
included; config values must come from where the reference reads them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.records import Item
from mmembed.model import load_embedder
from mmembed.model.embedder import WeightsMismatchError
from mmembed.model.mmembed_release import (
    RetrieverConfigError,
    to_embedder_name,
    to_release_name,
)

torch.set_num_threads(1)

FIXTURE = Path(__file__).parent / "fixtures" / "mmembed_release"
FOLDER = FIXTURE / "MM-Embed"
GOLDENS = json.loads((FIXTURE / "goldens.json").read_text())
CASES = {c["name"]: c for c in GOLDENS["cases"]}
RETRIEVER_CFG = json.loads(
    next((FIXTURE / "hub").rglob("config.json")).read_text()
)  # NV-Embed's config in a hub-cache layout


@pytest.fixture
def hub_cache(monkeypatch):
    """The fixture's hub cache as the Hugging Face cache, offline (nothing is downloaded)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(FIXTURE / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return FIXTURE / "hub"


@pytest.fixture(scope="module")
def release():
    from huggingface_hub import constants

    old = constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE
    constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(FIXTURE / "hub"), True
    try:
        return load_embedder(FOLDER, device="cpu", dtype="fp32")
    finally:
        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = old


def _items(case):
    out = []
    for it in case["items"]:
        img = Image.open(FIXTURE / "images" / it["img"]).convert("RGB") if "img" in it else None
        out.append(Item(it.get("txt"), img))
    return out


def _collate(emb, case):
    items = _items(case)
    ins = [case["instruction"]] * len(items) if case["is_query"] else None
    old = emb.prompt.max_length
    emb.prompt.max_length = case["max_length"]
    try:
        return emb.collate(items, instructions=ins, is_query=case["is_query"])
    finally:
        emb.prompt.max_length = old


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_embeddings_reproduced(release, name):
    case = CASES[name]
    batch = _collate(release, case)
    with torch.no_grad():
        ours = release(batch).numpy()  # (B, dim)
    ref = np.asarray(case["embeddings"], dtype=np.float32)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-5, np.abs(ours - ref).max()
    # the same token ids as the reference's processor (one <image> before expansion), the same
    # number of leading positions left out of pooling, and 577-style image runs (grid + newline)
    n_vis = release.num_image_tokens
    for row, attn, pool, ref_ids, ref_attn, skip in zip(
        batch["input_ids"].tolist(),
        batch["attention_mask"].tolist(),
        batch["pool_mask"].tolist(),
        case["input_ids"],
        case["attention_mask"],
        case["instruction_lengths"],
        strict=True,
    ):
        real = row[: sum(attn)]
        collapsed = [t for j, t in enumerate(real) if t != 32000 or real[j - 1] != 32000]
        assert collapsed == ref_ids[: sum(ref_attn)]
        assert real.count(32000) == n_vis * ref_ids.count(32000)
        assert pool.index(1) == skip if skip else pool[0] == 1


def test_visual_tokens_are_grid_plus_newline(release):
    vc = release.backbone.config.vision_config
    assert release.num_image_tokens == (vc.image_size // vc.patch_size) ** 2 + 1


def test_config_values_come_from_where_the_reference_reads_them(release):
    lm = release.backbone.language_model.config
    text = RETRIEVER_CFG["text_config"]
    raw = json.loads((FOLDER / "config.json").read_text())
    # the language model is built from the retriever's config, not config.json's text_config
    assert raw["text_config"]["rope_theta"] != text["rope_theta"]
    rope = getattr(lm, "rope_parameters", None) or {"rope_theta": lm.rope_theta}
    assert rope["rope_theta"] == text["rope_theta"]
    assert lm.vocab_size == text["vocab_size"] and lm.num_hidden_layers == text["num_hidden_layers"]
    assert lm.sliding_window is None  # the reference's bidirectional mask has no window
    la = RETRIEVER_CFG["latent_attention_config"]
    attn = release.pooler.cross_attend_blocks[0].fn
    assert attn.heads == la["num_cross_heads"] and release.pooler.latents.shape == (
        la["num_latents_value"],
        la["latent_dim"],
    )
    assert attn.to_q.out_features == la["num_cross_heads"] * la["cross_dim_head"]
    assert release.prompt.padding_side == raw["padding_side"]
    assert release.prompt.append_eos == raw["add_eos_token"]
    pre = json.loads((FOLDER / "preprocessor_config.json").read_text())
    assert list(release.backbone.image_mean) == pre["image_mean"]
    assert not release.backbone.language_model.config.is_causal


def test_padding_side_and_eos_follow_config_json(tmp_path, hub_cache):
    folder = tmp_path / "MM-Embed"
    shutil.copytree(FOLDER, folder)
    raw = json.loads((folder / "config.json").read_text())
    raw.update(padding_side="left", add_eos_token=False)
    (folder / "config.json").write_text(json.dumps(raw))
    emb = load_embedder(folder, device="cpu", dtype="fp32")
    assert emb.prompt.padding_side == "left" and not emb.prompt.append_eos
    batch = emb.collate([Item("a"), Item("a longer text")], is_query=False)
    assert batch["attention_mask"][0, 0] == 0  # left padded
    assert emb.tokenizer.eos_token_id not in batch["input_ids"][1].tolist()


def test_release_name_table_both_ways(release):
    weight_map = json.loads((FOLDER / "model.safetensors.index.json").read_text())["weight_map"]
    own = set(release.state_dict())
    assert {to_embedder_name(n) for n in weight_map} == own
    assert all(to_release_name(to_embedder_name(n)) == n for n in weight_map)
    assert all(to_embedder_name(to_release_name(k)) == k for k in own)
    assert any(n.startswith("vision_tower.vision_model.") for n in weight_map)


def test_missing_retriever_offline_names_the_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RetrieverConfigError) as info:
        load_embedder(FOLDER, device="cpu")
    msg = str(info.value)
    assert "nvidia/NV-Embed-v1" in msg and "config.json" in msg and "retriever=" in msg


def test_retriever_as_a_local_folder(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from mmembed.model.mmembed_checkpoint import load_mmembed

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    folder = tmp_path / "MM-Embed"
    shutil.copytree(FOLDER, folder)
    (folder / "nv-embed").mkdir()
    (folder / "nv-embed" / "config.json").write_text(json.dumps(RETRIEVER_CFG))
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "retriever": "nv-embed"}))
    emb = load_embedder(folder, device="cpu", dtype="fp32")  # relative to the folder
    case = CASES["composed_query"]
    with torch.no_grad():
        v = emb(_collate(emb, case)).numpy()
    assert np.abs(v - np.asarray(case["embeddings"])).max() <= 1e-5
    # an explicit override wins over config.json's entry
    other = load_mmembed(FOLDER, retriever=folder / "nv-embed", device="cpu", dtype="fp32")
    assert other.dim == emb.dim


def test_a_mismatch_is_one_error_listing_every_name(tmp_path, hub_cache):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "MM-Embed"
    shutil.copytree(FOLDER, folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["latent_attention_model.latents"]
    state = load_file(str(folder / shard))
    state.pop("latent_attention_model.latents")
    state["lm_head.weight"] = torch.zeros(2, dtype=torch.float16)
    state["language_model.rotary_emb.inv_freq"] = torch.zeros(2, dtype=torch.float16)
    bias = "multi_modal_projector.linear_2.bias"
    bias_shard = index["weight_map"][bias]
    if bias_shard == shard:
        state[bias] = torch.zeros(3, dtype=torch.float16)
    save_file(state, str(folder / shard), metadata={"format": "pt"})
    if bias_shard != shard:
        other = load_file(str(folder / bias_shard))
        other[bias] = torch.zeros(3, dtype=torch.float16)
        save_file(other, str(folder / bias_shard), metadata={"format": "pt"})
    wm = index["weight_map"]
    wm.pop("latent_attention_model.latents")
    wm["lm_head.weight"] = shard
    wm["language_model.rotary_emb.inv_freq"] = shard
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsMismatchError) as info:
        load_embedder(folder, device="cpu")
    msg = str(info.value)
    assert "missing (1): latent_attention_model.latents" in msg
    assert "unexpected (1): lm_head.weight" in msg  # inv_freq is an ignorable buffer
    assert "wrong shape (1): multi_modal_projector.linear_2.bias: checkpoint (3,)" in msg


def test_loads_shard_by_shard_in_the_target_dtype(monkeypatch, hub_cache):
    """The model is built in bf16 before any tensor is read, and tensors are copied in one by
    one: no fp32 copy of the weights exists at any point."""
    from mmembed.model import mmembed_checkpoint

    seen = {}
    real_build = mmembed_checkpoint.Embedder.build

    def build(*a, **k):
        emb = real_build(*a, **k)
        seen["dtypes"] = {p.dtype for p in emb.parameters()}
        return emb

    monkeypatch.setattr(mmembed_checkpoint.Embedder, "build", build)
    opened = []
    real_iter = mmembed_checkpoint.iter_tensors

    def iter_tensors(path, weight_map):
        for name, t in real_iter(path, weight_map):
            opened.append(t.dtype)
            yield name, t

    monkeypatch.setattr(mmembed_checkpoint, "iter_tensors", iter_tensors)
    emb = load_embedder(FOLDER, device="cpu", dtype="bf16")
    assert seen["dtypes"] == {torch.bfloat16}
    assert {p.dtype for p in emb.parameters()} == {torch.bfloat16}
    assert set(opened) == {torch.float16}  # the stored dtype, never upcast on the way in
    v = emb.encode_candidates(_items(CASES["image_text_candidate"]), show_progress=False)
    ref = np.asarray(CASES["image_text_candidate"]["embeddings"])
    assert float((v * ref).sum()) > 0.99  # bf16 stays close to the fp32 reference


def test_encode_api_and_save_roundtrip_match_the_reference(release, tmp_path):
    """encode_* (length-sorted batches of 2) gives each item the reference's embedding, and a
    save_pretrained copy of the loaded release reloads to the same vectors."""
    case = CASES["mixed_batch_candidates"]
    ref = np.asarray(case["embeddings"])
    v = release.encode_candidates(_items(case), batch_size=2, show_progress=False)
    assert np.abs(v - ref).max() <= 1e-5
    q = CASES["mixed_batch_queries"]
    vq = release.encode_queries(
        _items(q), instructions=q["instruction"], batch_size=1, show_progress=False
    )
    assert np.abs(vq - np.asarray(q["embeddings"])).max() <= 1e-5
    release.save_pretrained(tmp_path / "saved")
    back = load_embedder(tmp_path / "saved", device="cpu", dtype="fp32")
    assert np.abs(back.encode_candidates(_items(case), show_progress=False) - ref).max() <= 1e-5


def test_left_padding_quirk_is_not_reproduced(release):
    """The one reference behaviour not matched: transformers 4.43's merge left-pads a batch whose
    text rows are unpadded but hold different numbers of images, and the instruction mask then
    covers padding. mmembed gives every row its alone-in-a-batch embedding."""
    q = GOLDENS["left_padding_quirk"]
    items = [
        Item(it["txt"], Image.open(FIXTURE / "images" / it["img"]).convert("RGB"))
        if "img" in it
        else Item(it["txt"])
        for it in q["items"]
    ]
    batch = release.collate(items, instructions=[q["instruction"]] * 2, is_query=True)
    assert int(batch["attention_mask"][0].sum()) < batch["attention_mask"].shape[1]  # right pad
    with torch.no_grad():
        ours = release(batch).numpy()
    alone, ref_batch = np.asarray(q["alone"]), np.asarray(q["batch"])
    assert np.abs(ours - alone).max() <= 1e-5
    assert np.abs(ref_batch[0] - alone[0]).max() > 1e-2  # the reference's batch effect


def test_instruction_verbatim_in_reference_mode():
    """As the reference: the instruction is not stripped and "" still adds the prefix; the
    project default strips and treats "" as no instruction."""
    from mmembed.model.prompts import PromptConfig, format_prompt

    ref = PromptConfig(strip_instruction=False, instruction_mask="reference")
    assert format_prompt("dog", False, instruction="", cfg=ref)[0] == "Instruct: \nQuery: dog"
    assert format_prompt("dog", False, instruction=" Do. ", cfg=ref)[0].startswith(
        "Instruct:  Do. \nQuery: "
    )
    assert format_prompt("dog", False, instruction=None, cfg=ref)[0] == "Query: dog"
    assert format_prompt("dog", False, instruction="")[0] == "Query: dog"
    assert format_prompt("dog", False, instruction=" Do. ")[0] == "Instruct: Do.\nQuery: dog"
