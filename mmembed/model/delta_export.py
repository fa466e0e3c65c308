"""Writing a shipped-delta model folder (delta.py's format) from a trained Embedder: the change
against the base preset, as low-rank factors where exact, checked by loading the folder back.
Knows nothing of training; loads the base through the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmembed.model.delta import DELTA_FORMAT, DELTA_WEIGHTS, DOWN, UP


def base_state(base: str) -> dict[str, Any]:
    """The state dict of preset ``base`` with its pretrained parts (fp32, CPU)."""
    import torch

    from mmembed.model.registry import load_embedder

    return load_embedder(base, device="cpu", dtype=torch.float32).state_dict()


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
    from mmembed.model.registry import load_embedder

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
    rebuilt = load_embedder(out, device="cpu", dtype=torch.float32)  # as users load it
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
