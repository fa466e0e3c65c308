"""Presets of released Qwen-VL embedders (GME, Qwen3-VL-Embedding, VLM2Vec): backbone, pooling and
each model's own prompt format, as EmbedderConfig fields. Plain dictionaries: no torch, no
transformers. ``registry.py`` merges them into PRESETS; ``PRESET:FOLDER`` points one at a local
download. Each format is matched to its reference implementation by a golden test
(tests/test_model_qwen_vl_golden.py; sources in docs/models.md)."""

from __future__ import annotations

from typing import Any

_QWEN2_VISION = "<|vision_start|><|image_pad|><|vision_end|>"


def chat_prompt(
    *, default_system: str, suffix: str, max_length: int, instruction_end: str = ""
) -> dict[str, Any]:
    """PromptConfig fields for a Qwen chat turn: the instruction (or ``default_system`` for
    candidates and plain queries) is the system message, the item is the user message, the
    embedding is read at the end of ``suffix``."""
    system = "<|im_start|>system\n{}<|im_end|>\n<|im_start|>user\n"
    plain = system.format(default_system)
    return {
        "instruction_prefix": system.format("{instruction}"),
        "query_prefix": plain,
        "candidate_prefix": plain,
        "image_text": _QWEN2_VISION,
        "image_token": "<|image_pad|>",
        "suffix": suffix,
        "max_length": max_length,
        "append_eos": False,
        "padding_side": "right",
        "exclude_instruction": False,
        "instruction_end": instruction_end,
    }


# GME (Zhang et al. 2024, arXiv:2412.16855), as gme_inference.py of the release and mteb's
# wrapper (mteb/models/model_implementations/gme_v_models.py) run it: the item in a chat turn
# ending in "<|endoftext|>", last token, images resized twice (qwen_vl_utils' fetch_image
# bounds, then the processor's 256..1280 visual tokens). The language model is called without
# position ids, so text and images get plain sequential positions, not M-RoPE (a quirk matched).
_GME_BACKBONE: dict[str, Any] = {
    "type": "qwen_vl",
    "family": "qwen2_vl",
    "positions": "sequential",
    "resize_stages": [[4 * 28 * 28, 16384 * 28 * 28], [256 * 28 * 28, 1280 * 28 * 28]],
}
_GME_PROMPT = chat_prompt(
    default_system="You are a helpful assistant.",
    suffix="<|im_end|>\n<|im_start|>assistant\n<|endoftext|>",
    max_length=1800,
)

# Qwen3-VL-Embedding (QwenLM/Qwen3-VL-Embedding, src/models/qwen3_vl_embedding.py): the chat
# template with the generation prompt, last token; instruction made to end in punctuation; one
# resize (qwen_vl_utils, factor 32, 4..1800 visual tokens); M-RoPE through Qwen3VLModel.
_Q3_BACKBONE: dict[str, Any] = {
    "type": "qwen_vl",
    "family": "qwen3_vl",
    "positions": "mrope",
    "resize_stages": [[4 * 32 * 32, 1800 * 32 * 32]],
}
_Q3_PROMPT = chat_prompt(
    default_system="Represent the user's input.",
    suffix="<|im_end|>\n<|im_start|>assistant\n",
    max_length=8192,
    instruction_end="punct",
)


# VLM2Vec (Jiang et al. 2024, arXiv:2410.05160; TIGER-AI-Lab/VLM2Vec, branch v1): a DoRA
# adapter over Qwen2-VL-*-Instruct, merged at load (MMEBModel.load: merge_and_unload). Plain
# text, no chat template, as its MMEB evaluation data writes it: "<|image_pad|>\nInstruction:
# text\n" (no <|vision_start|>, so the reference's M-RoPE index finds no image and every token
# gets sequential positions), last token, L2-normalised. Candidates carry MMEB's instruction
# for their modality: an image "Represent the given image.", an image with text the Wikipedia
# one (WebQA, OVEN; EDIS says "image" for "Wikipedia image"), a text none (docs/models.md).
# Images squashed to 1344x1344 (its eval's image_resolution "high"), then the base processor's
# own bounds (3136..12845056 pixels), which keep 1344x1344.
_VLM2VEC_BACKBONE: dict[str, Any] = {
    "type": "qwen_vl",
    "family": "qwen2_vl",
    "positions": "sequential",
    "fixed_size": [1344, 1344],
    "resize_stages": [[3136, 12845056]],
}
_VLM2VEC_PROMPT: dict[str, Any] = {
    "layout": "joined",
    "join_sep": " ",
    "image_sep": "\n",
    "instruction_suffix": "\n",
    "candidate_instructions": {
        "image": "Represent the given image.",
        "image,text": "Represent the given Wikipedia image with related text information:",
    },
    "instruction_prefix": "{instruction}",
    "query_prefix": "",
    "candidate_prefix": "",
    "image_text": "<|image_pad|>",
    "image_token": "<|image_pad|>",
    "suffix": "",
    "max_length": 32768,  # its eval sets no max_len: nothing is truncated
    "append_eos": False,
    "padding_side": "right",
    "exclude_instruction": False,
}


def _with(backbone: dict[str, Any], source: str, **extra: str) -> dict[str, Any]:
    return {**backbone, "source": source, **extra}


QWEN_PRESETS: dict[str, dict[str, Any]] = {
    "gme-qwen2-vl-2b": {
        "backbone": _with(_GME_BACKBONE, "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct"),
        "pooler": {"type": "last_token"},
        "prompt": _GME_PROMPT,
        "tokenizer": "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct",
    },
    "gme-qwen2-vl-7b": {
        "backbone": _with(_GME_BACKBONE, "Alibaba-NLP/gme-Qwen2-VL-7B-Instruct"),
        "pooler": {"type": "last_token"},
        "prompt": _GME_PROMPT,
        "tokenizer": "Alibaba-NLP/gme-Qwen2-VL-7B-Instruct",
    },
    "qwen3-vl-embedding-2b": {
        "backbone": _with(_Q3_BACKBONE, "Qwen/Qwen3-VL-Embedding-2B"),
        "pooler": {"type": "last_token"},
        "prompt": _Q3_PROMPT,
        "tokenizer": "Qwen/Qwen3-VL-Embedding-2B",
    },
    "qwen3-vl-embedding-8b": {
        "backbone": _with(_Q3_BACKBONE, "Qwen/Qwen3-VL-Embedding-8B"),
        "pooler": {"type": "last_token"},
        "prompt": _Q3_PROMPT,
        "tokenizer": "Qwen/Qwen3-VL-Embedding-8B",
    },
}
for _size, _base in (("2b", "Qwen/Qwen2-VL-2B-Instruct"), ("7b", "Qwen/Qwen2-VL-7B-Instruct")):
    QWEN_PRESETS[f"vlm2vec-qwen2-vl-{_size}"] = {
        "backbone": _with(
            _VLM2VEC_BACKBONE, _base, adapter=f"TIGER-Lab/VLM2Vec-Qwen2VL-{_size.upper()}"
        ),
        "pooler": {"type": "last_token"},
        "prompt": _VLM2VEC_PROMPT,
        "tokenizer": _base,
    }


def with_folder(raw: dict[str, Any], folder: str) -> dict[str, Any]:
    """A preset's fields with its backbone and tokenizer read from a local ``folder``. For an
    adapter preset (VLM2Vec) ``folder`` is the adapter's, and ``ADAPTER,BASE`` names a local
    base model too (otherwise the base comes from its hub id, or the local hub cache)."""
    backbone = raw.get("backbone", {})
    if "source" not in backbone:
        raise ValueError(
            "this preset is not built from a released checkpoint; PRESET:FOLDER needs one"
        )
    if "adapter" in backbone:
        adapter, _, base = folder.partition(",")
        base = base or backbone["source"]
        return {
            **raw,
            "backbone": {**backbone, "source": base, "adapter": adapter},
            "tokenizer": base,
        }
    return {**raw, "backbone": {**backbone, "source": folder}, "tokenizer": folder}


def load_released(config: Any, *, device: Any = None, dtype: Any = None) -> Any:
    """``Embedder.build(config)`` with every module created in the target dtype (resolved as
    ``load_embedder`` does: fp32 on cpu, bf16/fp16 on cuda unless given) and a released folder
    filled shard by shard, then moved to ``device``. The path for ``PRESET:FOLDER``."""
    from mmembed.model.embedder import Embedder
    from mmembed.model.loading import resolve_device_dtype
    from mmembed.model.shards import default_dtype

    dev, dt = resolve_device_dtype(device, dtype)
    with default_dtype(dt):
        emb = Embedder.build(config)
    return emb.to(device=dev, dtype=dt)
