"""Tiny random Embedders built in memory (no files, no downloads) for tests across the project:
a byte-level tokeniser, a tiny BERT- or Mistral-like text model, a tiny conv vision tower, and
a small latent-attention pooler. Knows nothing of trained weights: outputs are random but
deterministic for a given seed."""

from __future__ import annotations

from typing import Any

import torch

from mmembed.model.embedder import Embedder, EmbedderConfig

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


def byte_tokenizer(*, add_eos_in_template: bool = True) -> Any:
    """A byte-level tokeniser (one token per UTF-8 byte) with <pad> <s> </s> <unk> <image>.

    ``add_eos_in_template``: '<s> text </s>' (BERT-like) or '<s> text' (Mistral-like; the
    Embedder appends EOS itself)."""
    from tokenizers import Tokenizer, decoders, models, processors
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    single = "<s> $A </s>" if add_eos_in_template else "<s> $A"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    tok.add_special_tokens([*SPECIALS, "<image>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=4096,
    )


def tiny_text_config(kind: str, vocab_size: int, hidden: int = 32) -> dict[str, Any]:
    """An HF config dict for a 2-layer text model of width ``hidden``."""
    if kind == "bert":
        return {
            "model_type": "bert",
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 2 * hidden,
            "max_position_embeddings": 1024,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        }
    if kind in ("mistral", "llama", "gemma"):
        cfg = {
            "model_type": kind,
            "vocab_size": vocab_size,
            "hidden_size": hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 2 * hidden,
            "max_position_embeddings": 1024,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        }
        if kind == "mistral":
            cfg["sliding_window"] = None
        if kind == "gemma":
            cfg["head_dim"] = hidden // 4
        return cfg
    raise ValueError(f"unknown tiny text model {kind!r}; expected bert, mistral, llama or gemma")


TINY_KINDS = (
    "composed",
    "composed_mean",
    "composed_last",
    "decoder",
    "decoder_causal",
    "text",
    "llava_next",
    "llava_next_anyres",
    "score_fusion",
    "score_fusion_decoder",
)


def tiny_llava_next_config(vocab_size: int = 261, image_token_id: int = 260) -> dict[str, Any]:
    """A LlavaNextConfig dict: CLIP vision 28px / patch 14 (4 tokens a view) + tiny Mistral."""
    return {
        "vision_config": {
            "model_type": "clip_vision_model",
            "image_size": 28,
            "patch_size": 14,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "projection_dim": 16,
        },
        "text_config": tiny_text_config("mistral", vocab_size),
        "image_token_index": image_token_id,
        "image_grid_pinpoints": [[28, 56], [56, 28], [56, 56]],
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "projector_hidden_act": "gelu",
    }


def tiny_config(kind: str = "composed", vocab_size: int = 261) -> EmbedderConfig:
    """Configs of the tiny models. kinds:
    composed: tiny BERT + conv tower + latent attention;  composed_mean / composed_last: other poolers;
    decoder: tiny Mistral, bidirectional, latent attention;  decoder_causal: causal, last token;
    text: tiny BERT without a vision tower, mean pooling;
    score_fusion: "composed" with the towers apart (score fusion); score_fusion_decoder: tiny
    Mistral, score fusion, mean pooling."""
    vision = {"type": "tiny_conv", "image_size": 16, "patch": 8, "dim": 16}
    latent = {
        "type": "latent_attention",
        "latent": {"num_latents": 8, "latent_dim": 32, "heads": 2, "dim_head": 16, "ff_mult": 2},
    }
    bert = {"hf_config": tiny_text_config("bert", vocab_size)}
    mistral = {"hf_config": tiny_text_config("mistral", vocab_size)}
    presets: dict[str, tuple[dict, dict]] = {
        "composed": ({"type": "composed", "text": bert, "vision": vision}, latent),
        "composed_mean": ({"type": "composed", "text": bert, "vision": vision}, {"type": "mean"}),
        "composed_last": (
            {"type": "composed", "text": bert, "vision": vision},
            {"type": "last_token"},
        ),
        "decoder": (
            {"type": "composed", "text": mistral, "vision": vision, "bidirectional": True},
            latent,
        ),
        "decoder_causal": (
            {"type": "composed", "text": mistral, "vision": vision, "bidirectional": False},
            {"type": "last_token"},
        ),
        "text": ({"type": "composed", "text": bert, "vision": None}, {"type": "mean"}),
        "score_fusion": (
            {"type": "composed", "text": bert, "vision": vision, "fusion": "score"},
            latent,
        ),
        "score_fusion_decoder": (
            {
                "type": "composed",
                "text": mistral,
                "vision": vision,
                "bidirectional": True,
                "fusion": "score",
            },
            {"type": "mean"},
        ),
        "llava_next": (
            {"type": "llava_next", "hf_config": tiny_llava_next_config(), "bidirectional": True},
            latent,
        ),
        "llava_next_anyres": (
            {"type": "llava_next", "hf_config": tiny_llava_next_config(), "global_only": False},
            {"type": "last_token"},
        ),
    }
    if kind not in presets:
        raise ValueError(f"unknown tiny kind {kind!r}; expected one of {TINY_KINDS}")
    backbone, pooler = presets[kind]
    return EmbedderConfig(
        name=f"tiny-{kind}", backbone=backbone, pooler=pooler, prompt={"max_length": 512}
    )


def tiny_embedder(seed: int = 0, kind: str = "composed", **prompt: Any) -> Embedder:
    """A tiny random Embedder (CPU, fp32, eval mode), deterministic for ``seed``; the caller's
    torch RNG is left untouched. ``prompt`` overrides PromptConfig fields (e.g. padding_side)."""
    cfg = tiny_config(kind)
    cfg.prompt.update(prompt)
    decoder = kind.startswith(("decoder", "llava"))
    tokenizer = byte_tokenizer(add_eos_in_template=not decoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Embedder.build(cfg, tokenizer=tokenizer, pretrained=False)
