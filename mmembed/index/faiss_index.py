"""A FAISS index over string ids with a manifest: any ``index_factory`` string (exact inner
product by default), add/remove, top-k search in query chunks (memory grows with k, never with
the pool), atomic save/load that refuses embeddings of another model. Knows nothing of models."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmembed.index.device import import_faiss, index_to_gpus, resolve_gpu
from mmembed.index.ids import IdMap

FORMAT_VERSION = 1
ADD_CHUNK = 65_536  # rows converted to float32 at a time while adding
TRAIN_MAX = 262_144  # vectors sampled to train IVF/PQ quantisers
METRICS = {"ip": "METRIC_INNER_PRODUCT", "l2": "METRIC_L2"}


class IndexMismatchError(ValueError):
    """The index was built with another model, dimension or settings than it is used with."""


def _as_float32(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{what} must be a (n, dim) array, got shape {x.shape}")
    if x.shape[1] != dim:
        raise IndexMismatchError(
            f"{what} have dimension {x.shape[1]} but the index holds {dim}-d vectors "
            "(were they made by another model?)"
        )
    return np.ascontiguousarray(x, dtype=np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    """Unit rows: ``x`` itself when already unit-norm, else a new array (never in place)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # (n,)
    if x.size and np.abs(norms - 1.0).max() > 1e-4:
        return x / np.maximum(norms, 1e-12)[:, None]  # (n, dim)
    return x


class Index:
    """Use ``Index.build`` or ``Index.load``; the constructor wraps an existing faiss index."""

    def __init__(
        self,
        faiss_index: Any,
        idmap: IdMap,
        *,
        factory: str,
        metric: str,
        fingerprint: str | None,
        normalized: bool,
        gpu: bool | str | int = "auto",
        tombstones: set[int] | None = None,
    ) -> None:
        self._index = faiss_index  # IndexIDMap2 over the factory index (CPU master copy)
        self._idmap = idmap
        self.factory = factory
        self.metric = metric
        self.fingerprint = fingerprint
        self.normalized = normalized
        self._ngpu = resolve_gpu(gpu)
        self._device_index: Any = None  # search replica (GPU shards), rebuilt after changes
        self._tombstones: set[int] = set(tombstones or ())  # removed labels the index cannot drop

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(
        cls,
        dim: int,
        *,
        factory: str = "Flat",
        metric: str = "ip",
        fingerprint: str | None = None,
        normalized: bool = True,
        gpu: bool | str | int = "auto",
        id_mode: str = "table",
    ) -> Index:
        faiss = import_faiss()
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(METRICS)}")
        try:
            # IDMap2 keeps our int64 labels (and their reverse map) around any factory index
            index = faiss.index_factory(
                int(dim), f"IDMap2,{factory}", getattr(faiss, METRICS[metric])
            )
        except RuntimeError as e:
            raise ValueError(f"faiss cannot build index_factory({dim}, {factory!r}): {e}") from None
        idx = cls(
            index,
            IdMap(id_mode if id_mode != "auto" else "table"),
            factory=factory,
            metric=metric,
            fingerprint=fingerprint,
            normalized=normalized,
            gpu=gpu,
        )
        return idx

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        ids: Sequence[str],
        *,
        factory: str = "Flat",
        metric: str = "ip",
        fingerprint: str | None = None,
        normalized: bool = True,
        gpu: bool | str | int = "auto",
        id_mode: str = "auto",
        seed: int = 0,
        train_size: int = TRAIN_MAX,
    ) -> Index:
        """Index ``embeddings`` (N, dim) (any float dtype, memmaps fine) under ``ids``."""
        embeddings = (
            np.asarray(embeddings) if not isinstance(embeddings, np.ndarray) else embeddings
        )
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (N, dim), got shape {embeddings.shape}")
        if len(ids) != embeddings.shape[0]:
            raise ValueError(f"{embeddings.shape[0]} embeddings but {len(ids)} ids")
        mode = IdMap.for_ids(ids, id_mode).mode
        idx = cls.empty(
            embeddings.shape[1],
            factory=factory,
            metric=metric,
            fingerprint=fingerprint,
            normalized=normalized,
            gpu=gpu,
            id_mode=mode,
        )
        if not idx._index.is_trained:
            idx.train(embeddings, seed=seed, size=train_size)
        idx.add(embeddings, ids)
        return idx

    def train(self, embeddings: np.ndarray, *, seed: int = 0, size: int = TRAIN_MAX) -> None:
        """Train the quantiser (IVF, PQ) on a seeded sample of at most ``size`` rows."""
        n = embeddings.shape[0]
        rows = np.arange(n)
        if n > size:
            rows = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        sample = _as_float32(embeddings[rows], self.dim, "training vectors")
        if self.normalized:
            sample = _normalise(sample)
        self._index.train(sample)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return int(self._index.d)

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._tombstones)

    @property
    def id_mode(self) -> str:
        return self._idmap.mode

    def __repr__(self) -> str:
        return (
            f"Index(n={len(self)}, dim={self.dim}, factory={self.factory!r}, metric={self.metric!r}, "
            f"fingerprint={(self.fingerprint or '')[:12]!r})"
        )

    # ------------------------------------------------------------------ changes
    def add(self, embeddings: np.ndarray, ids: Sequence[str]) -> None:
        if embeddings.shape[0] != len(ids):
            raise ValueError(f"{embeddings.shape[0]} embeddings but {len(ids)} ids")
        if not self._index.is_trained:
            raise RuntimeError(
                f"index {self.factory!r} is not trained: build it with Index.build or call .train"
            )
        labels = self._idmap.assign(list(ids))
        if self._tombstones and not self._tombstones.isdisjoint(labels.tolist()):
            self._compact()  # a removed label comes back: its old vector must go first
        if self._idmap.mode == "mbeir" and self._index.ntotal:
            present = labels[np.isin(labels, self._live_labels())]
            if len(present):
                raise ValueError(
                    f"{len(present)} id(s) are already in the index, e.g. "
                    f"{self._idmap.strings(present[None, :3])[0]}; remove them first"
                )
        for start in range(0, len(ids), ADD_CHUNK):
            chunk = _as_float32(embeddings[start : start + ADD_CHUNK], self.dim, "embeddings")
            if self.normalized:
                chunk = _normalise(chunk)
            self._index.add_with_ids(chunk, labels[start : start + ADD_CHUNK])
        self._device_index = None

    def _compact(self) -> None:
        """Rebuild an index that cannot delete (HNSW) without its tombstoned vectors, so a label
        removed and added again never brings its old vector back. Costs one pass over the index
        (the stored vectors are reconstructed, quantisers kept); runs only on such a re-add."""
        faiss = import_faiss()
        labels = faiss.vector_to_array(self._index.id_map)  # (ntotal,) int64, by position
        keep = ~np.isin(labels, np.fromiter(self._tombstones, dtype=np.int64))  # (ntotal,)
        inner = faiss.downcast_index(self._index.index)
        vectors = inner.reconstruct_n(0, int(inner.ntotal))  # (ntotal, dim) float32
        fresh = faiss.clone_index(self._index)
        fresh.reset()  # empties storage and graph, keeps trained quantisers
        if keep.any():
            fresh.add_with_ids(np.ascontiguousarray(vectors[keep]), labels[keep])
        self._index = fresh
        self._tombstones.clear()
        self._device_index = None

    def _live_labels(self) -> np.ndarray:
        faiss = import_faiss()
        labels = faiss.vector_to_array(self._index.id_map)  # (ntotal,) int64
        if self._tombstones:
            labels = labels[~np.isin(labels, np.fromiter(self._tombstones, dtype=np.int64))]
        return labels

    def remove(self, ids: Sequence[str]) -> int:
        """Remove ids; returns how many were present. Index types that cannot delete (HNSW)
        keep the vectors but never return them again."""
        faiss = import_faiss()
        if self._idmap.mode == "table":
            ids = [s for s in ids if s in self._idmap._labels]
        labels = self._idmap.labels_of(list(ids))
        if not len(labels):
            return 0
        try:
            removed = int(self._index.remove_ids(faiss.IDSelectorBatch(labels)))
        except RuntimeError:
            present = labels[np.isin(labels, self._live_labels())]
            self._tombstones.update(present.tolist())
            removed = len(present)
        self._idmap.forget(list(ids))
        self._device_index = None
        return removed

    # ------------------------------------------------------------------ search
    def search_labels(
        self,
        queries: np.ndarray,
        k: int,
        *,
        batch_size: int = 8192,
        params: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores (Q, k) float32, labels (Q, k) int64, -1 where fewer than k exist)."""
        queries = _as_float32(queries, self.dim, "queries")
        if self.normalized and self.metric == "ip":
            queries = _normalise(queries)
        index = self._search_index(params)
        extra = len(self._tombstones)
        kk = max(1, min(int(k) + extra, int(self._index.ntotal)))
        nq = queries.shape[0]
        scores = np.empty((nq, k), dtype=np.float32)
        labels = np.empty((nq, k), dtype=np.int64)
        for start in range(0, nq, batch_size):
            q = queries[start : start + batch_size]  # (b, dim)
            s, lab = index.search(q, kk)  # (b, kk) each
            if extra:
                s, lab = self._drop_tombstones(s, lab)
            width = min(k, s.shape[1])
            scores[start : start + len(q), :width] = s[:, :width]
            labels[start : start + len(q), :width] = lab[:, :width]
            if width < k:
                scores[start : start + len(q), width:] = -np.inf
                labels[start : start + len(q), width:] = -1
        # metric "l2": faiss returns squared distances (smaller is better), kept as they are
        bad = labels < 0
        if bad.any():
            scores[bad] = -np.inf if self.metric == "ip" else np.inf
        return scores, labels

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        fingerprint: str | None = None,
        batch_size: int = 8192,
        params: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k (scores (Q, w) float32, ids per query), w = min(k, results found): an index
        smaller than k gives w = its size, and ``len(ids[i]) == scores.shape[1]`` (an
        approximate index that finds fewer for some query alone leaves -inf in that row's
        tail, its ids row shorter). ``fingerprint`` = the query model's, checked."""
        if fingerprint is not None:
            self.check_fingerprint(fingerprint)
        scores, labels = self.search_labels(queries, k, batch_size=batch_size, params=params)
        found = (labels >= 0).sum(axis=1)  # (Q,)
        width = int(found.max()) if len(found) else 0
        return scores[:, :width], self._idmap.strings(labels[:, :width])

    def ids_of(self, labels: np.ndarray) -> list[list[str]]:
        return self._idmap.strings(np.atleast_2d(labels))

    def labels_of(self, ids: Sequence[str]) -> np.ndarray:
        return self._idmap.labels_of(list(ids))

    def _drop_tombstones(self, s: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dead = np.isin(lab, np.fromiter(self._tombstones, dtype=np.int64))
        order = np.argsort(dead, axis=1, kind="stable")  # live results first, rank order kept
        s = np.take_along_axis(s, order, 1)
        lab = np.take_along_axis(np.where(dead, -1, lab), order, 1)
        return s, lab

    def _search_index(self, params: dict[str, Any] | None) -> Any:
        if self._device_index is None:
            self._device_index = index_to_gpus(self._index, self._ngpu)
        if params:
            faiss = import_faiss()
            spec = ",".join(f"{k}={v}" for k, v in params.items())
            on_gpu = self._device_index is not self._index and hasattr(faiss, "GpuParameterSpace")
            ps = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
            try:
                ps.set_index_parameters(self._device_index, spec)
            except RuntimeError as e:
                raise ValueError(
                    f"index {self.factory!r} does not take search parameters {spec!r}: {e}"
                ) from None
        return self._device_index

    def check_fingerprint(self, fingerprint: str | None) -> None:
        if fingerprint and self.fingerprint and fingerprint != self.fingerprint:
            raise IndexMismatchError(
                f"this index was built with model fingerprint {self.fingerprint[:16]}... but the "
                f"queries come from model {fingerprint[:16]}...: embeddings of different models are "
                "not comparable. Search with the model that built the index, or rebuild the index."
            )

    # ------------------------------------------------------------------ persistence
    def manifest(self) -> dict[str, Any]:
        faiss = import_faiss()
        return {
            "format_version": FORMAT_VERSION,
            "factory": self.factory,
            "metric": self.metric,
            "dim": self.dim,
            "count": len(self),
            "normalized": self.normalized,
            "fingerprint": self.fingerprint,
            "id_mode": self._idmap.mode,
            "tombstones": sorted(self._tombstones),
            "faiss_version": faiss.__version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``folder`` atomically: a temporary sibling is filled, then renamed into place."""
        faiss = import_faiss()
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            faiss.write_index(self._index, str(tmp / "index.faiss"))
            self._idmap.save(tmp)
            (tmp / "manifest.json").write_text(json.dumps(self.manifest(), indent=2) + "\n")
            old = None
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(folder, old)
            os.replace(tmp, folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        expect_fingerprint: str | None = None,
        *,
        gpu: bool | str | int = "auto",
        mmap: bool = False,
    ) -> Index:
        """Load a saved index; ``expect_fingerprint`` (the model you will search with) must match."""
        faiss = import_faiss()
        folder = Path(folder)
        mpath = folder / "manifest.json"
        if not mpath.exists():
            raise FileNotFoundError(
                f"{folder}: no manifest.json; not an mmembed index (build one with Index.save)"
            )
        meta = json.loads(mpath.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{mpath}: index format {meta.get('format_version')} is not "
                f"{FORMAT_VERSION}; rebuild the index with this version"
            )
        if (
            expect_fingerprint
            and meta.get("fingerprint")
            and expect_fingerprint != meta["fingerprint"]
        ):
            raise IndexMismatchError(
                f"{folder} was built with model fingerprint {meta['fingerprint'][:16]}... but you are "
                f"loading it for model {expect_fingerprint[:16]}...: searching it with this model would "
                "give meaningless results. Use the model that built it, or rebuild the index."
            )
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(folder / "index.faiss"), flags)
        if index.d != meta["dim"]:
            raise IndexMismatchError(
                f"{folder}: index.faiss holds {index.d}-d vectors, manifest says {meta['dim']}"
            )
        return cls(
            index,
            IdMap.load(folder, meta["id_mode"]),
            factory=meta["factory"],
            metric=meta["metric"],
            fingerprint=meta.get("fingerprint"),
            normalized=meta["normalized"],
            gpu=gpu,
            tombstones=set(meta.get("tombstones", [])),
        )
