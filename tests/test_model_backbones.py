"""Composed backbones over other towers (tiny CLIP vision, Llama and Gemma decoders) and the
M-BEIR instruction table."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.records import Item
from mmembed.model.embedder import Embedder, EmbedderConfig
from mmembed.testing.tiny_embedders import byte_tokenizer, tiny_text_config

torch.set_num_threads(1)

TINY_CLIP = {
    "type": "clip",
    "hf_config": {
        "image_size": 28,
        "patch_size": 14,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    },
}


def _build(text_kind: str, vision: dict | None, bidirectional: bool | None) -> Embedder:
    cfg = EmbedderConfig(
        name=f"t-{text_kind}",
        backbone={
            "type": "composed",
            "text": {"hf_config": tiny_text_config(text_kind, 261)},
            "vision": vision,
            "bidirectional": bidirectional,
        },
        pooler={"type": "mean"},
    )
    torch.manual_seed(0)
    return Embedder.build(
        cfg, tokenizer=byte_tokenizer(add_eos_in_template=text_kind == "bert"), pretrained=False
    )


@pytest.mark.parametrize("text_kind", ["llama", "gemma"])
def test_decoder_text_models_switch_causality(text_kind):
    emb = _build(text_kind, TINY_CLIP, bidirectional=True)
    items = [Item("abc def"), Item("abc xyz")]  # differ only at the end
    batch = emb.collate(items, is_query=False)
    with torch.no_grad():
        h = emb.backbone(batch["input_ids"], batch["attention_mask"])  # (2, L, D)
    assert not torch.allclose(
        h[0, 1], h[1, 1], atol=1e-6
    )  # bidirectional: early token sees the end
    from mmembed.model.composed import set_causal

    set_causal(emb.backbone.language_model, causal=True)
    with torch.no_grad():
        h = emb.backbone(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(h[0, 1], h[1, 1], atol=1e-6)


def test_composed_with_clip_vision_tower(tmp_path):
    emb = _build("bert", TINY_CLIP, bidirectional=None)
    assert emb.num_image_tokens == 4
    items = [
        Item("x", Image.new("RGB", (40, 30), (200, 1, 1))),
        Item(None, Image.new("RGB", (30, 30), (1, 1, 200))),
    ]
    v = emb.encode_candidates(items, show_progress=False)
    emb.save_pretrained(tmp_path / "m")
    back = Embedder.from_pretrained(tmp_path / "m")
    assert back.config.backbone["vision"]["hf_config"]["image_size"] == 28
    assert np.array_equal(back.encode_candidates(items, show_progress=False), v)
