"""TREC run files: ``qid Q0 did rank score tag``, one line per retrieved candidate.
Knows nothing of models, indexes or metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from mmembed.data.atomic import atomic_open
from mmembed.data.errors import DataError, ErrorLog, report

Run = dict[str, list[tuple[str, float]]]  # qid -> [(did, score)] best first


def write_run(
    path: str | Path, run: Mapping[str, Sequence[tuple[str, float]]], tag: str = "mmembed"
) -> int:
    """Write a run atomically; candidates are written in the given order with ranks 1..k."""
    with RunWriter(path, tag) as w:
        for qid, ranked in run.items():
            w.add(qid, [d for d, _ in ranked], [s for _, s in ranked])
    return w.lines


def _rank_and_score(parts: list[str]) -> tuple[int, float] | str:
    """(rank, score) of a split run line, or what is wrong with the line."""
    if len(parts) < 6:
        return f"expected 6 columns 'qid Q0 did rank score tag', got {len(parts)}"
    try:
        return int(parts[3]), float(parts[4])
    except ValueError:
        return f"rank {parts[3]!r} or score {parts[4]!r} is not a number"


def iter_run(
    path: str | Path, errors: ErrorLog | None = None
) -> Iterator[tuple[str, str, int, float]]:
    """Yield (qid, did, rank, score) per line. Six columns ``qid Q0 did rank score tag``; extra
    trailing columns (UniIR writes seven) are ignored. Bad lines go to ``errors`` (raise if None)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            fields = _rank_and_score(parts)
            if isinstance(fields, str):
                report(errors, DataError(path, lineno, None, fields))
                continue
            rank, score = fields
            yield parts[0], parts[2], rank, score


def read_run(path: str | Path, errors: ErrorLog | None = None) -> Run:
    """qid -> [(did, score)] sorted by rank (ties in the file keep their rank order)."""
    rows: dict[str, list[tuple[int, str, float]]] = {}
    for qid, did, rank, score in iter_run(path, errors):
        rows.setdefault(qid, []).append((rank, did, score))
    return {q: [(d, s) for _, d, s in sorted(r, key=lambda t: t[0])] for q, r in rows.items()}


class RunWriter:
    """Write a run one query at a time (``with RunWriter(path, tag) as w: w.add(qid, ranked)``),
    atomically: the file appears under its name only when the block ends without error."""

    def __init__(self, path: str | Path, tag: str = "mmembed") -> None:
        self.path = Path(path)
        self.tag = tag
        self.lines = 0
        self._stack = contextlib.ExitStack()
        self._f: IO[Any] | None = None

    def __enter__(self) -> RunWriter:
        # the temp file stays open across add() calls; atomic_open renames it on a clean exit
        self._f = self._stack.enter_context(atomic_open(self.path, "w", newline="\n"))
        return self

    def add(self, qid: str, dids: Sequence[str], scores: Sequence[float]) -> None:
        assert self._f is not None, "use RunWriter as a context manager"
        self._f.writelines(
            f"{qid} Q0 {did} {rank} {float(score):.6f} {self.tag}\n"
            for rank, (did, score) in enumerate(zip(dids, scores, strict=False), 1)
        )
        self.lines += min(len(dids), len(scores))

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._f is not None
        self._f = None
        self._stack.__exit__(exc_type, exc, tb)  # rename, or remove the temp file on error


def read_run_ids(
    path: str | Path, max_rank: int | None = None, errors: ErrorLog | None = None
) -> dict[str, list[str]]:
    """qid -> dids in rank order (ranks beyond ``max_rank`` dropped): a lighter read_run for
    scoring large runs, holding no scores."""
    rows: dict[str, list[tuple[int, str]]] = {}
    for qid, did, rank, _ in iter_run(path, errors):
        if max_rank is None or rank <= max_rank:
            rows.setdefault(qid, []).append((rank, did))
    return {q: [d for _, d in sorted(r, key=lambda t: t[0])] for q, r in rows.items()}
