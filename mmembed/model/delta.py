"""Shipped-delta model folders (``format: mmembed-delta/1``): a base preset whose pretrained towers
load from their packages, plus a small safetensors file of what training changed (full tensors for
the projector and pooler, low-rank factors for merged LoRA weights). The format and adding a delta
to its base; knows nothing of training nor how the base loads (registry.py; delta_export.py writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DELTA_FORMAT = "mmembed-delta/1"
DELTA_WEIGHTS = "delta.safetensors"
UP, DOWN = "::lora_up", "::lora_down"


def is_delta_folder(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("format") == DELTA_FORMAT
    except (OSError, ValueError):
        return False


def delta_base(path: str | Path) -> str:
    """The base preset named in ``path/config.json``, once the folder is checked complete."""
    path = Path(path)
    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    base = raw.get("base")
    if not isinstance(base, str):
        raise ValueError(f"{path / 'config.json'}: no 'base' preset name; re-export the model")
    weights = path / DELTA_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; the folder is incomplete, re-export it")
    return base


def apply_delta_to(emb: Any, path: str | Path) -> Any:
    """Add ``path/delta.safetensors`` to ``emb`` (the base preset, fp32) in place and return it:
    ``W = W_base + up @ down`` for low-rank entries, ``W = delta`` for full ones."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    base = delta_base(path)
    weights = path / DELTA_WEIGHTS
    state = emb.state_dict()
    delta = load_file(str(weights))
    unknown = sorted({k.split("::")[0] for k in delta} - set(state), key=str)
    if unknown:
        raise ValueError(
            f"{weights}: {len(unknown)} tensor(s) not in preset {base!r}, e.g. {unknown[:3]}; "
            "the delta was exported from another architecture"
        )
    with torch.no_grad():
        for name, t in delta.items():
            if name.endswith(UP):
                key = name[: -len(UP)]
                down = delta[key + DOWN]  # (r, in)
                state[key].add_(t.to(state[key].dtype) @ down.to(state[key].dtype))  # (out, in)
            elif name.endswith(DOWN):
                continue
            else:
                if state[name].shape != t.shape:
                    raise ValueError(
                        f"{weights}: {name} has shape {tuple(t.shape)}, the preset "
                        f"{tuple(state[name].shape)}"
                    )
                state[name].copy_(t)
    if raw.get("name"):
        emb.config.name = raw["name"]
    return emb
