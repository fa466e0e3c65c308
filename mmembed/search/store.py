"""Embedding shards of a library: fp16 rows keyed by content key, one folder per model
fingerprint, one shard (mmembed.index.embedding_shards' format, ids = content keys) written
the moment its batch is encoded. Libraries made before that format (``NNNNNN.npz`` shards) are
converted in place on their next update, without re-encoding.

Knows nothing of files, dids or models beyond the fingerprint string it is given."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmembed.index.embedding_shards import (
    list_shards,
    read_shard,
    remove_shard,
    shard_stem,
    write_shard,
)

log = logging.getLogger(__name__)

MAX_SHARDS = 64  # compact when more shards than this
MAX_DEAD_FRACTION = 0.25  # ... or when more than this fraction of stored rows is no longer used
_LEGACY_RE = re.compile(r"^(\d{6,})\.npz$")  # the format before index/embedding_shards


class ShardStore:
    """``root/<sha256(fingerprint)[:16]>/NNNNNN.{npy,ids,skipped.json}``: (N, D) fp16 rows and
    their N content keys."""

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.root = Path(root)
        self.folder = self.root / hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        self._stored_rows = 0

    def _next_number(self) -> int:
        shards = list_shards(self.folder)
        return shards[-1][0] + 1 if shards else 0

    def load(self, wanted: set[str]) -> dict[str, np.ndarray]:
        """key -> (D,) fp16 row for every stored key in ``wanted``. A damaged shard (a crash can
        only leave temp files, but disks fail) is reported and ignored: its rows are re-encoded."""
        found: dict[str, np.ndarray] = {}
        self._stored_rows = 0
        for _, stem in list_shards(self.folder):
            try:
                emb, keys = read_shard(stem, mmap=False)  # (N, D), N keys
            except (OSError, ValueError, EOFError) as e:
                log.warning(
                    "%s: unreadable embedding shard (%s); its items will be re-encoded", stem, e
                )
                continue
            self._stored_rows += len(keys)
            for k, row in zip(keys, emb, strict=True):
                if k in wanted:
                    found[k] = row
        return found

    def append(
        self, keys: Sequence[str], emb: np.ndarray, failed: Sequence[dict[str, str]] = ()
    ) -> Path:
        """Commit one batch: (len(keys), D) rows stored as fp16 in a new shard (with the batch's
        items that failed to encode); returns the shard's stem."""
        stem = shard_stem(self.folder, self._next_number())
        write_shard(stem, emb, list(keys), failed)
        self._stored_rows += len(keys)
        return stem

    def compact(self, live: set[str]) -> None:
        """Rewrite the shards as one holding only ``live`` keys, when enough rows are dead or
        there are too many shards. New shard first, then the old ones go: a crash in between
        leaves duplicates, which are harmless (rows are keyed by content)."""
        shards = list_shards(self.folder)
        dead = self._stored_rows - len(live)
        if len(shards) <= MAX_SHARDS and dead <= MAX_DEAD_FRACTION * max(1, self._stored_rows):
            return
        rows = self.load(live)
        keys = sorted(rows)
        dim = next(iter(rows.values())).shape[0] if rows else 0
        emb = np.stack([rows[k] for k in keys]) if keys else np.zeros((0, dim), np.float16)
        self.append(keys, emb)
        for _, stem in shards:
            remove_shard(stem)
        self._stored_rows = len(keys)
        log.info("compacted %d shards into one (%d rows)", len(shards), len(keys))

    def convert_legacy(self) -> int:
        """Rewrite ``NNNNNN.npz`` shards (keys + fp16 emb, the format before
        index/embedding_shards) as shards of the current format, keeping every row; an
        unreadable one is dropped and its items re-encoded. Returns how many were converted.
        Writes: call it under the library's lock."""
        if not self.folder.is_dir():
            return 0
        legacy = sorted(p for p in self.folder.iterdir() if _LEGACY_RE.match(p.name))
        converted = 0
        for path in legacy:
            try:
                with np.load(path, allow_pickle=False) as z:
                    keys, emb = z["keys"].tolist(), z["emb"]  # (N,), (N, D)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                log.warning(
                    "%s: unreadable embedding shard of an earlier mmembed (%s); its items will "
                    "be re-encoded",
                    path,
                    e,
                )
            else:
                write_shard(shard_stem(self.folder, self._next_number()), emb, keys)
                converted += 1
            path.unlink()  # after the new shard is in place: a crash leaves harmless duplicates
        if converted:
            log.warning(
                "%s: converted %d embedding shard(s) from the .npz format of earlier mmembed "
                "versions to .npy + .ids (nothing re-encoded)",
                self.folder,
                converted,
            )
        return converted

    def drop_other_models(self) -> None:
        """Delete shards of other model fingerprints (after a successful update with this one)."""
        if not self.root.is_dir():
            return
        for d in self.root.iterdir():
            if d.is_dir() and d != self.folder:
                shutil.rmtree(d, ignore_errors=True)
