"""Shipped-delta model folders (``format: mmembed-delta/1``): a base preset whose pretrained towers
load from their packages, plus a small safetensors file of what training changed (full tensors for
the projector and pooler, low-rank factors for merged LoRA weights). Knows nothing of training."""

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


def base_state(base: str) -> dict[str, Any]:
    """The state dict of preset ``base`` with its pretrained parts (fp32, CPU)."""
    import torch

    from mmembed.model.registry import load_embedder

    return load_embedder(base, device="cpu", dtype=torch.float32).state_dict()


def apply_delta(path: str | Path, *, device: Any = None, dtype: Any = None) -> Any:
    """Build the base preset named in ``path/config.json`` and apply ``path/delta.safetensors``:
    ``W = W_base + up @ down`` for low-rank entries, ``W = delta`` for full ones."""
    import torch
    from safetensors.torch import load_file

    from mmembed.model.registry import load_embedder

    path = Path(path)
    raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    base = raw.get("base")
    if not isinstance(base, str):
        raise ValueError(f"{path / 'config.json'}: no 'base' preset name; re-export the model")
    weights = path / DELTA_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; the folder is incomplete, re-export it")
    emb = load_embedder(base, device="cpu", dtype=torch.float32)
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
    return emb.to_auto(device, dtype)


def export_delta(trained: Any, out: str | Path, *, base: str, rank: int = 16) -> dict[str, Any]:
    """Write ``trained`` (an Embedder of preset ``base``'s architecture) as a delta folder: nothing
    for tensors equal to the base's, factors ``up (out, r) @ down (r, in)`` for 2-D weights whose
    change has rank <= ``rank`` (merged LoRA), the full tensor otherwise (projector, pooler).
    Rebuilds the folder and returns counts, size and the largest embedding difference."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from mmembed.data.records import Item

    out = Path(out)
    base_sd = base_state(base)
    tensors: dict[str, torch.Tensor] = {}
    kinds = {"full": 0, "lowrank": 0, "same": 0}
    worst = 0.0
    for name, t in trained.state_dict().items():
        t = t.detach().to("cpu", torch.float32)
        b = base_sd.get(name)
        if b is not None and b.shape == t.shape and torch.equal(b, t):
            kinds["same"] += 1
            continue
        if b is not None and b.shape == t.shape and t.ndim == 2 and min(t.shape) > 2 * rank:
            delta = (t - b).double()  # (out, in)
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            up = (u[:, :rank] * s[:rank]).float()  # (out, r)
            down = vh[:rank].float()  # (r, in)
            err = (up @ down - delta.float()).abs().max().item()
            if err <= 1e-4 * delta.abs().max().item() + 1e-6:
                tensors[name + UP], tensors[name + DOWN] = up.contiguous(), down.contiguous()
                kinds["lowrank"] += 1
                worst = max(worst, err)
                continue
        tensors[name] = t.contiguous().clone()
        kinds["full"] += 1
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / DELTA_WEIGHTS), metadata={"format": DELTA_FORMAT})
    cfg = {
        "format": DELTA_FORMAT,
        "base": base,
        "name": "mmembed-mini",
        "rank": rank,
        "trained_fingerprint": trained.fingerprint,
        "trained_config": trained.config.to_dict(),
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
    rebuilt = apply_delta(out, device="cpu", dtype=torch.float32)
    img = Image.new("RGB", (96, 96), (200, 40, 40))
    probe = [Item("thumbs up", None), Item(None, img), Item("as a woman", img)]
    a = trained.encode_candidates(probe, show_progress=False)  # (3, dim)
    b = rebuilt.encode_candidates(probe, show_progress=False)  # (3, dim)
    return {
        "tensors": kinds,
        "max_lowrank_error": worst,
        "bytes": (out / DELTA_WEIGHTS).stat().st_size,
        "max_embedding_difference": float(np.abs(a - b).max()),
    }
