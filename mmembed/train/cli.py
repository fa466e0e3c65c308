"""`mmembed train CONFIG.yaml [key=value ...]` and `mmembed mine ...`: thin wrappers over
mmembed.train.trainer.train and mmembed.train.mine.mine_files."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: Path = typer.Argument(..., help="Training config YAML (see configs/train/)."),
    overrides: list[str] = typer.Argument(
        None,
        help="Dotted overrides, KEY=VALUE or --KEY=VALUE, e.g. data.batch_size=8 --optim.lr=1e-4.",
    ),
) -> None:
    """Train an embedder (contrastive InfoNCE); run directly or under `accelerate launch`."""
    from mmembed.train.config import ConfigError, load_config
    from mmembed.train.trainer import train as run

    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    result = run(cfg)
    if result.final_model is not None:  # the main process
        typer.echo(
            f"done: {result.steps} steps, last loss {result.last_loss:.4f}; model in {result.final_model}"
        )


def mine(
    data: Path = typer.Option(
        ..., "--data", help="M-BEIR data root (images and relative paths resolve here)."
    ),
    queries: list[str] = typer.Option(
        ..., "--queries", help="Training query file(s) relative to --data (globs ok)."
    ),
    pool: list[str] = typer.Option(
        ..., "--pool", help="Candidate pool file(s) to mine from (e.g. the union train pool)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Output folder; each query file is written there under its own name."
    ),
    model: str = typer.Option(
        None, "--model", help="Model name or folder (default: the project default)."
    ),
    top_k: int = typer.Option(50, "--top-k"),
    rank_threshold: int = typer.Option(
        45, "--rank-threshold", help="Right-modality negatives only beyond this rank."
    ),
    positive_ratio: float = typer.Option(
        0.95, "--positive-ratio", help="Drop negatives above this x positive score (<=0: off)."
    ),
    max_negatives: int = typer.Option(
        0, "--max-negatives", help="At most this many per query (0: all)."
    ),
    modality_aware: bool = typer.Option(True, "--modality-aware/--plain"),
    instructions: bool = typer.Option(True, "--instructions/--no-instructions"),
    seed: int = typer.Option(42, "--seed", help="Seed of the instruction draw."),
    batch_size: int = typer.Option(32, "--batch-size"),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad record."),
) -> None:
    """Mine modality-aware hard negatives into M-BEIR query files with neg_cand_list."""
    from mmembed.train.mine import MiningConfig
    from mmembed.train.mine_files import mine_files

    cfg = MiningConfig(
        top_k=top_k,
        rank_threshold=rank_threshold,
        positive_ratio=positive_ratio if positive_ratio > 0 else None,
        max_negatives=max_negatives or None,
        modality_aware=modality_aware,
    )
    written, stats = mine_files(
        data,
        queries,
        pool,
        out,
        model=model,
        cfg=cfg,
        use_instructions=instructions,
        seed=seed,
        batch_size=batch_size,
        strict=strict,
    )
    for p in written:
        typer.echo(f"wrote {p}")
    typer.echo(
        f"mined {stats.queries} queries: kept {dict(stats.kept)}, dropped {dict(stats.dropped)}"
    )
