"""`mmembed encode`: a pool, query file or folder -> fp16 embedding shards (resumable; one shard
set per rank under `accelerate launch`). Thin: the work is in mmembed.index.encode / inputs."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def encode(
    source: Path = typer.Argument(..., help="M-BEIR pool or query jsonl, or a folder of files."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder (shards, then embeddings.npy + ids.txt)."
    ),
    model: str = typer.Option(
        None, "--model", "-m", help="Model name or folder (default: the project default)."
    ),
    kind: str = typer.Option("auto", help="auto | pool | queries | corpus."),
    instructions: str = typer.Option(
        "auto",
        help="Queries: 'auto' (the M-BEIR tree's tsv), 'none', a .tsv path, or a fixed text. "
        "With a table, a preset's own per-task instructions come first.",
    ),
    instruction_seed: int = typer.Option(0, help="Seed of the per-query instruction draw."),
    image_root: Path = typer.Option(
        None, help="Folder image paths are relative to (default: the data root)."
    ),
    shard_size: int = typer.Option(4096, min=1, help="Records per shard (the unit of resumption)."),
    batch_size: int = typer.Option(32, min=1),
    merge_only: bool = typer.Option(False, "--merge-only", help="Only join finished shards."),
    overwrite: bool = typer.Option(False, help="Start again if the folder holds another encoding."),
    strict: bool = typer.Option(False, help="Stop at the first bad record instead of skipping it."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Encode records into fp16 .npy shards + ids + a manifest; run again to resume."""
    import json

    from rich.console import Console

    from mmembed.index.encode import PLAN, ShardWriter, encode_entries, env_rank
    from mmembed.index.inputs import open_input

    console = Console(stderr=True, soft_wrap=True)  # paths and reasons are never cut
    if merge_only:
        writer = ShardWriter(out)
        if not (out / PLAN).is_file():
            raise typer.BadParameter(f"{out} holds no encoding to merge")
        count, skipped = writer.merge(json.loads((out / PLAN).read_text()))
        console.print(
            f"merged {count} rows into {out / 'embeddings.npy'} ({len(skipped)} records skipped)"
        )
        return
    from rich.markup import escape

    rank, world = env_rank()
    try:
        inp = open_input(
            source,
            kind=kind,
            instructions=instructions,
            instruction_seed=instruction_seed,
            image_root=image_root,
            strict=strict,
            preset=model,
        )
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    from mmembed.model import load_embedder

    device = None
    if world > 1:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    emb = load_embedder(model, device=device)
    from mmembed.data.errors import DataError

    try:
        res = encode_entries(
            emb,
            inp.entries(),
            out,
            is_query=inp.is_query,
            source=inp.source,
            image_root=inp.image_root,
            shard_size=shard_size,
            batch_size=batch_size,
            rank=rank,
            world_size=world,
            total=inp.total,
            overwrite=overwrite,
            show_progress=progress,
            input_errors=inp.errors,
        )
    except DataError as e:  # --strict: the first bad record stops the run
        console.print(f"[red]stopped[/red] at the first bad record (--strict): {escape(str(e))}")
        raise typer.Exit(1) from None
    for err in inp.errors.errors[:20]:
        console.print(f"[yellow]skipped[/] {escape(str(err))}")
    for bad in res.skipped[:20]:
        what = f"{escape(str(bad['id']))}: {escape(str(bad['error']))}"
        console.print(f"[yellow]not encoded[/] {what}")
    state = (
        f"{res.count} rows in {escape(str(out / 'embeddings.npy'))}"
        if res.complete
        else "shards written; merge pending other ranks"
    )
    console.print(
        f"rank {rank}/{world}: {res.encoded_shards} shard(s) encoded, {res.reused_shards} reused; "
        f"{len(inp.errors)} bad record(s) skipped, {len(res.skipped)} failed to encode; {state}"
    )
