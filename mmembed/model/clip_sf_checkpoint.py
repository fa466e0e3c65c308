"""Weights for the CLIP score-fusion baseline: UniIR CLIP_SF checkpoints (one name table, the
architecture read from tensor shapes, read without running foreign pickled code), plain open_clip
state dicts, and open_clip's pretrained tags. Knows checkpoint layouts, not how items encode."""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# UniIR's CLIPScoreFusion holds OpenAI's CLIP as ``clip_model``; open_clip's CLIP keeps OpenAI's
# parameter names, and ours sits at ``ClipScoreFusion.model``. (UniIR name prefix, ours).
UNIIR_NAME_TABLE: tuple[tuple[str, str], ...] = (("clip_model.", "model."),)

RANDOM = "random"  # the weights spec that asks for untrained weights


def _rename(state: Mapping[str, Any], table: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    out = {}
    for name, value in state.items():
        for src, dst in table:
            if name.startswith(src):
                name = dst + name[len(src) :]
                break
        out[name] = value  # a name outside the table stays as is: the loader lists it
    return out


def from_uniir_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """UniIR CLIP_SF parameter names -> ClipScoreFusion names."""
    return _rename(state, UNIIR_NAME_TABLE)


def to_uniir_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """ClipScoreFusion parameter names -> UniIR CLIP_SF names (the inverse table)."""
    return _rename(state, tuple((ours, theirs) for theirs, ours in UNIIR_NAME_TABLE))


def is_uniir_checkpoint(obj: Any) -> bool:
    """UniIR's ``save_checkpoint`` layout: a dict whose ``model`` holds ``clip_model.*``."""
    model = obj.get("model") if isinstance(obj, Mapping) else None
    return isinstance(model, Mapping) and any(
        isinstance(k, str) and k.startswith("clip_model.") for k in model
    )


class _Opaque:
    """Stands in for any non-tensor object a checkpoint pickles (UniIR stores its OmegaConf
    config beside the weights): built and filled without running the original class's code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Opaque:
        return _Opaque()


def read_torch_checkpoint(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``; classes outside torch's allow-list (OmegaConf,
    typing) load as opaque placeholders instead of failing or being executed. Zip-format files
    are memory-mapped, so a checkpoint's optimizer state is never read into RAM."""
    path = Path(path)
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        if not mmap:
            raise
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    stubs = [(type(n.rsplit(".", 1)[-1], (_Opaque,), {}), n) for n in names]
    log.debug("%s: %d pickled classes read as placeholders: %s", path, len(names), names)
    with torch.serialization.safe_globals(stubs):
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)


def _count_blocks(state: Mapping[str, Any], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pat.match(k))})


def openai_clip_config(state: Mapping[str, Any], *, source: str = "checkpoint") -> dict[str, Any]:
    """The open_clip model_cfg of an OpenAI-layout CLIP ViT (names without prefix), read from
    tensor shapes as OpenAI's loader does: heads = width // 64, QuickGELU activations."""
    if "visual.proj" not in state and any(k.startswith("visual.layer1.") for k in state):
        raise ValueError(f"{source}: a ResNet CLIP; only ViT CLIP_SF checkpoints are supported")
    need = [
        "visual.conv1.weight",
        "visual.positional_embedding",
        "text_projection",
        "positional_embedding",
        "token_embedding.weight",
        "ln_final.weight",
    ]
    missing = [k for k in need if k not in state]
    if missing:
        raise ValueError(f"{source}: not an OpenAI-layout CLIP ViT; missing {', '.join(missing)}")
    conv = state["visual.conv1.weight"]  # (width, 3, patch, patch)
    vwidth, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    twidth = int(state["ln_final.weight"].shape[0])
    fc = state.get("visual.transformer.resblocks.0.mlp.c_fc.weight")  # (width * ratio, width)
    return {
        "embed_dim": int(state["text_projection"].shape[1]),
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": patch * grid,
            "layers": _count_blocks(state, "visual.transformer.resblocks."),
            "width": vwidth,
            "patch_size": patch,
            "head_width": 64,
            "mlp_ratio": (fc.shape[0] / vwidth) if fc is not None else 4.0,
        },
        "text_cfg": {
            "context_length": int(state["positional_embedding"].shape[0]),
            "vocab_size": int(state["token_embedding.weight"].shape[0]),
            "width": twidth,
            "heads": twidth // 64,
            "layers": _count_blocks(state, "transformer.resblocks."),
        },
    }


_SHAPE_FIELDS = {
    "embed_dim": ("embed_dim",),
    "image size": ("vision_cfg", "image_size"),
    "vision layers": ("vision_cfg", "layers"),
    "vision width": ("vision_cfg", "width"),
    "patch size": ("vision_cfg", "patch_size"),
    "context length": ("text_cfg", "context_length"),
    "vocabulary": ("text_cfg", "vocab_size"),
    "text width": ("text_cfg", "width"),
    "text layers": ("text_cfg", "layers"),
}


def config_differences(found: dict[str, Any], named: dict[str, Any]) -> list[str]:
    """Shape-defining fields where a checkpoint's config and a named architecture disagree."""
    out = []
    for label, keys in _SHAPE_FIELDS.items():
        a, b = found, named
        for k in keys:
            a = a.get(k) if isinstance(a, dict) else None
            b = b.get(k) if isinstance(b, dict) else None
        if b is not None and a != b:
            out.append(f"{label} {a} (checkpoint) vs {b}")
    return out


# --------------------------------------------------------------------------- open_clip tags


def default_pretrained_tag(open_clip: Any, arch: str) -> str | None:
    """OpenAI's weights where open_clip has them (what UniIR fine-tuned), else its first tag."""
    tags = list(open_clip.list_pretrained_tags_by_model(arch))
    if not tags:
        return None
    return "openai" if "openai" in tags else tags[0]


def fetch_pretrained(
    open_clip: Any, arch: str, tag: str, cache_dir: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """Local path of open_clip's ``arch``/``tag`` weights (downloaded when online, else from the
    cache) and the tag's config (preprocessing, quick_gelu). Errors are one line saying what to do."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ValueError(f"clip-sf:{arch}: open_clip has no pretrained tag {tag!r} (tags: {tags})")
    try:
        path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:  # network, hub and cache errors all mean: not available here
        raise FileNotFoundError(
            f"clip-sf:{arch}: open_clip's pretrained weights {tag!r} are not in the local cache "
            f"and could not be downloaded ({type(e).__name__}: offline?); fetch them once while "
            f"online, pass a local file as clip-sf:{arch}:/path/to/weights.pt (or a UniIR "
            f"checkpoint as clip-sf:auto:/path/to/clip_sf.pth), or use clip-sf:{arch}:random "
            "for untrained weights"
        ) from None
    if not path:
        raise FileNotFoundError(f"clip-sf:{arch}: open_clip returned no file for tag {tag!r}")
    return Path(path), dict(cfg)


def preprocess_config(tag_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The image-preprocessing fields of a pretrained tag's config (open_clip.image_transform)."""
    keys = ("mean", "std", "interpolation", "resize_mode")
    return {k: (list(v) if isinstance(v, tuple) else v) for k in keys if (v := tag_cfg.get(k))}
