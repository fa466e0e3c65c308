"""Training checkpoints: trainable weights and buffers (safetensors), optimiser and scheduler
state, every process's RNG state and the trainer position, written to a temp folder and renamed
into place (a kill never leaves a half checkpoint that looks whole), the newest N kept, the
resolved config beside each. Knows nothing about data or losses beyond their state dicts."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

STEP_RE = re.compile(r"^step-(\d{8})$")
WEIGHTS = "trainable.safetensors"
LOSS_WEIGHTS = "loss.safetensors"
STATE = "state.json"
OPTIM = "optimizer.pt"
SCHED = "scheduler.pt"


@dataclass
class TrainerState:
    global_step: int  # optimiser steps done
    epoch: int
    step_in_epoch: int  # position of the next batch within ``epoch``
    seed: int
    world_size: int


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temp folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        (int(m[1]), p)
        for p in root.iterdir()
        if (m := STEP_RE.match(p.name)) and (p / STATE).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that train plus all buffers (the rest is rebuilt from the base model)."""
    state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach() for n, b in model.named_buffers() if b is not None})
    return {k: v.cpu().contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    root: str | Path,
    state: TrainerState,
    *,
    model: nn.Module,
    loss: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: Any,
    rank: int = 0,
    barrier: Any = None,
    keep_last: int | None = None,
    engine: Any = None,
) -> Path:
    """Write ``root/step-NNNNNNNN`` atomically. Every process calls it (each saves its own RNG
    state); the main process writes the rest and renames. ``barrier()`` syncs processes."""
    from safetensors.torch import save_file

    barrier = barrier or (lambda: None)
    root = Path(root)
    final = step_dir(root, state.global_step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / f"rng-{rank}.pt")
    if engine is not None:
        engine.save_state(str(tmp / "engine"))  # every process writes its partition
    if rank == 0:
        if engine is None:
            save_file(trainable_state(model), str(tmp / WEIGHTS))
            torch.save(optimizer.state_dict(), tmp / OPTIM)
        loss_state = {k: v.detach().cpu().contiguous() for k, v in loss.state_dict().items()}
        if loss_state:
            save_file(loss_state, str(tmp / LOSS_WEIGHTS))
        torch.save(scheduler.state_dict(), tmp / SCHED)
        config.save(tmp / "config.yaml")
        (tmp / STATE).write_text(
            json.dumps(asdict(state), indent=2), encoding="utf-8"
        )  # last: marks complete
    barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if keep_last:
            for old in list_checkpoints(root)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s", final)
    barrier()
    return final


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    loss: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rank: int = 0,
    world_size: int = 1,
    engine: Any = None,
) -> TrainerState:
    """Restore everything ``save_checkpoint`` wrote, in place; returns the trainer position."""
    from safetensors.torch import load_file

    path = Path(path)
    state = TrainerState(**json.loads((path / STATE).read_text(encoding="utf-8")))
    if state.world_size != world_size:
        raise ValueError(
            f"{path}: written by {state.world_size} process(es), resumed with {world_size}; "
            "the data order depends on the global batch: resume with the same number of processes"
        )
    if engine is not None:
        engine.load_state(str(path / "engine"))
    else:
        _load_weights(path, model, optimizer)
    if (path / LOSS_WEIGHTS).is_file():
        loss.load_state_dict(load_file(str(path / LOSS_WEIGHTS)))
    scheduler.load_state_dict(torch.load(path / SCHED, weights_only=True))
    rng_file = path / f"rng-{rank}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return state


def _load_weights(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(path / WEIGHTS))
    missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in weights)
    own = set(dict(model.named_parameters())) | set(dict(model.named_buffers()))
    unexpected = sorted(set(weights) - own)
    if missing or unexpected:
        raise ValueError(
            f"{path / WEIGHTS}: does not match the model being trained "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}); was the config changed?"
        )
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(torch.load(path / OPTIM, weights_only=True))
