"""The Qwen-VL backbone on tiny random Qwen2-VL / Qwen2.5-VL / Qwen3-VL configs (hidden 32, 2
layers, 2-block vision towers): dynamic resolution, padding, pooling, the causal switch, M-RoPE
vs sequential positions, save/load and the released-name table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.records import Item
from mmembed.model.embedder import Embedder, WeightsMismatchError
from mmembed.model.qwen_vl import normalise_qwen_name, smart_resize
from mmembed.testing.tiny_qwen_vl import tiny_qwen_embedder, tiny_qwen_hf_config

torch.set_num_threads(1)
FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


def _items() -> list[Item]:
    return [
        Item("a cat on a mat", None),
        Item("a dog on the grass, running fast", _image(130, 90)),
        Item(None, _image(60, 200, seed=1)),
        Item("x", None),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_at_a_time(family):
    emb = tiny_qwen_embedder(family)
    items = _items()
    batch = emb.encode_candidates(items, batch_size=4, show_progress=False)
    alone = np.concatenate([emb.encode_candidates([it], show_progress=False) for it in items])
    assert batch.shape == (4, 32)
    np.testing.assert_allclose(batch, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1, atol=1e-5)
    # different items differ
    assert np.abs(batch[0] - batch[3]).max() > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_visual_tokens_follow_the_image_size(family):
    emb = tiny_qwen_embedder(family, max_tokens=16)
    factor = emb.backbone.factor
    small, wide = _image(40, 30), _image(400, 100)
    counts = emb.backbone.image_token_counts([small, wide])
    for img, n in zip([small, wide], counts, strict=True):
        h, w = smart_resize(img.height, img.width, factor, 4 * factor**2, 16 * factor**2)
        assert n == (h // factor) * (w // factor)
        assert 4 <= n <= 16
    batch = emb.collate([Item("a", small), Item("b", wide)], is_query=False)
    image_id = emb.image_token_id
    assert [int((row == image_id).sum()) for row in batch["input_ids"]] == counts
    grid = batch["image_grid_thw"]  # (2, 3)
    assert grid.shape == (2, 3)
    assert int(grid.prod(-1).sum()) == batch["pixel_values"].shape[0]  # one row per patch


def test_smart_resize_keeps_bounds_and_multiples():
    for h, w in [(45, 70), (410, 530), (900, 1300), (28, 28), (3000, 20)]:
        rh, rw = smart_resize(h, w, 28, 256 * 784, 1280 * 784)
        assert rh % 28 == 0 and rw % 28 == 0
        assert 256 * 784 <= rh * rw <= 1280 * 784 or max(h, w) / min(h, w) > 100
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 5000, 28, 784, 1280 * 784)


@pytest.mark.parametrize("family", FAMILIES)
def test_bidirectional_switch(family):
    """Causal: an earlier token's output ignores later tokens; bidirectional: it does not."""
    for bidirectional in (False, True):
        emb = tiny_qwen_embedder(family, bidirectional=bidirectional)
        a = emb.collate([Item("a red apple", None)], is_query=False)
        b = emb.collate([Item("a red appla", None)], is_query=False)
        with torch.no_grad():
            ha = emb.backbone(**{k: v for k, v in a.items() if k != "pool_mask"})
            hb = emb.backbone(**{k: v for k, v in b.items() if k != "pool_mask"})
        first_diff = int((a["input_ids"][0] != b["input_ids"][0]).nonzero()[0])
        early = (ha[0, : first_diff - 1] - hb[0, : first_diff - 1]).abs().max().item()
        if bidirectional:
            assert early > 1e-4
        else:
            assert early < 1e-6


def test_mrope_and_sequential_positions_differ_only_with_images():
    torch.manual_seed(0)
    mrope = tiny_qwen_embedder("qwen2_vl", positions="mrope")
    seq = tiny_qwen_embedder("qwen2_vl", positions="sequential")
    text = [Item("only words here", None)]
    image = [Item("words", _image(100, 70))]
    np.testing.assert_allclose(
        mrope.encode_candidates(text, show_progress=False),
        seq.encode_candidates(text, show_progress=False),
        atol=1e-6,
    )
    diff = np.abs(
        mrope.encode_candidates(image, show_progress=False)
        - seq.encode_candidates(image, show_progress=False)
    ).max()
    assert diff > 1e-3


def test_mean_pooling_leaves_the_instruction_out():
    emb = tiny_qwen_embedder("qwen2_vl", pooler="mean")
    batch = emb.collate([Item("a cat", None)], instructions=["Find the picture."], is_query=True)
    attn, pool = batch["attention_mask"][0], batch["pool_mask"][0]
    n_instr = int(attn.sum() - pool.sum())
    prefix = "<|im_start|>system\nFind the picture.<|im_end|>\n<|im_start|>user\n"
    assert n_instr == len(emb.tokenizer(prefix)["input_ids"])
    assert int(pool[:n_instr].sum()) == 0 and int(pool[n_instr:].sum()) == int(pool.sum())


def test_instruction_changes_the_query_and_candidates_ignore_it():
    emb = tiny_qwen_embedder("qwen2_vl")
    q = [Item("a cat", None)]
    a = emb.encode_queries(q, instructions="Find a photo.", show_progress=False)
    b = emb.encode_queries(q, instructions="Find a caption.", show_progress=False)
    assert np.abs(a - b).max() > 1e-3


def test_save_and_load_round_trip(tmp_path):
    emb = tiny_qwen_embedder("qwen2_5_vl")
    items = _items()
    before = emb.encode_candidates(items, show_progress=False)
    emb.save_pretrained(tmp_path / "m")
    again = Embedder.from_pretrained(tmp_path / "m", device="cpu", dtype="float32")
    np.testing.assert_allclose(
        again.encode_candidates(items, show_progress=False), before, atol=1e-6
    )
    assert again.fingerprint == emb.fingerprint
    assert again.config.backbone["type"] == "qwen_vl"


def test_released_name_table_both_layouts():
    assert normalise_qwen_name("model.layers.0.mlp.up_proj.weight") == (
        "language_model.layers.0.mlp.up_proj.weight"
    )
    assert (
        normalise_qwen_name("visual.blocks.0.attn.qkv.weight") == "visual.blocks.0.attn.qkv.weight"
    )
    assert normalise_qwen_name("model.language_model.norm.weight") == "language_model.norm.weight"
    assert normalise_qwen_name("model.visual.merger.mlp.0.bias") == "visual.merger.mlp.0.bias"
    assert normalise_qwen_name("lm_head.weight") is None


def _tiny_hf_folder(tmp_path, family="qwen2_vl"):
    """A transformers *ForConditionalGeneration saved by the installed transformers (5.x layout)."""
    import transformers

    from mmembed.testing.tiny_qwen_vl import tiny_qwen_tokenizer

    tok = tiny_qwen_tokenizer()
    cfg_cls, gen_cls = {
        "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration"),
        "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration"),
    }[family]
    cfg = getattr(transformers, cfg_cls)(**tiny_qwen_hf_config(family, tok))
    torch.manual_seed(3)
    model = getattr(transformers, gen_cls)(cfg)
    folder = tmp_path / f"hf_{family}"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_a_transformers_folder_loads_through_a_preset(tmp_path, family):
    from mmembed.model import load_embedder

    folder, model = _tiny_hf_folder(tmp_path, family)
    preset = "gme-qwen2-vl-2b" if family == "qwen2_vl" else "qwen3-vl-embedding-2b"
    emb = load_embedder(f"{preset}:{folder}", device="cpu", dtype="float32")
    own = emb.backbone.state_dict()
    ref = model.model.state_dict()  # (language_model.*, visual.*)
    assert set(own) == set(ref)
    for k, v in ref.items():
        if k in own:
            assert torch.equal(own[k], v), k
    out = emb.encode_candidates([Item("hello", _image(80, 60))], show_progress=False)
    assert out.shape == (1, 32)


def test_a_missing_weight_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    from mmembed.model import load_embedder

    folder, _ = _tiny_hf_folder(tmp_path)
    files = sorted(folder.glob("*.safetensors"))
    state = load_file(str(files[0]))
    dropped = next(k for k in state if "layers.1.mlp.down_proj" in k)
    del state[dropped]
    save_file(state, str(files[0]), metadata={"format": "pt"})
    with pytest.raises(WeightsMismatchError, match="language_model.layers.1.mlp.down_proj.weight"):
        load_embedder(f"gme-qwen2-vl-2b:{folder}", device="cpu", dtype="float32")


def test_unknown_family_and_positions_are_refused():
    from mmembed.model.embedder import EmbedderConfig

    tok_emb = tiny_qwen_embedder("qwen2_vl")
    cfg = EmbedderConfig(**{**tok_emb.config.to_dict(), "name": "x"})
    with pytest.raises(ValueError, match="unknown Qwen-VL family"):
        Embedder.build(
            EmbedderConfig(**{**cfg.to_dict(), "backbone": {**cfg.backbone, "family": "qwen9"}}),
            tokenizer=tok_emb.tokenizer,
            pretrained=False,
        )
    with pytest.raises(ValueError, match="unknown positions"):
        Embedder.build(
            EmbedderConfig(**{**cfg.to_dict(), "backbone": {**cfg.backbone, "positions": "x"}}),
            tokenizer=tok_emb.tokenizer,
            pretrained=False,
        )


def test_a_preset_without_its_download_says_how_to_pass_a_folder(monkeypatch):
    from mmembed.model import load_embedder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-mmembed-test-cache")
    with pytest.raises(FileNotFoundError, match="gme-qwen2-vl-2b:/path/to/folder"):
        load_embedder("gme-qwen2-vl-2b", device="cpu")


def _preset_config(preset, folder):
    import copy

    from mmembed.model.embedder import EmbedderConfig
    from mmembed.model.qwen_presets import QWEN_PRESETS, with_folder

    return EmbedderConfig(
        name=preset, **with_folder(copy.deepcopy(QWEN_PRESETS[preset]), str(folder))
    )


def test_a_sharded_folder_loads_shard_by_shard_in_the_target_dtype(tmp_path):
    """A folder saved in small shards (index json) loads in fp32 exactly as the single-file
    folder does through load_embedder; in bf16 every parameter is bf16 and the embeddings stay
    close to fp32."""
    from mmembed.model import load_embedder
    from mmembed.model.qwen_presets import load_released
    from mmembed.model.qwen_vl import qwen_weight_map
    from mmembed.testing.tiny_qwen_vl import tiny_qwen_tokenizer

    folder, model = _tiny_hf_folder(tmp_path)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="20KB")
    tiny_qwen_tokenizer().save_pretrained(sharded)
    shards = sorted(sharded.glob("*.safetensors"))
    assert len(shards) > 3 and (sharded / "model.safetensors.index.json").is_file()
    assert len(set(qwen_weight_map(sharded).values())) == len(shards)

    items = [Item("hello", _image(80, 60)), Item("a longer caption of words", None)]
    one_file = load_embedder(f"gme-qwen2-vl-2b:{folder}", device="cpu", dtype="float32")
    ref = one_file.encode_candidates(items, show_progress=False)
    fp32 = load_released(_preset_config("gme-qwen2-vl-2b", sharded), device="cpu", dtype="fp32")
    assert fp32.dtype == torch.float32
    for k, v in model.model.state_dict().items():
        assert torch.equal(fp32.backbone.state_dict()[k], v), k
    np.testing.assert_array_equal(fp32.encode_candidates(items, show_progress=False), ref)

    bf16 = load_released(_preset_config("gme-qwen2-vl-2b", sharded), device="cpu", dtype="bf16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    for k, v in model.model.state_dict().items():
        assert torch.equal(bf16.backbone.state_dict()[k], v.to(torch.bfloat16)), k
    out = bf16.encode_candidates(items, show_progress=False)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.abs(out - ref).max() < 5e-2
    assert (out * ref).sum(1).min() > 0.99  # cosine to the fp32 embedding


def test_sharded_mismatches_are_all_named_before_any_tensor_is_read(tmp_path, monkeypatch):
    """A shard missing a weight the index lists and a mis-shaped tensor are reported together,
    from the headers alone (reading a tensor would fail the test)."""
    import json

    from safetensors.torch import load_file, save_file

    from mmembed.model import shards
    from mmembed.model.qwen_presets import load_released
    from mmembed.testing.tiny_qwen_vl import tiny_qwen_tokenizer

    _, model = _tiny_hf_folder(tmp_path)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="20KB")
    tiny_qwen_tokenizer().save_pretrained(sharded)
    weight_map = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    drop = next(k for k in weight_map if "layers.1.mlp.down_proj" in k)
    bend = next(k for k in weight_map if k.endswith("layers.0.self_attn.q_proj.weight"))
    for name, change in ((drop, None), (bend, "bend")):
        path = sharded / weight_map[name]
        state = load_file(str(path))
        if change is None:
            del state[name]
        else:
            state[name] = state[name][:-1].clone()
        save_file(state, str(path), metadata={"format": "pt"})

    def no_reads(*_a, **_k):
        raise AssertionError("a tensor was read before the names and shapes were checked")

    monkeypatch.setattr(shards, "iter_tensors", no_reads)  # qwen_vl imports it at call time
    with pytest.raises(WeightsMismatchError) as err:
        load_released(_preset_config("gme-qwen2-vl-2b", sharded), device="cpu", dtype="bf16")
    msg = str(err.value)
    assert "missing (1): language_model.layers.1.mlp.down_proj.weight" in msg
    assert "wrong shape (1): language_model.layers.0.self_attn.q_proj.weight" in msg
