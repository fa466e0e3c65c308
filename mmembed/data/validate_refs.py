"""Cross-file checks for M-BEIR validation on compact id arrays: duplicate ids, pos/neg lists
and qrels against the pools, qrels against pos_cand_list, and the instruction table's keys.
Knows nothing of how files are found (that is ``mmembed.data.validate``)."""

from __future__ import annotations

import csv
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mmembed.data import instructions as instr
from mmembed.data.errors import DataError, ErrorLog
from mmembed.data.mbeir import iter_qrels
from mmembed.data.records import DATASETS, TASKS, hash_did, hash_qid, unhash_did, unhash_qid


class IdArray:
    """A sorted, de-duplicated int64 id array with fast membership (8 bytes per id)."""

    def __init__(self, ids: np.ndarray | Sequence[int], *, distinct_sorted: bool = False) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.ids = ids if distinct_sorted else np.unique(ids)  # (N,) sorted, distinct

    @classmethod
    def union(cls, arrays: Sequence[IdArray]) -> IdArray:
        if not arrays:
            return cls([])
        return cls(np.concatenate([a.ids for a in arrays]))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, value: int) -> bool:
        i = int(np.searchsorted(self.ids, value))
        return i < len(self.ids) and int(self.ids[i]) == value

    def contains(self, values: np.ndarray) -> np.ndarray:
        """Vectorised membership: (M,) int64 -> (M,) bool."""
        if len(self.ids) == 0:
            return np.zeros(len(values), dtype=bool)
        idx = np.searchsorted(self.ids, values).clip(max=len(self.ids) - 1)  # (M,)
        return self.ids[idx] == values


def check_duplicates(
    ids: np.ndarray,
    lines: np.ndarray,
    path: Path,
    fld: str,
    unhash: Callable[[int], str],
    log: ErrorLog,
) -> np.ndarray:
    """Report every repeat of an id with the line of its first occurrence. Returns the sorted
    distinct ids (what an IdArray holds), so callers need not sort again."""
    s = np.sort(ids)  # (N,)
    if len(s) < 2 or not np.any(s[1:] == s[:-1]):
        return s  # the common case: no duplicates, no more work
    order = np.argsort(ids, kind="stable")  # (N,) equal ids keep file order
    s, ln = ids[order], lines[order]
    new_run = np.ones(len(s), dtype=bool)
    new_run[1:] = s[1:] != s[:-1]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(s)), 0))  # (N,)
    dups = np.flatnonzero(~new_run)
    for i in sorted(dups, key=lambda i: ln[i]):
        log.add(
            DataError(
                path,
                int(ln[i]),
                fld,
                f"duplicate {fld} {unhash(int(s[i]))!r} (first on line {int(ln[run_start[i]])})",
                f"{fld}s must be unique in a file",
            )
        )
    return s[new_run]


def _where(local_path: Path | None, has_local: bool, split: str, has_glob: bool) -> str:
    """'is in neither A nor B' / 'is not in A': the pools a did was looked for in."""
    parts = ([f"the local pool {local_path.name}"] if has_local and local_path else []) + (
        [f"the global {split} pool"] if has_glob else []
    )
    if len(parts) == 2:
        return f"is in neither {parts[0]} nor {parts[1]}"
    return f"is not in {parts[0]}" if parts else "is in no pool"


def check_query_refs(
    refs: np.ndarray,
    path: Path,
    split: str,
    local: IdArray | None,
    local_path: Path | None,
    glob: IdArray | None,
    log: ErrorLog,
) -> None:
    """pos/neg dids must be in a pool of their split; test positives in the local pool (local
    evaluation searches it) and every positive in the split's global pool when there is one."""
    if len(refs) == 0 or (local is None and glob is None):
        return
    lines, ids, pos = refs[:, 0], refs[:, 1], refs[:, 2].astype(bool)  # refs: (R, 3)
    in_local = local.contains(ids) if local is not None else np.zeros(len(ids), bool)
    in_glob = glob.contains(ids) if glob is not None else np.zeros(len(ids), bool)
    where = _where(local_path, local is not None, split, glob is not None)
    for i in np.argsort(lines, kind="stable"):
        fld = "pos_cand_list" if pos[i] else "neg_cand_list"
        did = unhash_did(int(ids[i]))
        if not in_local[i] and not in_glob[i]:
            log.add(
                DataError(
                    path,
                    int(lines[i]),
                    fld,
                    f"did {did!r} {where}",
                    "add the candidate to the pool or remove it from the list",
                )
            )
        elif pos[i] and split == "test" and local is not None and not in_local[i]:
            log.add(
                DataError(
                    path,
                    int(lines[i]),
                    fld,
                    f"positive {did!r} is missing from the local pool "
                    f"{local_path.name if local_path else ''}",
                    "local evaluation could never find it",
                )
            )
        elif pos[i] and glob is not None and not in_glob[i]:
            log.add(
                DataError(
                    path,
                    int(lines[i]),
                    fld,
                    f"positive {did!r} is missing from the global {split} pool",
                    "the global pool must hold every positive of its split",
                )
            )


def _pair_keys(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(N,) opaque 16-byte keys of (qid hash, did hash) pairs, equal exactly when both ids are:
    any dataset id works (a packed int64 key would lose pairs of large dataset ids)."""
    a = np.ascontiguousarray(np.stack([q, d], axis=1).astype(np.int64))  # (N, 2)
    return a.view(np.dtype((np.void, 16))).ravel()  # (N,)


def check_qrels(
    path: Path,
    task: int,
    split: str,
    query_path: Path,
    queries: np.ndarray,
    bad_qids: list[int],
    refs: np.ndarray,
    local: IdArray | None,
    glob: IdArray | None,
    log: ErrorLog,
) -> int:
    """Stream a qrels file: ids, task, known qids and dids, and agreement with pos_cand_list
    (both directions; queries with field errors are left out of the comparison). Returns the
    number of qrels lines read."""
    known_q, bad_q = IdArray(queries[:, 0]), IdArray(bad_qids)
    rows = array("q")  # (line, qid hash, did hash) triples, flat
    n = 0
    for line, qid, did, t in iter_qrels(path, log):
        n += 1
        if t != task:
            log.add(
                DataError(path, line, "task_id", f"task {t} but the file name says task {task}")
            )
        try:
            qh, dh = hash_qid(qid), hash_did(did)
        except ValueError as e:
            log.add(DataError(path, line, None, str(e)))
            continue
        if qh not in known_q:
            log.add(
                DataError(
                    path,
                    line,
                    "qid",
                    f"qid {qid!r} is not in {query_path.name}",
                    "qrels must only name queries of their query file",
                )
            )
            continue
        pools = [p for p in (local, glob) if p is not None]
        if pools and not any(dh in p for p in pools):
            log.add(
                DataError(
                    path, line, "did", f"did {did!r} is in no candidate pool of split {split}"
                )
            )
        if qh not in bad_q:
            rows.extend((line, qh, dh))
    # qrels <-> pos_cand_list, as packed (qid, did) keys
    ql = queries[:, 1]  # (Q,) increasing line numbers
    pos = refs[refs[:, 2] == 1]  # (P, 3) positives: line, did hash, 1
    p_lines = pos[:, 0]
    p_q = queries[np.searchsorted(ql, p_lines), 0] if len(pos) else np.zeros(0, np.int64)
    p_keys = _pair_keys(p_q, pos[:, 1])
    r = np.frombuffer(rows, dtype=np.int64).reshape(-1, 3)  # (R, 3)
    r_keys = _pair_keys(r[:, 1], r[:, 2])
    for i in np.flatnonzero(~np.isin(r_keys, p_keys)):
        log.add(
            DataError(
                path,
                int(r[i, 0]),
                None,
                f"{unhash_qid(int(r[i, 1]))} -> {unhash_did(int(r[i, 2]))} "
                f"is not in that query's pos_cand_list",
                "regenerate the qrels from the queries",
            )
        )
    for i in np.flatnonzero(~np.isin(p_keys, r_keys)):
        log.add(
            DataError(
                query_path,
                int(p_lines[i]),
                "pos_cand_list",
                f"positive {unhash_did(int(pos[i, 1]))!r} is missing from {path.name}",
                "regenerate the qrels from the queries",
            )
        )
    return n


def check_instructions(
    path: Path, log: ErrorLog, warn: Callable[..., None]
) -> tuple[set | None, int]:
    """Read the instruction table (its reader checks fields); then duplicate keys, dataset
    names that contradict M-BEIR ids, and modality pairs that are no M-BEIR task.
    Returns (the set of (dataset_id, query modality, candidate modality) keys, rows)."""
    try:
        instr.read_instructions(path, log)
    except DataError as e:
        log.add(e)
        return None, 0
    pairs = set(TASKS.values())
    known = {name.lower(): i for name, i in DATASETS.items()}
    keys: dict[tuple, int] = {}
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    for lineno, cols in enumerate(rows[1:], 2):
        if len(cols) < 5 or not cols[3].strip().isdigit():
            continue  # reported by the reader
        qm, cm, name, did = (c.strip() for c in cols[:4])
        key = (int(did), qm, cm)
        if key in keys:
            log.add(
                DataError(
                    path,
                    lineno,
                    None,
                    f"duplicate key {key} (first on line {keys[key]})",
                    "merge the prompts into one row",
                )
            )
            continue
        keys[key] = lineno
        if name.lower() in known and known[name.lower()] != int(did):
            log.add(
                DataError(
                    path,
                    lineno,
                    "dataset_id",
                    f"{did} but M-BEIR's {name} is dataset {known[name.lower()]}",
                )
            )
        if (qm, cm) not in pairs:
            warn(path, lineno, None, f"({qm} -> {cm}) is not an M-BEIR task's modality pair")
    return set(keys), len(keys)
