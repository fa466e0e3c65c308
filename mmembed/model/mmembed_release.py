"""The released nvidia/MM-Embed folder as its reference code reads it: the weight-name table, the
retriever (NV-Embed) config that config.json's ``retriever`` entry names, and the EmbedderConfig
built from both, with every value taken from where the reference takes it. Also the reference's
pooling rule for instructions. Knows nothing of loading tensors (mmembed_checkpoint.py does
that)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Published weight name prefix -> Embedder state-dict prefix; first match wins. The release was
# saved by transformers 4.43 from a LlavaNextForConditionalGeneration whose language model was
# replaced by NV-Embed's bare bidirectional Mistral (so ``language_model.layers.*``, no LM head).
RELEASE_NAMES: tuple[tuple[str, str], ...] = (
    ("latent_attention_model.", "pooler."),
    ("vision_tower.vision_model.", "backbone.vision_tower."),
    ("multi_modal_projector.", "backbone.multi_modal_projector."),
    ("image_newline", "backbone.image_newline"),
    ("language_model.", "backbone.language_model."),
)
QUERY_PREFIX = "Query: "  # the reference's default query_prefix
# The reference adds 576 - 1 positions when the text before "\nQuery: " holds an image: a count
# written for the 24 x 24 grid, whatever the grid, and one short of the 577 positions packed.
REFERENCE_IMAGE_EXTRA = 575


def to_embedder_name(name: str) -> str | None:
    """Published weight name -> Embedder state-dict name (None when no prefix matches)."""
    for old, new in RELEASE_NAMES:
        if name.startswith(old):
            return new + name[len(old) :]
    return None


def to_release_name(name: str) -> str | None:
    """Embedder state-dict name -> published weight name (None when no prefix matches)."""
    for old, new in RELEASE_NAMES:
        if name.startswith(new):
            return old + name[len(new) :]
    return None


class RetrieverConfigError(FileNotFoundError):
    """The NV-Embed config named by config.json's ``retriever`` cannot be found."""


def resolve_retriever(ref: str, folder: Path) -> tuple[dict[str, Any], str]:
    """The retriever's config.json as a dict, and where it was read. ``ref`` is resolved like any
    Hugging Face config: a local folder (absolute, or relative to the MM-Embed folder or the
    working directory), else the hub cache, else the hub when online."""
    for cand in (Path(ref).expanduser(), folder / ref):
        if (cand / "config.json").is_file():
            path = cand / "config.json"
            return json.loads(path.read_text(encoding="utf-8")), str(path)
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        hf_hub_download = try_to_load_from_cache = None
    cached = try_to_load_from_cache(ref, "config.json") if try_to_load_from_cache else None
    if not isinstance(cached, str):
        try:
            cached = hf_hub_download(ref, "config.json") if hf_hub_download else None
        except Exception as e:  # offline, unknown repo, no access: one message below
            cached = None
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            why = ""
    if not isinstance(cached, str):
        raise RetrieverConfigError(
            f"{folder / 'config.json'}: its 'retriever' entry names {ref!r}, whose config.json is "
            f"neither a local folder nor in the Hugging Face cache, and the hub did not answer "
            f"({why or 'not found'}). Fetch it once (huggingface-cli download {ref} config.json), "
            f"or pass retriever=/path/to/folder-with-config.json to load_mmembed"
        )
    return json.loads(Path(cached).read_text(encoding="utf-8")), cached


def release_config(
    folder: Path, raw: dict[str, Any], retriever: dict[str, Any], preprocessor: dict[str, Any]
) -> dict[str, Any]:
    """EmbedderConfig fields for a release folder. Where each value comes from (as in the
    reference): the language model and latent attention from the retriever's ``text_config`` and
    ``latent_attention_config``; vision tower, projector, feature layer, image token from
    config.json; padding side and ``add_eos_token`` from config.json; image size and
    normalisation from preprocessor_config.json."""
    text = dict(retriever.get("text_config") or {})
    if not text:
        raise ValueError("the retriever config has no text_config (is it NV-Embed's config.json?)")
    text["model_type"] = "mistral"  # NV-Embed's bidir_mistral is a Mistral without the causal mask
    # The reference's bidirectional Mistral builds a plain padding mask: no sliding window.
    text["sliding_window"] = None
    for k in ("_name_or_path", "architectures", "auto_map", "torch_dtype", "dtype"):
        text.pop(k, None)
    hf = {
        k: v
        for k, v in raw.items()
        if k
        not in (
            "retriever",
            "global_image_patch_only",
            "padding_side",
            "add_eos_token",
            "auto_map",
            "architectures",
            "_name_or_path",
            "transformers_version",
            "torch_dtype",
            "dtype",
        )
    }
    hf["text_config"] = text
    la = dict(retriever.get("latent_attention_config") or {})
    hidden = int(text.get("hidden_size", 4096))
    latent_dim = int(la.get("latent_dim", 4096))
    if int(la.get("hidden_dim", hidden)) != hidden or latent_dim != hidden:
        raise ValueError(
            f"latent_attention_config: hidden_dim {la.get('hidden_dim')} and latent_dim {latent_dim}"
            f" must equal the language model's hidden_size {hidden} (the reference pre-norms the "
            "hidden states with LayerNorm(latent_dim))"
        )
    backbone: dict[str, Any] = {
        "type": "llava_next",
        "hf_config": hf,
        "global_only": bool(raw.get("global_image_patch_only", True)),
        "global_newline": True,
        "bidirectional": True,
        "token_remap": [[32001, 2]],  # the reference's hard-coded pad -> EOS before the lookup
    }
    if preprocessor:
        side = (preprocessor.get("size") or {}).get("shortest_edge")
        image_size = (hf.get("vision_config") or {}).get("image_size", 336)
        if side is not None and int(side) != int(image_size):
            raise ValueError(
                f"{folder / 'preprocessor_config.json'}: shortest_edge {side} differs from the "
                f"vision tower's image_size {image_size}; the global view needs them equal"
            )
        if preprocessor.get("image_mean") is not None:
            backbone["image_mean"] = list(preprocessor["image_mean"])
        if preprocessor.get("image_std") is not None:
            backbone["image_std"] = list(preprocessor["image_std"])
    heads = int(la.get("num_cross_heads", 8))
    pooler = {
        "type": "latent_attention",
        "latent": {
            "num_latents": int(la.get("num_latents_value", 512)),
            "latent_dim": latent_dim,
            "heads": heads,
            "dim_head": int(la.get("cross_dim_head", 4096)),
            "ff_mult": 4,  # NV-Embed's FeedForward(latent_dim) keeps its default mult
        },
    }
    if not la.get("output_normalize", True):
        raise ValueError(
            "latent_attention_config.output_normalize is false; mmembed always L2-normalises"
        )
    return {
        "name": folder.name,
        "backbone": backbone,
        "pooler": pooler,
        "prompt": {
            "max_length": 512,  # the reference encode()'s default
            "append_eos": bool(raw.get("add_eos_token", True)),
            "padding_side": str(raw.get("padding_side", "right")),
            "exclude_instruction": True,
            "instruction_mask": "reference",
            "strip_instruction": False,
        },
    }


def reference_pool_skip(tokenizer: Any, prompt: str, *, append_eos: bool) -> int:
    """Leading positions the reference leaves out of the pooling mean: when ``"\\nQuery: "`` occurs
    in the prompt, the length of ``tokenizer(prompt before it)`` (BOS and, with
    ``add_eos_token``, an EOS counted, so the mask ends on the newline before ``Query:``), plus
    575 when that part holds ``<image>``; else 0. Candidates are not exempt."""
    marker = "\n" + QUERY_PREFIX
    if marker not in prompt:
        return 0
    head = prompt.split(marker)[0]
    ids = tokenizer(head, add_special_tokens=True)["input_ids"]
    n = len(ids)
    if append_eos and (not ids or ids[-1] != tokenizer.eos_token_id):
        n += 1
    if "<image>" in head:
        n += REFERENCE_IMAGE_EXTRA
    return n
