"""Merge a released PEFT adapter (LoRA or DoRA on Linear layers: ``adapter_config.json`` and
``adapter_model.safetensors`` or ``.bin``) into a module's weights at load time, as PEFT's
``merge_and_unload`` does. Knows PEFT's file layout and merge rule; nothing of models or prompts
(the caller maps PEFT's module names onto its own)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_PREFIX = "base_model.model."
# lora_A.weight / lora_B.weight / lora_magnitude_vector (PEFT < 0.12) or .weight (later)
_KEY = re.compile(r"^(?P<mod>.+)\.(?P<part>lora_A|lora_B|lora_magnitude_vector)(\.weight)?$")


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / CONFIG).is_file()


def read_adapter(folder: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """(adapter config, {PEFT module name: {"lora_A", "lora_B"[, "lora_magnitude_vector"]}}).
    A ``.bin`` file is read with ``torch.load(weights_only=True)``: tensors and containers only,
    no code runs."""
    folder = Path(folder)
    cfg = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    path = next((folder / w for w in WEIGHTS if (folder / w).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{folder}: {CONFIG} but none of {', '.join(WEIGHTS)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        flat = load_file(str(path))
    else:
        flat = torch.load(str(path), map_location="cpu", weights_only=True)
    _check_supported(cfg, folder)
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        m = _KEY.match(key)
        if m is None:
            raise ValueError(
                f"{path}: unexpected adapter tensor {key!r} (only LoRA/DoRA A, B and magnitude "
                "tensors of Linear layers are merged)"
            )
        name = m["mod"][len(_PREFIX) :] if m["mod"].startswith(_PREFIX) else m["mod"]
        modules.setdefault(name, {})[m["part"]] = tensor
    for name, parts in modules.items():
        if "lora_A" not in parts or "lora_B" not in parts:
            raise ValueError(f"{path}: {name} lacks lora_A or lora_B")
        if bool(cfg.get("use_dora")) != ("lora_magnitude_vector" in parts):
            raise ValueError(f"{path}: {name}: use_dora does not match the saved tensors")
    return cfg, modules


def _check_supported(cfg: dict[str, Any], folder: Path) -> None:
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{folder}: peft_type {cfg.get('peft_type')!r}; only LORA is merged")
    unsupported = {
        "fan_in_fan_out": bool(cfg.get("fan_in_fan_out")),
        "bias": cfg.get("bias", "none") != "none",
        "lora_bias": bool(cfg.get("lora_bias")),
        "modules_to_save": bool(cfg.get("modules_to_save")),
        "rank_pattern": bool(cfg.get("rank_pattern")),
        "alpha_pattern": bool(cfg.get("alpha_pattern")),
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ValueError(f"{folder}: adapter settings not supported by the merge: {bad}")


def scaling(cfg: dict[str, Any]) -> float:
    """PEFT's LoRA scale: alpha / r (alpha / sqrt(r) with rsLoRA)."""
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def merged_weight(
    weight: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float,
    magnitude: torch.Tensor | None = None,
) -> torch.Tensor:
    """W + scale * B A (LoRA); with a DoRA magnitude m: m / ||W + scale * B A||_row times it.
    Computed in fp32, returned in ``weight``'s dtype."""
    w = weight.float()  # (out, in)
    delta = (b.float() @ a.float()) * scale  # (out, r) @ (r, in) -> (out, in)
    new = w + delta
    if magnitude is not None:
        norm = torch.linalg.norm(new, dim=1)  # (out,) one norm per output row
        new = (magnitude.float().reshape(-1) / norm).unsqueeze(1) * new
    return new.to(weight.dtype)


def merge_adapter(
    module: nn.Module, folder: str | Path, rename: Callable[[str], str | None]
) -> list[str]:
    """Merge the adapter in ``folder`` into ``module``'s Linear weights. ``rename`` maps a PEFT
    module name (the base model's own, e.g. ``model.layers.0.self_attn.q_proj``) to the
    parameter name in ``module`` of its weight (None: not in this module, an error). Returns the
    merged parameter names; a target that is missing or mis-shaped is an error naming it."""
    cfg, modules = read_adapter(folder)
    scale = scaling(cfg)
    own = dict(module.named_parameters())
    problems, merged = [], []
    for name, parts in sorted(modules.items()):
        target = rename(name + ".weight")
        if target is None or target not in own:
            problems.append(f"{name}: no weight {target!r} in the model")
            continue
        w = own[target]
        a, b = parts["lora_A"], parts["lora_B"]
        if w.dim() != 2 or a.shape[1] != w.shape[1] or b.shape[0] != w.shape[0]:
            problems.append(f"{name}: A {tuple(a.shape)}, B {tuple(b.shape)} vs W {tuple(w.shape)}")
            continue
        with torch.no_grad():
            w.copy_(merged_weight(w, a, b, scale, parts.get("lora_magnitude_vector")))
        merged.append(target)
    if problems:
        raise ValueError(
            f"{folder}: the adapter does not fit the model (is it for this base?):\n  "
            + "\n  ".join(problems)
        )
    return merged
