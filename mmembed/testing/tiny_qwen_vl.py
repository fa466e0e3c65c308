"""Tiny random Qwen-VL Embedders built in memory for tests (hidden 32, 2 layers, a 2-block
vision tower): a byte-level tokeniser with Qwen's special tokens and the Qwen2 split rule, and
configs for the Qwen2-VL, Qwen2.5-VL and Qwen3-VL families. Knows nothing of trained weights."""

from __future__ import annotations

from typing import Any

import torch

from mmembed.model.embedder import Embedder, EmbedderConfig
from mmembed.model.qwen_presets import chat_prompt

QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def tiny_qwen_tokenizer() -> Any:
    """One token per byte plus Qwen's special tokens; eos <|im_end|>, pad <|endoftext|>."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers as pt
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pt.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pt.Sequence(
        [
            pt.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pt.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def tiny_qwen_hf_config(family: str, tokenizer: Any, hidden: int = 32) -> dict[str, Any]:
    """A transformers config dict of the family: 2 text layers of width ``hidden``, a 2-block
    vision tower with 2x2 patch merging."""
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in QWEN_SPECIALS}
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "pad_token_id": ids["<|endoftext|>"],
    }
    head = hidden // 4
    if family == "qwen2_vl":
        vision = {
            "depth": 2,
            "embed_dim": hidden,
            "hidden_size": hidden,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [1, 1, head // 2 - 2],
        }
    elif family == "qwen2_5_vl":
        vision = {
            "depth": 2,
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        }
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [1, 1, head // 2 - 2],
        }
    elif family == "qwen3_vl":
        vision = {
            "depth": 2,
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        }
        text["head_dim"] = head
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [1, 1, head // 2 - 2],
            "mrope_interleaved": True,
        }
    else:
        raise ValueError(f"unknown family {family!r}")
    return {**common, "text_config": text, "vision_config": vision}


def tiny_qwen_embedder(
    family: str = "qwen2_vl",
    *,
    pooler: str = "last_token",
    positions: str = "mrope",
    bidirectional: bool | None = None,
    seed: int = 0,
    max_tokens: int = 16,
) -> Embedder:
    """A tiny random Qwen-VL Embedder with GME-style chat prompts; images get 4..``max_tokens``
    visual tokens."""
    tok = tiny_qwen_tokenizer()
    side = 28 if family != "qwen3_vl" else 32
    last_token = pooler == "last_token"
    prompt = chat_prompt(
        default_system="You are a helpful assistant.",
        suffix="<|im_end|>\n<|im_start|>assistant\n" + ("<|endoftext|>" if last_token else ""),
        max_length=512,
    )
    prompt["exclude_instruction"] = not last_token
    cfg = EmbedderConfig(
        name=f"tiny-{family}",
        backbone={
            "type": "qwen_vl",
            "family": family,
            "hf_config": tiny_qwen_hf_config(family, tok),
            "positions": positions,
            "bidirectional": bidirectional,
            "resize_stages": [[4 * side * side, max_tokens * side * side]],
        },
        pooler={"type": pooler},
        prompt=prompt,
    )
    torch.manual_seed(seed)
    emb = Embedder.build(cfg, tokenizer=tok, pretrained=False)
    with torch.no_grad():  # larger weights than the 0.02 init, so that every input matters
        for p in emb.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.2)
    emb._fp = None
    return emb.eval()
