"""The offline benchmark: an M-BEIR-format dataset built from packaged assets (emoji fonts and
art, CLDR, WordNet). ``build(out_dir)`` writes it; nothing is imported until it is called."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def build(
    out_dir: str | Path,
    *,
    seed: int = 0,
    show_progress: bool = True,
    limit: int | None = None,
    workers: int = 2,
    force: bool = False,
    hold_out: Sequence[str] = (),
) -> dict:
    """Build the benchmark into ``out_dir``; returns the manifest (see ``builder.build``)."""
    from mmembed.data.offline.builder import build as _build

    return _build(out_dir, seed=seed, show_progress=show_progress, limit=limit,
                  workers=workers, force=force, hold_out=hold_out)  # fmt: skip


__all__ = ["build"]
