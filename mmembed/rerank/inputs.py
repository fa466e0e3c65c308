"""Fetching what a rerank needs from an M-BEIR tree: the run's queries, the candidates in its top
k (streamed from local pools, then the global pool; only needed records are kept) and the
instruction table. Bad records are reported and skipped. Knows nothing of models."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmembed.data.errors import ErrorLog
from mmembed.data.instructions import InstructionTable, read_instructions
from mmembed.data.mbeir import Layout, read_pool, read_queries
from mmembed.data.records import Candidate, Query

log = logging.getLogger(__name__)


@dataclass
class RerankInputs:
    queries: dict[str, Query]
    candidates: dict[str, Candidate]
    instructions: InstructionTable | None
    errors: ErrorLog = field(default_factory=ErrorLog)
    missing_queries: set[str] = field(default_factory=set)
    missing_candidates: set[str] = field(default_factory=set)


def load_inputs(
    root: str | Path,
    run: Mapping[str, Sequence[tuple[str, float]]],
    *,
    k: int = 10,
    split: str = "test",
    strict: bool = False,
) -> RerankInputs:
    """Queries of ``split`` named in ``run`` and the candidates in each query's top ``k``."""
    layout = Layout(root)
    if not layout.root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such data root (an M-BEIR tree with query/, cand_pool/)"
        )
    errors = ErrorLog(strict=strict)
    want_q = set(run)
    want_d = {did for ranked in run.values() for did, _ in ranked[:k]}

    sets = layout.query_sets(split)
    if not sets:
        raise FileNotFoundError(
            f"{layout.root / 'query' / split}: no M-BEIR query files for split {split!r}; check --data and --split"
        )
    queries: dict[str, Query] = {}
    for name, task, s in sets:
        for q in read_queries(layout.query_file(name, task, s), errors):
            if q.qid in want_q:
                queries[q.qid] = q

    candidates: dict[str, Candidate] = {}
    pool_files = [layout.pool_file(name, task) for name, task, _ in sets]
    pool_files.append(layout.global_pool_file(split))
    for path in pool_files:
        if len(candidates) == len(want_d):
            break
        if not path.exists():
            continue
        for c in read_pool(path, errors):
            if c.did in want_d and c.did not in candidates:
                candidates[c.did] = c

    instructions = None
    if layout.instructions_file.exists():
        instructions = read_instructions(layout.instructions_file, errors)
    else:
        log.info("%s not found; using the templates' own instructions", layout.instructions_file)
    return RerankInputs(
        queries,
        candidates,
        instructions,
        errors,
        missing_queries=want_q - set(queries),
        missing_candidates=want_d - set(candidates),
    )
