"""Queries against a library: text, an image, or both (composed) -> ranked hits with the file
each came from. Thread-safe for a server. Knows nothing of terminals, HTML or HTTP."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmembed.search import DEFAULT_K
from mmembed.search.batching import Batcher
from mmembed.search.library import STATE_FILE, Library, LibraryError
from mmembed.search.scan import LibraryEntry
from mmembed.search.thumbs import ThumbnailCache

MAX_K = 1000


log = logging.getLogger(__name__)
_THREAD = threading.local()


def _state_signature(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(Path(path) / STATE_FILE)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _one_faiss_thread() -> None:
    """Small query batches search best on one OpenMP thread: a team spinning on two shared cores
    cost ~10-30 ms a query in a server thread. The setting is per calling thread."""
    if not getattr(_THREAD, "done", False):
        from mmembed.index.device import import_faiss

        import_faiss().omp_set_num_threads(1)
        _THREAD.done = True


class QueryError(ValueError):
    """A query that cannot be run as given; the message says what to change."""


@dataclass
class Hit:
    """One result: rank (1-based), cosine score and the indexed item."""

    rank: int
    score: float
    entry: LibraryEntry

    def to_json(self) -> dict[str, Any]:
        e = self.entry
        return {
            "rank": self.rank,
            "score": round(float(self.score), 6),
            "did": e.did,
            "modality": e.modality,
            "path": e.source,
            "line": e.line,
            "image": e.image,
            "text": e.snippet(),
        }


def _loader_like(embedder):
    """load_embedder(spec) on ``embedder``'s device."""

    def load(spec: str | None):
        from mmembed.model import load_embedder

        return load_embedder(spec, device=getattr(embedder, "device", None))

    return load


class Searcher:
    """A library with its model and FAISS index loaded, ready to answer queries."""

    def __init__(
        self,
        library: Library,
        embedder,
        *,
        instruction: str | None = None,
        load_model: Any = None,
    ) -> None:
        """``load_model(spec) -> embedder`` loads the model of a re-index made with another
        model (default: load_embedder on this embedder's device)."""
        fp = str(embedder.fingerprint)
        if fp != library.fingerprint:
            raise LibraryError(
                f"{library.path} was indexed with model {library.model_spec or 'default'} "
                f"(fingerprint {library.fingerprint[:12]}), not the model given "
                f"(fingerprint {fp[:12]}); search with the same --model or re-run `mmembed index`"
            )
        self.instruction = instruction
        self._current = (library, library.load_index(), embedder)  # swapped whole by refresh()
        self._load_model = load_model or _loader_like(embedder)
        self.refused: str | None = None  # why searches are refused (a model that cannot load)
        self._seen = _state_signature(library.path)
        self._checked = time.monotonic()
        self._refresh_lock = threading.Lock()
        self.thumbs = ThumbnailCache()
        # Concurrent searches (a server) are encoded and searched together, one batch at a time.
        self._batcher = Batcher(self._run_batch, max_batch=32, on_start=_one_faiss_thread)

    @property
    def library(self) -> Library:
        return self._current[0]

    @property
    def index(self):  # -> mmembed.index.Index
        return self._current[1]

    @property
    def embedder(self):
        return self._current[2]

    def refresh(self, *, min_interval: float = 0.0) -> bool:
        """Pick up a newer index that `mmembed index` committed since this Searcher loaded its
        own (a running server calls this before requests). Checks at most once per
        ``min_interval`` seconds (a stat of state.json); True when it switched."""
        now = time.monotonic()
        if now - self._checked < min_interval:
            return False
        with self._refresh_lock:
            self._checked = now
            signature = _state_signature(self.library.path)
            if signature == self._seen:
                return False
            try:
                library = Library.open(self.library.path)
                embedder = self.embedder
                if library.fingerprint != str(embedder.fingerprint):
                    embedder = self._model_of(library)
                    if embedder is None:  # refused: searches say why until the next re-index
                        self._seen = signature
                        return False
                self._current = (library, library.load_index(), embedder)
                self.refused = None
            except (LibraryError, OSError, ValueError) as e:  # mid-update: try again later
                log.info("index changed but could not be loaded yet (%s)", e)
                return False
            self._seen = signature
            log.info("reloaded %s: %d items", library.path, len(library))
            return True

    def _model_of(self, library: Library):
        """The model a re-index switched to, loaded; None (and ``refused`` set) if it cannot be."""
        spec = library.model_spec or "default"
        log.warning("%s was re-indexed with model %s: loading it", library.path, spec)
        try:
            embedder = self._load_model(library.model_spec)
        except Exception as e:  # a model that cannot load here: refuse, never serve stale results
            embedder, why = None, f"cannot load it here ({' '.join(str(e).split())})"
        else:
            why = "its fingerprint differs from the index's"
        if embedder is not None and str(embedder.fingerprint) == library.fingerprint:
            log.info("now searching with model %s", spec)
            return embedder
        self.refused = (
            f"{library.path} was re-indexed with model {spec}, and {why}; restart "
            "`mmembed serve` with that --model"
        )
        log.error("%s", self.refused)
        return None

    def _run_batch(self, requests: list[tuple[Any, int]]) -> list[tuple[np.ndarray, list[str]]]:
        items = [item for item, _ in requests]
        _, index, embedder = self._current  # one consistent (index, model) pair per batch
        q = embedder.encode_queries(
            items, instructions=self.instruction, show_progress=False
        )  # (B, D)
        kmax = max(k for _, k in requests)
        fp = str(embedder.fingerprint)
        kmax = max(1, min(kmax, len(index)))
        scores, ids = index.search(q, kmax, fingerprint=fp)  # (B, kmax), [[did] * kmax] * B
        return [(scores[b, :k], ids[b][:k]) for b, (_, k) in enumerate(requests)]

    def batch_stats(self) -> dict[str, Any]:
        """How concurrent searches were batched so far (batches, items, largest, mean)."""
        from mmembed.search.batching import stats

        return stats(self._batcher)

    def close(self) -> None:
        """Stop the batching worker thread (it is a daemon; closing is optional)."""
        self._batcher.close()

    @classmethod
    def open(
        cls,
        index_path: str | Path,
        *,
        model: str | None = None,
        device: str | None = None,
        instruction: str | None = None,
    ) -> Searcher:
        """Open the library at ``index_path`` with the model it was built with (or ``model``)."""
        from mmembed.model import load_embedder

        library = Library.open(index_path)
        spec = model if model is not None else library.model_spec
        try:
            embedder = load_embedder(spec, device=device)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise LibraryError(f"cannot load model {spec!r} for {index_path}: {e}") from None
        return cls(library, embedder, instruction=instruction)

    def search(
        self, text: str | None = None, image: Any = None, *, k: int = DEFAULT_K
    ) -> list[Hit]:
        """Top-k hits for a text, an image (path or PIL image), or both."""
        from mmembed.data.records import Item

        if self.refused:
            raise LibraryError(self.refused)
        text = text.strip() if isinstance(text, str) else None
        if not text and image is None:
            raise QueryError("empty query: give some text, an image, or both")
        if not 1 <= int(k) <= MAX_K:
            raise QueryError(f"k={k}: ask for between 1 and {MAX_K} results")
        k = min(int(k), len(self.library))
        if k == 0:
            return []
        scores, ids = self._batcher((Item(text=text or None, image=image), k))  # (k,), [did] * k
        entries = self.library.entries
        hits = []
        for s, did in zip(scores.tolist(), ids, strict=True):
            entry = entries.get(did)
            if entry is None:  # padding from an index with fewer than k items
                continue
            hits.append(Hit(rank=len(hits) + 1, score=s, entry=entry))
        return hits

    def thumbnail(self, did: str) -> bytes:
        """JPEG thumbnail of an indexed image item; KeyError for unknown dids or text items."""
        entry = self.library.entries.get(did)
        if entry is None or entry.image is None:
            raise KeyError(did)
        path = self.library.resolve_file(entry.image)
        return self.thumbs.get(path)
