"""The one on-disk shard of encoded rows, and the one failure policy for encoding a chunk.

A shard is two or three files beside each other, named by a stem (``shards/000012``):
``STEM.npy`` (N, dim) fp16 rows, ``STEM.ids`` (N ids, one a line) and, when any item of that
chunk could not be encoded, ``STEM.skipped.json`` (``[{"id", "error"}]``). Each file is written
atomically (mmembed.data.atomic) and the ``.npy`` goes last, so a shard whose ``.npy`` exists is
complete. ``mmembed encode`` (mmembed.index.encode), ``mmembed index`` (mmembed.search.store)
and ``mmembed demo`` all write and read this format; see docs/evaluation.md and docs/search.md.

The failure policy (:func:`encode_isolating`): encode a chunk; if it fails, bisect it; a single
item that fails is recorded (id + one-line reason) and the run goes on. If every item of a chunk
of two or more fails, the first error is raised: that is a bug or a wrong setting, not bad data.

Knows the EncoderLike protocol and numpy; not folders, plans, libraries or indexes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmembed.data.atomic import atomic_open, atomic_write_json, atomic_write_text
from mmembed.model.protocol import EncoderLike

log = logging.getLogger(__name__)

SHARD_RE = re.compile(r"^(\d{6,})\.npy$")


@dataclass
class EncodeEntry:
    """One item to encode: its id, the record (Query / Candidate / Item) and its instruction."""

    id: str
    record: Any
    instruction: str | None = None


# ---------------------------------------------------------------------- the shard files


def shard_stem(folder: str | Path, number: int) -> Path:
    """``folder/NNNNNN`` (no suffix): the name every file of shard ``number`` starts with."""
    return Path(folder) / f"{number:06d}"


def _npy(stem: Path) -> Path:
    return stem.with_name(stem.name + ".npy")


def _ids(stem: Path) -> Path:
    return stem.with_name(stem.name + ".ids")


def _skipped(stem: Path) -> Path:
    return stem.with_name(stem.name + ".skipped.json")


def has_shard(stem: Path) -> bool:
    """A complete shard is there (its ``.npy`` is written last)."""
    return _npy(stem).is_file() and _ids(stem).is_file()


def list_shards(folder: str | Path) -> list[tuple[int, Path]]:
    """(number, stem) of every complete shard in ``folder``, in number order."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = SHARD_RE.match(p.name)
        if m and _ids(p.with_suffix("")).is_file():
            found.append((int(m[1]), p.with_suffix("")))
    return sorted(found)


def write_shard(
    stem: Path, emb: np.ndarray, ids: Sequence[str], skipped: Sequence[dict[str, str]] = ()
) -> None:
    """Write (len(ids), dim) rows as fp16 with their ids and the chunk's failures; the ``.npy``
    last, so the shard exists only once all of it is on disk."""
    if len(ids) != len(emb):
        raise ValueError(f"{len(ids)} ids for {len(emb)} embeddings")
    bad = [i for i in ids if "\n" in i or "\r" in i]
    if bad:
        raise ValueError(f"id {bad[0]!r} holds a line break; shard ids are one a line")
    if skipped:  # no file when nothing failed: one fsync less per shard
        atomic_write_json(_skipped(stem), list(skipped), indent=2, sort_keys=True)
    else:
        _skipped(stem).unlink(missing_ok=True)  # left by an earlier write of this shard
    atomic_write_text(_ids(stem), "".join(s + "\n" for s in ids))
    with atomic_open(_npy(stem), "wb") as f:
        np.save(f, np.asarray(emb, dtype=np.float16))


def read_shard(stem: Path, *, mmap: bool = True) -> tuple[np.ndarray, list[str]]:
    """The shard's (N, dim) fp16 rows (memory-mapped unless ``mmap`` is False) and N ids."""
    emb = np.load(_npy(stem), mmap_mode="r" if mmap else None, allow_pickle=False)
    ids = _ids(stem).read_text(encoding="utf-8").splitlines()
    if emb.ndim != 2 or len(ids) != emb.shape[0]:
        rows = emb.shape[0] if emb.ndim else 0
        raise ValueError(
            f"{_npy(stem)}: {rows} rows but {len(ids)} ids; delete the shard and rerun"
        )
    return emb, ids


def read_skipped(stem: Path) -> list[dict[str, str]]:
    """The items of the shard's chunk that could not be encoded."""
    p = _skipped(stem)
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else []


def remove_shard(stem: Path) -> None:
    for p in (_npy(stem), _ids(stem), _skipped(stem)):
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------------- the failure policy


def encode_isolating(
    encoder: EncoderLike,
    chunk: Sequence[EncodeEntry],
    *,
    is_query: bool,
    image_root: Any = None,
    batch_size: int = 32,
) -> tuple[list[EncodeEntry], np.ndarray, list[dict[str, str]]]:
    """Encode ``chunk``: (entries encoded, their (n, dim) fp32 rows, ``[{"id", "error"}]`` of
    the entries that failed). A failing call is bisected until the bad entry is isolated, so an
    unreadable image is reported instead of ending the run. If every entry of a chunk of two or
    more fails, the first error is raised (chained)."""
    bad: list[dict[str, str]] = []
    errors: list[BaseException] = []

    def run(part: Sequence[EncodeEntry]) -> list[tuple[EncodeEntry, np.ndarray]]:
        try:
            records = [e.record for e in part]
            if is_query:
                emb = encoder.encode_queries(
                    records,
                    instructions=[e.instruction for e in part],
                    image_root=image_root,
                    batch_size=batch_size,
                    show_progress=False,
                )
            else:
                emb = encoder.encode_candidates(
                    records, image_root=image_root, batch_size=batch_size, show_progress=False
                )
            emb = np.asarray(emb, dtype=np.float32)  # (n, dim)
            if emb.shape != (len(part), encoder.dim):
                raise RuntimeError(f"encoder returned shape {emb.shape} for {len(part)} records")
            return list(zip(part, emb, strict=True))
        except Exception as e:  # noqa: BLE001 - isolated below, raised if nothing encodes
            if len(part) == 1:
                errors.append(e)
                reason = " ".join(f"{type(e).__name__}: {e}".split())  # one line
                bad.append({"id": part[0].id, "error": reason})
                log.warning("not encoded: %s: %s", part[0].id, reason)
                return []
            mid = len(part) // 2
            return run(part[:mid]) + run(part[mid:])

    done = run(chunk)
    if not done and len(chunk) > 1:
        raise RuntimeError(
            f"every one of {len(chunk)} records failed to encode, first: "
            f"{bad[0]['id']}: {bad[0]['error']}"
        ) from errors[0]
    emb = np.stack([v for _, v in done]) if done else np.zeros((0, encoder.dim), np.float32)
    return [e for e, _ in done], emb, bad
