"""The tiny LLaVA-Next backbone (global view and anyres), llava-hf folders in the transformers
4.4x, 4.5x and 5.x key layouts, and the full-size MM-Embed release on the meta device (names,
shapes, parameter count). The release folder itself is golden-tested in
test_model_mmembed_release.py against the reference code's own output."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.records import Item
from mmembed.model import load_embedder
from mmembed.testing.tiny_embedders import byte_tokenizer, tiny_embedder, tiny_llava_next_config

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["llava_next", "llava_next_anyres"])
def test_tiny_llava_next_backbone(kind, tmp_path):
    emb = tiny_embedder(0, kind)
    wide = Image.new("RGB", (60, 30), (200, 0, 0))
    items = [Item("a dog"), Item(None, wide), Item("x", Image.new("RGB", (30, 30), (0, 200, 0)))]
    batch = emb.collate(items, instructions=["Find", None, "F"])
    counts = (batch["input_ids"] == emb.image_token_id).sum(1).tolist()
    if kind == "llava_next":  # 2 x 2 grid + image_newline
        assert counts == [0, 5, 5] and batch["pixel_values"].shape == (2, 3, 28, 28)
    else:  # anyres: base view + tiles with a newline per row; the count depends on the shape
        assert counts[0] == 0 and counts[1] != counts[2] and min(counts[1:]) > 4
        assert batch["image_sizes"].tolist() == [[30, 60], [30, 30]]
    v = emb.encode_queries(items, instructions=["Find", None, "F"], show_progress=False)
    for i, (it, ins) in enumerate(zip(items, ["Find", None, "F"], strict=True)):
        one = emb.encode_queries([it], instructions=[ins], show_progress=False)
        assert np.abs(one[0] - v[i]).max() < 1e-5
    emb.save_pretrained(tmp_path / "m")
    back = load_embedder(tmp_path / "m", device="cpu")
    assert np.array_equal(
        back.encode_queries(items, instructions=["Find", None, "F"], show_progress=False), v
    )


def test_llava_hf_folder_loads_as_backbone(tmp_path):
    """A LlavaNextForConditionalGeneration folder saved by transformers (its own key layout,
    LM head included) loads into the LLaVA-Next backbone with every weight in place."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    from mmembed.model.embedder import Embedder, EmbedderConfig

    torch.manual_seed(0)
    ref = LlavaNextForConditionalGeneration(LlavaNextConfig(**tiny_llava_next_config()))
    ref.save_pretrained(tmp_path)
    byte_tokenizer(add_eos_in_template=False).save_pretrained(tmp_path)
    cfg = EmbedderConfig(
        name="llava-hf-tiny",
        backbone={"type": "llava_next", "source": str(tmp_path), "bidirectional": True},
        pooler={"type": "mean"},
        tokenizer=str(tmp_path),
    )
    emb = Embedder.build(cfg)
    ours, theirs = emb.backbone.state_dict(), ref.model.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert "source" not in emb.config.backbone  # the saved config rebuilds without the folder


# ---- the full-size MM-Embed release on the meta device ----------------------------------------
# The release's index json is not available offline, so its names and shapes are derived here from
# the reference modeling code (NVMMEmbedModel on transformers 4.43: CLIPVisionModel, the LLaVA-Next
# projector and image_newline, NV-Embed's bare Mistral and LatentAttentionModel) and the public
# configs of llava-v1.6-mistral-7b-hf (vision, projector) and NV-Embed-v1 (Mistral-7B, latents).
CLIP_L_336 = {
    "model_type": "clip_vision_model",
    "hidden_size": 1024,
    "image_size": 336,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
}
RELEASE_CONFIG = {  # config.json of nvidia/MM-Embed (LLaVA-Next + the reference's own keys)
    "model_type": "llava_next",
    "architectures": ["NVMMEmbedModel"],
    "vision_config": CLIP_L_336,
    "text_config": {"model_type": "mistral", "vocab_size": 32064, "rope_theta": 1000000.0},
    "image_token_index": 32000,
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "projector_hidden_act": "gelu",
    "retriever": "nvidia/NV-Embed-v1",
    "padding_side": "right",
    "add_eos_token": True,
    "global_image_patch_only": True,
}
NV_EMBED_V1 = {  # config.json of nvidia/NV-Embed-v1
    "model_type": "nvembed",
    "latent_attention_config": {
        "model_type": "latent_attention",
        "num_latents_value": 512,
        "num_cross_heads": 8,
        "hidden_dim": 4096,
        "latent_dim": 4096,
        "cross_dim_head": 4096,
        "output_normalize": True,
    },
    "text_config": {
        "model_type": "bidir_mistral",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
    },
}


def release_shapes() -> dict[str, tuple[int, ...]]:
    """Every weight name of the released safetensors and its shape, written out by hand."""
    d, v, ff, vff, kv = 4096, 1024, 14336, 4096, 1024  # LM, vision, MLPs, 8 kv heads x 128
    s: dict[str, tuple[int, ...]] = {}
    vt = "vision_tower.vision_model."
    s[vt + "embeddings.class_embedding"] = (v,)
    s[vt + "embeddings.patch_embedding.weight"] = (v, 3, 14, 14)
    s[vt + "embeddings.position_embedding.weight"] = (24 * 24 + 1, v)
    for n in ("pre_layrnorm", "post_layernorm"):
        s[f"{vt}{n}.weight"] = s[f"{vt}{n}.bias"] = (v,)
    for i in range(24):
        p = f"{vt}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[f"{p}self_attn.{proj}.weight"], s[f"{p}self_attn.{proj}.bias"] = (v, v), (v,)
        for n in ("layer_norm1", "layer_norm2"):
            s[f"{p}{n}.weight"] = s[f"{p}{n}.bias"] = (v,)
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = (vff, v), (vff,)
        s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = (v, vff), (v,)
    s["multi_modal_projector.linear_1.weight"], s["multi_modal_projector.linear_1.bias"] = (
        (d, v),
        (d,),
    )
    s["multi_modal_projector.linear_2.weight"], s["multi_modal_projector.linear_2.bias"] = (
        (d, d),
        (d,),
    )
    s["image_newline"] = (d,)
    s["language_model.embed_tokens.weight"] = (32000, d)
    s["language_model.norm.weight"] = (d,)
    for i in range(32):
        p = f"language_model.layers.{i}."
        s[p + "self_attn.q_proj.weight"] = s[p + "self_attn.o_proj.weight"] = (d, d)
        s[p + "self_attn.k_proj.weight"] = s[p + "self_attn.v_proj.weight"] = (kv, d)
        s[p + "mlp.gate_proj.weight"] = s[p + "mlp.up_proj.weight"] = (ff, d)
        s[p + "mlp.down_proj.weight"] = (d, ff)
        s[p + "input_layernorm.weight"] = s[p + "post_attention_layernorm.weight"] = (d,)
    la, inner = "latent_attention_model.", 8 * 4096
    s[la + "latents"] = (512, d)
    for blk in ("0.norm", "0.norm_context", "1.norm"):
        s[f"{la}cross_attend_blocks.{blk}.weight"] = s[f"{la}cross_attend_blocks.{blk}.bias"] = (d,)
    s[la + "cross_attend_blocks.0.fn.to_q.weight"] = (inner, d)
    s[la + "cross_attend_blocks.0.fn.to_kv.weight"] = (2 * inner, d)
    s[la + "cross_attend_blocks.0.fn.to_out.weight"] = (d, inner)
    s[la + "cross_attend_blocks.1.fn.net.0.weight"] = (2 * 4 * d, d)
    s[la + "cross_attend_blocks.1.fn.net.0.bias"] = (2 * 4 * d,)
    s[la + "cross_attend_blocks.1.fn.net.2.weight"] = (d, 4 * d)
    s[la + "cross_attend_blocks.1.fn.net.2.bias"] = (d,)
    return s


def test_full_size_mmembed_on_meta_device(tmp_path):
    """The real MM-Embed dimensions (hidden 4096, 32 layers, 512 latents, CLIP ViT-L/14-336)
    built on the meta device from the two configs, as load_mmembed builds them: every published
    name and shape is accepted, and the parameter count is the release's (~8.18B)."""
    from pathlib import Path

    from mmembed.model.embedder import Embedder, EmbedderConfig, WeightsMismatchError
    from mmembed.model.mmembed_checkpoint import check_release_names, load_mmembed_tokenizer
    from mmembed.model.mmembed_release import release_config

    fixture = Path(__file__).parent / "fixtures" / "mmembed_release" / "MM-Embed"
    tok = load_mmembed_tokenizer(fixture)  # the release's vocabulary: 32000 + <image> + <pad>
    fields = release_config(tmp_path, json.loads(json.dumps(RELEASE_CONFIG)), NV_EMBED_V1, {})
    with torch.device("meta"):
        emb = Embedder.build(EmbedderConfig(**fields), tokenizer=tok, pretrained=False)
    shapes = release_shapes()
    check_release_names(emb, shapes, source="nvidia/MM-Embed (derived)")  # raises on any mismatch
    n_release = sum(int(np.prod(s)) for s in shapes.values())
    n_ours = sum(p.numel() for p in emb.parameters())
    assert n_ours == n_release and abs(n_release - 8.18e9) < 0.01e9, n_release
    assert emb.num_image_tokens == 577 and emb.dim == 4096
    assert emb.backbone.language_model.config.rope_parameters["rope_theta"] == 10000.0
    shapes["image_newline"] = (4095,)
    with pytest.raises(WeightsMismatchError, match=r"wrong shape \(1\): image_newline"):
        check_release_names(emb, shapes, source="x")


# ---- llava-hf folders: a real transformers 4.43 save, and the 4.5x layout derived from it ------
LLAVA_443 = Path(__file__).parent / "fixtures" / "mmembed_release" / "llava-hf-4.43"
LAYOUT_45X = (  # transformers >= 4.52 nests the towers under "model." and lifts the LM head
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model.language_model."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
    ("image_newline", "model.image_newline"),
)


@pytest.mark.parametrize("layout", ["4.43-saved", "4.5x"])
def test_llava_hf_layouts_load_and_match_the_reference(layout, tmp_path):
    """A LlavaNextForConditionalGeneration folder saved by transformers 4.43.4 (see the fixture
    README) loads into the backbone with every weight in place, and gives the hidden states the
    4.43 model gave: text only (causal) and one image in anyres (tiles + newlines)."""
    from safetensors.torch import load_file, save_file

    from mmembed.model.llava_next import LlavaNextBackbone, rename, to_llava_hf_name

    folder = LLAVA_443
    stored = load_file(str(LLAVA_443 / "model.safetensors"))
    assert any(k.startswith("vision_tower.vision_model.") for k in stored)  # the 4.4x layout
    if layout == "4.5x":
        folder = tmp_path / "llava-4.5x"
        folder.mkdir()
        (folder / "config.json").write_text((LLAVA_443 / "config.json").read_text())
        save_file(
            {rename(k, LAYOUT_45X): v for k, v in stored.items()}, str(folder / "x.safetensors")
        )
    gold = load_file(str(LLAVA_443.parent / "llava-hf-4.43-goldens.safetensors"))
    image_id = int(gold["image_ids"][0, 2])
    cfg = {
        "type": "llava_next",
        "source": str(folder),
        "global_only": False,
        "bidirectional": False,
    }
    bb, _ = LlavaNextBackbone.build(cfg, pretrained=True, image_token_id=image_id)
    for k, v in bb.state_dict().items():  # every weight from the file (the table's inverse)
        assert torch.equal(v, stored[to_llava_hf_name(k)])
    ids = gold["text_ids"]
    with torch.no_grad():
        h = bb(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert torch.allclose(h, gold["text_hidden"], atol=1e-5)
    ids = gold["image_ids"][0].tolist()
    n_vis = gold["image_hidden"].shape[1] - (len(ids) - 1)
    j = ids.index(image_id)
    expanded = torch.tensor([ids[:j] + [image_id] * n_vis + ids[j + 1 :]])  # (1, L')
    with torch.no_grad():
        h = bb(
            input_ids=expanded,
            attention_mask=torch.ones_like(expanded),
            pixel_values=gold["pixel_values"],
            image_sizes=gold["image_sizes"],
        )
    assert torch.allclose(h, gold["image_hidden"], atol=1e-5), (
        (h - gold["image_hidden"]).abs().max()
    )
    w, hgt = gold["image_sizes"][0].tolist()[::-1]
    assert bb.image_token_counts([Image.new("RGB", (w, hgt))]) == [n_vis]


def test_llava_hf_name_table_both_ways():
    """Every backbone name survives ours -> 4.4x -> ours, and every layout maps onto ours."""
    from transformers import LlavaNextConfig

    from mmembed.model.llava_next import (
        LlavaNextBackbone,
        normalise_llava_name,
        rename,
        to_llava_hf_name,
    )

    own = set(LlavaNextBackbone(LlavaNextConfig(**tiny_llava_next_config())).state_dict())
    legacy = {to_llava_hf_name(k) for k in own}
    assert {normalise_llava_name(k) for k in legacy} == own
    assert any(k.startswith("vision_tower.vision_model.") for k in legacy)
    v45 = {rename(k, LAYOUT_45X) for k in legacy} | {"lm_head.weight"}
    assert {normalise_llava_name(k) for k in v45} - {None} == own
    assert normalise_llava_name("language_model.lm_head.weight") is None
