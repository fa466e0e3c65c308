"""Embedding shards of a library: fp16 rows keyed by content key, one folder per model
fingerprint, each shard written atomically (temp + rename) the moment its batch is encoded.

Knows nothing of files, dids or models beyond the fingerprint string it is given."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_SHARD_RE = re.compile(r"^(\d{6,})\.npz$")
MAX_SHARDS = 64  # compact when more shards than this
MAX_DEAD_FRACTION = 0.25  # ... or when more than this fraction of stored rows is no longer used


class ShardStore:
    """``root/<fingerprint[:16]>/NNNNNN.npz`` with arrays ``keys`` (N,) str and ``emb`` (N, D) fp16."""

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.root = Path(root)
        self.folder = self.root / hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        self._stored_rows = 0

    def _shards(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if _SHARD_RE.match(p.name))

    def load(self, wanted: set[str]) -> dict[str, np.ndarray]:
        """key -> (D,) fp16 row for every stored key in ``wanted``. A damaged shard (a crash can
        only leave temp files, but disks fail) is reported and ignored: its rows are re-encoded."""
        found: dict[str, np.ndarray] = {}
        self._stored_rows = 0
        for shard in self._shards():
            try:
                with np.load(shard, allow_pickle=False) as z:
                    keys, emb = z["keys"], z["emb"]  # (N,), (N, D)
            except (OSError, ValueError, KeyError) as e:
                log.warning(
                    "%s: unreadable embedding shard (%s); its items will be re-encoded", shard, e
                )
                continue
            self._stored_rows += len(keys)
            for k, row in zip(keys.tolist(), emb, strict=True):
                if k in wanted:
                    found[k] = row
        return found

    def append(self, keys: Sequence[str], emb: np.ndarray) -> Path:
        """Commit one batch: (len(keys), D) rows stored as fp16 in a new shard."""
        if len(keys) != len(emb):
            raise ValueError(f"{len(keys)} keys for {len(emb)} embeddings")
        shards = self._shards()
        number = int(_SHARD_RE.match(shards[-1].name)[1]) + 1 if shards else 0
        self.folder.mkdir(parents=True, exist_ok=True)
        out = self.folder / f"{number:06d}.npz"
        _write(out, np.asarray(keys, dtype=str), np.asarray(emb, dtype=np.float16))
        self._stored_rows += len(keys)
        return out

    def compact(self, live: set[str]) -> None:
        """Rewrite the shards as one holding only ``live`` keys, when enough rows are dead or
        there are too many shards. New shard first, then the old ones go: a crash in between
        leaves duplicates, which are harmless (rows are keyed by content)."""
        shards = self._shards()
        dead = self._stored_rows - len(live)
        if len(shards) <= MAX_SHARDS and dead <= MAX_DEAD_FRACTION * max(1, self._stored_rows):
            return
        rows = self.load(live)
        keys = sorted(rows)
        number = int(_SHARD_RE.match(shards[-1].name)[1]) + 1 if shards else 0
        dim = next(iter(rows.values())).shape[0] if rows else 0
        emb = np.stack([rows[k] for k in keys]) if keys else np.zeros((0, dim), np.float16)
        _write(self.folder / f"{number:06d}.npz", np.asarray(keys, dtype=str), emb)
        for s in shards:
            s.unlink(missing_ok=True)
        self._stored_rows = len(keys)
        log.info("compacted %d shards into one (%d rows)", len(shards), len(keys))

    def drop_other_models(self) -> None:
        """Delete shards of other model fingerprints (after a successful update with this one)."""
        if not self.root.is_dir():
            return
        for d in self.root.iterdir():
            if d.is_dir() and d != self.folder:
                shutil.rmtree(d, ignore_errors=True)


def _write(out: Path, keys: np.ndarray, emb: np.ndarray) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, keys=keys, emb=emb)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
