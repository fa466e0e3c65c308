"""MM-Embed checkpoint loading from a tiny model written in the published layout (LLaVA-Next
config + four safetensors shards + index json; transformers' own LLaVA-Next weight names plus
NV-Embed latent-attention names), and the tiny LLaVA-Next backbone (global view and anyres)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mmembed.data.records import Item
from mmembed.model import load_embedder
from mmembed.model.embedder import WeightsMismatchError
from mmembed.model.testing import byte_tokenizer, tiny_embedder, tiny_llava_next_config

torch.set_num_threads(1)

LATENT_NAMES = {  # name -> shape for latents R=6, width C=32, heads 2 x 16, hidden D=32, mult 2
    "latent_attention_model.latents": (6, 32),
    "latent_attention_model.cross_attend_blocks.0.norm.weight": (32,),
    "latent_attention_model.cross_attend_blocks.0.norm.bias": (32,),
    "latent_attention_model.cross_attend_blocks.0.norm_context.weight": (32,),
    "latent_attention_model.cross_attend_blocks.0.norm_context.bias": (32,),
    "latent_attention_model.cross_attend_blocks.0.fn.to_q.weight": (32, 32),
    "latent_attention_model.cross_attend_blocks.0.fn.to_kv.weight": (64, 32),
    "latent_attention_model.cross_attend_blocks.0.fn.to_out.weight": (32, 32),
    "latent_attention_model.cross_attend_blocks.1.norm.weight": (32,),
    "latent_attention_model.cross_attend_blocks.1.norm.bias": (32,),
    "latent_attention_model.cross_attend_blocks.1.fn.net.0.weight": (128, 32),
    "latent_attention_model.cross_attend_blocks.1.fn.net.0.bias": (128,),
    "latent_attention_model.cross_attend_blocks.1.fn.net.2.weight": (32, 64),
    "latent_attention_model.cross_attend_blocks.1.fn.net.2.bias": (32,),
}


def write_mmembed_layout(root, *, drop=(), extra=()):
    """A tiny checkpoint in the MM-Embed layout, written from transformers' LlavaNextModel (so
    the names are transformers', not ours) plus the NV-Embed latent-attention names above.
    Vocabulary: 260 embedding rows; image token 260 and pad 261 lie outside the matrix."""
    from transformers import LlavaNextConfig, LlavaNextModel

    torch.manual_seed(0)
    cfg = tiny_llava_next_config(vocab_size=260, image_token_id=260)
    model = LlavaNextModel(LlavaNextConfig(**cfg))
    state = {k: v.to(torch.float16) for k, v in model.state_dict().items()}
    for name, shape in LATENT_NAMES.items():
        state[name] = (
            torch.randn(shape) * 0.2 + (1.0 if name.endswith("norm.weight") else 0.0)
        ).half()
    assert not any(k.startswith("lm_head") for k in state)
    for k in drop:
        state.pop(k)
    for k in extra:
        state[k] = torch.zeros(2, dtype=torch.float16)
    names = sorted(state)
    weight_map = {}
    for i in range(4):
        shard = f"model-{i + 1:05d}-of-00004.safetensors"
        part = {n: state[n].contiguous() for n in names[i::4]}
        save_file(part, str(root / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    hf = LlavaNextConfig(**cfg).to_dict()
    hf.update(
        {
            "architectures": ["NVMMEmbedModel"],
            "retriever": "nvidia/NV-Embed-v1",
            "global_image_patch_only": True,
        }
    )
    (root / "config.json").write_text(json.dumps(hf))
    tok = byte_tokenizer(add_eos_in_template=False)
    tok.add_tokens(["<image>"], special_tokens=True)  # 260
    tok.add_special_tokens({"pad_token": "<PAD>"})  # 261
    tok.save_pretrained(str(root))
    return state


def test_mmembed_layout_loads_without_remote_code(tmp_path):
    state = write_mmembed_layout(tmp_path)
    emb = load_embedder(tmp_path, device="cpu", dtype="fp32")
    own = emb.state_dict()
    for name, tensor in state.items():
        ours = (
            "pooler." + name[len("latent_attention_model.") :]
            if name.startswith("latent_")
            else "backbone." + name
        )
        assert torch.equal(own[ours], tensor.float()), name
    assert emb.tokenizer.pad_token_id == 261 and emb.image_token_id == 260
    assert emb.num_image_tokens == 4 and emb.dim == 32
    assert emb.pooler.cross_attend_blocks[0].fn.heads == 8  # the default head count
    items = [
        Item("a cat"),
        Item("longer text so that padding appears", Image.new("RGB", (30, 20), (9, 80, 200))),
    ]
    v = emb.encode_queries(items, instructions="Find the picture.", show_progress=False)
    assert v.shape == (2, 32) and np.isfinite(v).all()
    one = emb.encode_queries(items[:1], instructions="Find the picture.", show_progress=False)
    assert np.abs(one[0] - v[0]).max() < 1e-5  # pad id 261 (outside the matrix) is harmless
    assert not emb.backbone.language_model.config.is_causal  # bidirectional


def test_mmembed_layout_mismatch_lists_every_name(tmp_path):
    write_mmembed_layout(
        tmp_path,
        drop=("latent_attention_model.latents", "multi_modal_projector.linear_2.bias"),
        extra=("lm_head.weight", "language_model.rotary_emb.inv_freq"),
    )
    with pytest.raises(WeightsMismatchError) as info:
        load_embedder(tmp_path, device="cpu")
    msg = str(info.value)
    assert "missing (2): latent_attention_model.latents, multi_modal_projector.linear_2.bias" in msg
    assert "unexpected (1): lm_head.weight" in msg  # inv_freq is an ignorable buffer


@pytest.mark.parametrize("kind", ["llava_next", "llava_next_anyres"])
def test_tiny_llava_next_backbone(kind, tmp_path):
    emb = tiny_embedder(0, kind)
    wide = Image.new("RGB", (60, 30), (200, 0, 0))
    items = [Item("a dog"), Item(None, wide), Item("x", Image.new("RGB", (30, 30), (0, 200, 0)))]
    batch = emb.collate(items, instructions=["Find", None, "F"])
    counts = (batch["input_ids"] == emb.image_token_id).sum(1).tolist()
    if kind == "llava_next":
        assert counts == [0, 4, 4] and batch["pixel_values"].shape == (2, 3, 28, 28)
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
