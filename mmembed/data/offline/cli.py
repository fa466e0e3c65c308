"""`mmembed data build-offline --out DIR`: thin command over ``mmembed.data.offline.build``
(registered by ``mmembed.data.cli``). Prints time, size and the stats table."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def build_offline_command(
    out: Path = typer.Option(..., "--out", help="Output folder (the M-BEIR data root)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the splits and query phrasings."),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing offline build at --out."
    ),
    limit: int | None = typer.Option(
        None,
        "--limit",
        min=1,
        help="Keep at most N emoji groups and N synsets per split (small builds).",
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Render in this many processes."),
    hold_out: list[str] = typer.Option(
        [],
        "--hold-out",
        help="A source no training split holds, repeatable: style:gemojione, lang:CODE "
        "(fr es de it pt nl) or category:NAME (gemojione's: nature, food, people, ...). "
        "The test split is unchanged; hold_out.json lists its transfer queries.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Build the offline M-BEIR-format benchmark (emoji, CLDR, gemojione, WordNet) into --out."""
    from rich.console import Console

    from mmembed.data.offline.assets import AssetMissingError
    from mmembed.data.offline.builder import build
    from mmembed.data.offline.card import stats_table
    from mmembed.data.offline.holdout import HoldOutError

    con = Console(stderr=True, highlight=False)
    start = time.perf_counter()
    try:
        manifest = build(
            out,
            seed=seed,
            show_progress=not quiet,
            limit=limit,
            workers=workers,
            force=force,
            hold_out=hold_out,
        )
    except (AssetMissingError, FileExistsError, HoldOutError) as e:
        con.print(f"error: {e}", markup=False)
        raise typer.Exit(2) from None
    seconds = time.perf_counter() - start
    if manifest.get("reused"):
        con.print(f"{out} is already this build (digest {manifest['digest'][:16]}); "
                  "nothing to do (--force rebuilds it)", markup=False, soft_wrap=True)  # fmt: skip
        return
    con.print(stats_table(manifest), markup=False, soft_wrap=True)
    dropped = sum(len(v) for v in manifest["dropped"].values())
    con.print(
        f"built {out} in {seconds:.1f} s: {manifest['files']:,} files, "
        f"{manifest['bytes'] / 1e6:.1f} MB, {dropped} emoji dropped (see manifest.json), "
        f"digest {manifest['digest'][:16]}",
        markup=False,
        soft_wrap=True,
    )
