"""Loading a checkpoint in the published MM-Embed layout (LLaVA-Next config json + sharded
safetensors + index json; weight names of DESIGN §2) into an Embedder, without
trust_remote_code and without unpickling. Knows nothing of hubs: the folder must be local."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mmembed.model.embedder import (
    Embedder,
    EmbedderConfig,
    WeightsMismatchError,
    resolve_device_dtype,
)

INDEX_NAME = "model.safetensors.index.json"
POOLER_PREFIX = "latent_attention_model."
BACKBONE_PREFIXES = ("vision_tower.", "multi_modal_projector.", "image_newline", "language_model.")
# Non-persistent buffers some exports carry; they are rebuilt by the model and safe to ignore.
IGNORABLE_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")
# Config keys that belong to the wrapper, not to LlavaNextConfig.
WRAPPER_KEYS = (
    "retriever",
    "global_image_patch_only",
    "latent_attention_config",
    "auto_map",
    "architectures",
)


def to_embedder_name(name: str) -> str:
    """Published weight name -> Embedder state-dict name."""
    if name.startswith(POOLER_PREFIX):
        return "pooler." + name[len(POOLER_PREFIX) :]
    return "backbone." + name


def to_checkpoint_name(name: str) -> str:
    """Embedder state-dict name -> published weight name."""
    if name.startswith("pooler."):
        return POOLER_PREFIX + name[len("pooler.") :]
    return name[len("backbone.") :]


def read_index(path: Path) -> dict[str, str]:
    index = path / INDEX_NAME
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{index}: missing; an MM-Embed folder has sharded safetensors with an index json"
        ) from None
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"{index}: not a safetensors index ({e}); expected a 'weight_map' object"
        ) from None
    shards = sorted(set(weight_map.values()))
    absent = [s for s in shards if not (path / s).is_file()]
    if absent:
        raise FileNotFoundError(
            f"{path}: shards named in {INDEX_NAME} are missing: {', '.join(absent)}"
        )
    return weight_map


def iter_tensors(path: Path, weight_map: dict[str, str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every weight, one shard open at a time."""
    from safetensors import safe_open

    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    for shard in sorted(by_shard):
        with safe_open(str(path / shard), framework="pt") as f:
            present = set(f.keys())
            for name in by_shard[shard]:
                if name not in present:
                    raise WeightsMismatchError(
                        f"{path / shard}: {name} is listed in {INDEX_NAME} but not in the shard"
                    )
                yield name, f.get_tensor(name)


def _shape(path: Path, weight_map: dict[str, str], name: str) -> tuple[int, ...] | None:
    """A tensor's shape from the shard header (None when the name is absent: reported later)."""
    from safetensors import safe_open

    if name not in weight_map:
        return None
    with safe_open(str(path / weight_map[name]), framework="pt") as f:
        return tuple(f.get_slice(name).get_shape())


def mmembed_config(path: Path, weight_map: dict[str, str]) -> EmbedderConfig:
    """An EmbedderConfig for the folder: LLaVA-Next backbone, bidirectional LM, latent attention
    with sizes read from the weights (heads from ``latent_attention_config`` or 8), MM-Embed prompts."""
    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    hf = {k: v for k, v in raw.items() if k not in WRAPPER_KEYS}
    text = dict(hf.get("text_config") or {})
    text.setdefault("model_type", "mistral")
    embed = _shape(path, weight_map, "language_model.embed_tokens.weight")
    if embed is not None:
        text["vocab_size"] = embed[0]  # NV-Embed's matrix has 32000 rows; added ids are remapped
    hf["text_config"] = text
    dim = int(text.get("hidden_size", 4096))
    la = raw.get("latent_attention_config") or {}
    heads = int(la.get("num_cross_heads", 8))
    latents = _shape(path, weight_map, POOLER_PREFIX + "latents")
    kv = _shape(path, weight_map, POOLER_PREFIX + "cross_attend_blocks.0.fn.to_kv.weight")
    ff = _shape(path, weight_map, POOLER_PREFIX + "cross_attend_blocks.1.fn.net.0.weight")
    latent_dim = latents[1] if latents else (kv[1] if kv else int(la.get("latent_dim", 4096)))
    inner = kv[0] // 2 if kv else heads * int(la.get("cross_dim_head", 4096))
    latent = {
        "num_latents": latents[0] if latents else int(la.get("num_latents_value", 512)),
        "latent_dim": latent_dim,
        "heads": heads,
        "dim_head": inner // heads,
        "ff_mult": ff[0] // (2 * dim) if ff else 4,
    }
    return EmbedderConfig(
        name=path.name,
        backbone={
            "type": "llava_next",
            "hf_config": hf,
            "global_only": bool(raw.get("global_image_patch_only", True)),
            "bidirectional": True,
        },
        pooler={"type": "latent_attention", "latent": latent},
        prompt={
            "max_length": 512,
            "append_eos": True,
            "padding_side": "right",
            "exclude_instruction": True,
        },
    )


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def load_mmembed(
    path: str | Path, *, tokenizer: Any = None, device: Any = None, dtype: Any = None
) -> Embedder:
    """An Embedder from a local MM-Embed-layout folder. Every missing or unexpected weight is
    listed in one WeightsMismatchError. The tokenizer comes from the folder unless given."""
    from transformers import AutoTokenizer
    from transformers.initialization import no_init_weights

    path = Path(path)
    weight_map = read_index(path)
    cfg = mmembed_config(path, weight_map)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    dev, dt = resolve_device_dtype(device, dtype)
    with no_init_weights(), default_dtype(dt):
        emb = Embedder.build(cfg, tokenizer=tokenizer, pretrained=False)
    own = {to_checkpoint_name(k) for k in emb.state_dict()}
    names = set(weight_map)
    missing = sorted(own - names)
    unexpected = sorted(n for n in names - own if not n.endswith(IGNORABLE_SUFFIXES))
    if missing or unexpected:
        parts = [f"{path}: the checkpoint does not match the MM-Embed layout"]
        if missing:
            parts.append(f"missing ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            parts.append(f"unexpected ({len(unexpected)}): " + ", ".join(unexpected))
        parts.append(
            "weight names must follow DESIGN §2 (vision_tower., multi_modal_projector., image_newline, language_model., latent_attention_model.)"
        )
        raise WeightsMismatchError("\n  ".join(parts))
    params = emb.state_dict()
    with torch.no_grad():
        for name, tensor in iter_tensors(path, weight_map):
            if name not in own:
                continue
            target = params[to_embedder_name(name)]
            if tuple(target.shape) != tuple(tensor.shape):
                raise WeightsMismatchError(
                    f"{path}: {name} has shape {tuple(tensor.shape)}, the config implies {tuple(target.shape)}"
                )
            target.copy_(tensor)
    emb._fp = None
    return emb.to(device=dev, dtype=dt).eval()
