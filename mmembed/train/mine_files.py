"""File-level mining: read M-BEIR query files and pools, mine with a model, write the query
files (same names) with ``neg_cand_list`` into an output folder, plus a json of the settings and
counts. Knows nothing about training."""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmembed.data.errors import ErrorLog
from mmembed.data.instructions import query_instruction, read_instructions
from mmembed.data.mbeir import Layout, read_pool, read_queries, write_queries
from mmembed.train.mine import MiningConfig, MiningStats, mine_hard_negatives


def _glob(root: Path, patterns: Sequence[str], what: str) -> list[Path]:
    out = []
    for pat in patterns:
        p = Path(pat)
        hits = sorted(Path(x) for x in glob.glob(str(p if p.is_absolute() else root / p)))
        if not hits:
            raise FileNotFoundError(f"{what} {pat!r} matches no file under {root}")
        out += hits
    return out


def mine_files(
    root: str | Path,
    query_files: Sequence[str],
    pool_files: Sequence[str],
    out_dir: str | Path,
    *,
    model: Any = None,
    cfg: MiningConfig | None = None,
    use_instructions: bool = True,
    seed: int = 42,
    batch_size: int = 32,
    strict: bool = False,
    show_progress: bool = True,
) -> tuple[list[Path], MiningStats]:
    """Mine every query file against the union of the pool files; returns the files written."""
    from mmembed.model import load_embedder

    root, out_dir = Path(root), Path(out_dir)
    cfg = cfg or MiningConfig()
    errors = ErrorLog(strict=strict)
    emb = model if model is not None and not isinstance(model, str) else load_embedder(model)
    emb.eval()
    pool = {c.did: c for p in _glob(root, pool_files, "pool file") for c in read_pool(p, errors)}
    files = _glob(root, query_files, "query file")
    per_file = [(p, list(read_queries(p, errors))) for p in files]
    queries = [q for _, qs in per_file for q in qs]
    instructions = None
    table_path = Layout(root).instructions_file
    if use_instructions and table_path.is_file():
        table = read_instructions(table_path, errors)
        instructions = [query_instruction(q, table, seed=seed) for q in queries]
    mined, stats = mine_hard_negatives(
        emb,
        queries,
        list(pool.values()),
        cfg=cfg,
        image_root=root,
        instructions=instructions,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    written, k = [], 0
    for path, qs in per_file:
        target = out_dir / path.name
        write_queries(target, mined[k : k + len(qs)])
        k += len(qs)
        written.append(target)
    report = {
        "settings": asdict(cfg),
        "stats": stats.as_dict(),
        "model": getattr(emb, "fingerprint", None),
        "queries": [str(p) for p in files],
        "pool": [str(p) for p in _glob(root, pool_files, "pool file")],
        "errors": errors.summary(),
    }
    (out_dir / "mining.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return written, stats
