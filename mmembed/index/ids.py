"""String ids <-> the int64 labels FAISS stores. M-BEIR dids ('d:n') hash the way the reference
does (``d * 10_000_000 + n``); any other ids get sequential labels kept in a table saved with the
index. Knows nothing of FAISS, vectors or models."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mmembed.data.atomic import atomic_open
from mmembed.data.records import DID_BASE

_DID_RE = re.compile(r"^\d+:\d+$")
MODES = ("auto", "mbeir", "table")


def looks_like_dids(ids: Iterable[str]) -> bool:
    """True when every id is an M-BEIR did 'd:n' with n < 10,000,000."""
    for s in ids:
        if not isinstance(s, str) or not _DID_RE.match(s):
            return False
        if int(s.split(":", 1)[1]) >= DID_BASE:
            return False
    return True


def _hash_dids(ids: Sequence[str]) -> np.ndarray:
    out = np.empty(len(ids), dtype=np.int64)
    for i, s in enumerate(ids):
        if not isinstance(s, str) or not _DID_RE.match(s):
            raise ValueError(
                f"id {s!r} is not an M-BEIR did 'd:n', but this index hashes dids "
                "(build it with id_mode='table' to index arbitrary string ids)"
            )
        d, n = s.split(":", 1)
        n_int = int(n)
        if n_int >= DID_BASE:
            raise ValueError(f"did {s!r}: within-dataset number must be < {DID_BASE}")
        out[i] = int(d) * DID_BASE + n_int
    return out


class IdMap:
    """Maps string ids to int64 labels and back. ``mode`` is 'mbeir' (hash dids) or 'table'."""

    def __init__(self, mode: str = "table", strings: list[str | None] | None = None) -> None:
        if mode not in ("mbeir", "table"):
            raise ValueError(f"unknown id mode {mode!r}; expected 'mbeir' or 'table'")
        self.mode = mode
        # table mode: label -> string (None where an id was removed); string -> label
        self._strings: list[str | None] = list(strings or [])
        self._labels: dict[str, int] = {s: i for i, s in enumerate(self._strings) if s is not None}
        self._lookup: np.ndarray | None = None  # object array cache of _strings

    @classmethod
    def for_ids(cls, ids: Sequence[str], mode: str = "auto") -> IdMap:
        if mode not in MODES:
            raise ValueError(f"unknown id mode {mode!r}; expected one of {MODES}")
        if mode == "auto":
            mode = "mbeir" if len(ids) and looks_like_dids(ids) else "table"
        return cls(mode)

    # ------------------------------------------------------------------ string -> label
    def assign(self, ids: Sequence[str]) -> np.ndarray:
        """Labels for new ids (table mode gives fresh labels). Duplicates are refused."""
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(s for s in ids if s in seen or seen.add(s))  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate id {dup!r} in the ids to add; ids must be unique")
        if self.mode == "mbeir":
            return _hash_dids(ids)
        for s in ids:
            if not isinstance(s, str) or not s or "\n" in s:
                raise ValueError(f"id {s!r} must be a non-empty string without newlines")
            if s in self._labels:
                raise ValueError(f"id {s!r} is already in the index; remove it first")
        start = len(self._strings)
        self._strings.extend(ids)
        for i, s in enumerate(ids):
            self._labels[s] = start + i
        self._lookup = None
        return np.arange(start, start + len(ids), dtype=np.int64)

    def labels_of(self, ids: Sequence[str]) -> np.ndarray:
        """Labels of known ids (unknown ids raise KeyError naming them)."""
        if self.mode == "mbeir":
            return _hash_dids(ids)
        missing = [s for s in ids if s not in self._labels]
        if missing:
            raise KeyError(f"{len(missing)} id(s) not in the index, e.g. {missing[:3]}")
        return np.fromiter((self._labels[s] for s in ids), dtype=np.int64, count=len(ids))

    def forget(self, ids: Sequence[str]) -> None:
        if self.mode == "table":
            for s in ids:
                label = self._labels.pop(s, None)
                if label is not None:
                    self._strings[label] = None
            self._lookup = None

    # ------------------------------------------------------------------ label -> string
    def strings(self, labels: np.ndarray) -> list[list[str]]:
        """(Q, k) labels -> ids per row; -1 (no result) is dropped from the row."""
        labels = np.asarray(labels)
        if self.mode == "mbeir":
            d, n = np.divmod(labels, DID_BASE)
            return [
                [
                    f"{a}:{b}"
                    for a, b, lab in zip(dr.tolist(), nr.tolist(), lr.tolist(), strict=True)
                    if lab >= 0
                ]
                for dr, nr, lr in zip(d, n, labels, strict=True)
            ]
        if self._lookup is None:
            self._lookup = np.array([*self._strings, None], dtype=object)  # -1 -> None
        rows = self._lookup[labels]
        return [[s for s in row if s is not None] for row in rows.tolist()]

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path) -> None:
        if self.mode == "table":
            with atomic_open(folder / "ids.txt", "w", newline="\n") as f:
                for s in self._strings:
                    f.write(("" if s is None else s) + "\n")

    @classmethod
    def load(cls, folder: Path, mode: str) -> IdMap:
        if mode == "mbeir":
            return cls("mbeir")
        path = folder / "ids.txt"
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: the id table of this index is missing (re-save the index)"
            )
        with open(path, encoding="utf-8") as f:
            strings = [line.rstrip("\n") or None for line in f]
        return cls("table", strings)
