"""The library: an incremental, resumable index of folders. It remembers which files were indexed
(fingerprints), the candidates they gave (dids), their embeddings (fp16 shards committed batch by
batch, so a crash loses at most one batch) and the FAISS index over them.

Knows nothing of terminals, HTTP or how a model is chosen: callers pass an Embedder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmembed.data.atomic import atomic_write_json
from mmembed.data.records import Item
from mmembed.index.embedding_shards import EncodeEntry, encode_isolating
from mmembed.search.scan import LibraryEntry, ScanResult, load_scans, save_scans, scan_roots
from mmembed.search.store import ShardStore

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LOCK_FILE = ".lock"
FORMAT_VERSION = 1
FIRST_ROOT_ID = 99  # dataset id of the first root's dids (the corpus default); then 100, 101, ...


class LibraryError(RuntimeError):
    """A library that cannot be used as asked; the message says what to do."""


@dataclass
class UpdateReport:
    """What one `update` did, file by file and item by item."""

    files_new: int = 0
    files_changed: int = 0
    files_removed: int = 0
    files_unchanged: int = 0
    items: int = 0  # candidates in the library after the update
    encoded: int = 0  # embeddings computed in this run
    reused: int = 0  # embeddings found on disk (unchanged files, or a crashed run's batches)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) at scan time
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why) at encode time
    model_changed: bool = False
    seconds: float = 0.0


def _is_within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives / mixed absolute and relative
        return False


class Library:
    """A library directory on disk, opened read-only (searching, serving files)."""

    def __init__(self, path: str | Path, state: dict[str, Any]) -> None:
        self.path = Path(path).expanduser()
        self.state = state
        self.entries: dict[str, LibraryEntry] = {
            e["did"]: LibraryEntry.from_json(e) for e in state.get("entries", [])
        }
        self._servable: set[str] | None = None

    # ------------------------------------------------------------------ opening

    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path).expanduser() / STATE_FILE).is_file()

    @classmethod
    def open(cls, path: str | Path) -> Library:
        state_file = Path(path).expanduser() / STATE_FILE
        if not state_file.is_file():
            raise LibraryError(f"no index at {path}: run `mmembed index DIR --index {path}` first")
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LibraryError(
                f"{state_file}: unreadable index state ({e}); "
                f"delete {path} and run `mmembed index` again"
            ) from None
        if state.get("version") != FORMAT_VERSION:
            raise LibraryError(
                f"{state_file}: index format {state.get('version')!r}, this "
                f"mmembed reads {FORMAT_VERSION}; run `mmembed index` again with "
                "a fresh --index path"
            )
        return cls(path, state)

    # ------------------------------------------------------------------ facts

    @property
    def roots(self) -> list[Path]:
        return [Path(r) for r in self.state.get("roots", [])]

    @property
    def model_spec(self) -> str | None:
        return self.state.get("model")

    @property
    def fingerprint(self) -> str:
        return self.state["fingerprint"]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [tuple(s) for s in self.state.get("skipped", [])]

    def __len__(self) -> int:
        return len(self.entries)

    def info(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for e in self.entries.values():
            kinds[e.modality] = kinds.get(e.modality, 0) + 1
        return {
            "index": str(self.path),
            "roots": [str(r) for r in self.roots],
            "model": self.model_spec or "default",
            "fingerprint": self.fingerprint,
            "dim": self.state.get("dim"),
            "items": len(self),
            "by_modality": kinds,
            "files": len(self.state.get("files", {})),
            "skipped": len(self.skipped),
            "updated": self.state.get("updated"),
        }

    def load_index(self):  # -> mmembed.index.Index
        from mmembed.index import Index

        return Index.load(self.path / self.state["index_dir"], expect_fingerprint=self.fingerprint)

    # ------------------------------------------------------------------ serving files

    def resolve_file(self, requested: str | Path) -> Path:
        """The real path of a file this library may serve, or PermissionError saying why not.

        A file is servable when its resolved path (symlinks followed, ``..`` collapsed) lies
        inside an indexed root and it is one of the library's source or image files."""
        raw = str(requested)
        if not raw or "\x00" in raw:
            raise PermissionError("empty or malformed path")
        if not os.path.isabs(raw):
            raise PermissionError(f"{raw!r}: only absolute paths of indexed files are served")
        real = os.path.realpath(raw)
        roots = [os.path.realpath(r) for r in self.roots]
        # links out of the roots were only indexed when asked for (--follow-links); then the
        # files they reach are servable too, and only those (checked below)
        outside_ok = bool(self.state.get("follow_links"))
        if not outside_ok and not any(_is_within(real, r) for r in roots):
            raise PermissionError(f"{raw!r} is outside the indexed folders")
        if self._servable is None:
            paths = set()
            for e in self.entries.values():
                paths.add(os.path.realpath(e.source))
                if e.image:
                    paths.add(os.path.realpath(e.image))
            self._servable = paths
        if real not in self._servable:
            raise PermissionError(f"{raw!r} is not an indexed file")
        if not os.path.isfile(real):
            raise FileNotFoundError(f"{raw!r} no longer exists; run `mmembed index` to refresh")
        return Path(real)


# ---------------------------------------------------------------------- updating


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LibraryError(
                f"{path} is being updated by another `mmembed index`; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clean_temp_files(path: Path) -> None:
    """Delete temp files a killed run left behind (``.state.json.<pid>.tmp``, scans, shards).
    Called under the lock, so no live writer owns them."""
    for pattern in (".*.tmp", "scans/*.tmp", "shards/*/.*.tmp"):
        for tmp in path.glob(pattern):
            with contextlib.suppress(OSError):
                tmp.unlink()
                log.info("removed %s, left by an interrupted run", tmp)


def _normalise_roots(roots: Sequence[str | Path]) -> list[str]:
    """Absolute, de-duplicated roots; a root inside another root is dropped (it is covered)."""
    absolute = sorted({os.path.abspath(os.path.expanduser(str(r))) for r in roots})
    kept: list[str] = []
    for r in absolute:
        if any(_is_within(os.path.realpath(r), os.path.realpath(k)) for k in kept):
            log.info("%s is inside another indexed folder; it is covered by it", r)
            continue
        kept.append(r)
    return kept


def _encode(
    embedder, entries: list[LibraryEntry], batch_size: int, failed: list[tuple[str, str]]
) -> tuple[list[LibraryEntry], np.ndarray, list[dict[str, str]]]:
    """Encode one batch with the failure policy of mmembed.index.embedding_shards (bisect, then
    record the bad item as (path, why)); returns the entries encoded, their (n, D) rows and the
    failures as the shard records them."""
    todo = [EncodeEntry(e.where, Item(text=e.text, image=e.image)) for e in entries]
    back = {id(t): e for t, e in zip(todo, entries, strict=True)}
    ok, emb, bad = encode_isolating(embedder, todo, is_query=False, batch_size=batch_size)
    failed.extend((b["id"], f"cannot encode: {b['error']}") for b in bad)
    return [back[id(t)] for t in ok], emb, bad


def update_library(
    path: str | Path,
    roots: Sequence[str | Path],
    embedder,
    *,
    model_spec: str | None = None,
    forget: Sequence[str | Path] = (),
    batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
    on_scan: Callable[[Path], None] | None = None,
    follow_links: bool | None = None,
) -> UpdateReport:
    """Bring the library at ``path`` up to date with ``roots`` (added to the roots it already
    has; ``forget`` drops roots). Only candidates whose content key is not on disk are encoded;
    each encoded batch is committed before the next starts, so a rerun after a crash resumes.

    ``on_progress(done, total)`` is called as candidates are encoded, ``on_scan(path)`` as
    files are scanned. ``follow_links``: index what symlinks leaving the roots point to (None:
    as the library did before, else False: such links are reported and skipped)."""
    t0 = time.perf_counter()
    path = Path(path).expanduser()
    report = UpdateReport()
    with _locked(path):
        _clean_temp_files(path)  # left by a run killed mid-commit
        old = Library.open(path) if Library.exists(path) else None
        if follow_links is None:
            follow_links = bool(old.state.get("follow_links")) if old else False
        old_roots = [str(r) for r in old.roots] if old else []
        dropped = {os.path.abspath(os.path.expanduser(str(f))) for f in forget}
        unknown = dropped - set(old_roots)
        if unknown:
            raise LibraryError(
                f"--forget {sorted(unknown)[0]}: not an indexed folder "
                f"(indexed: {', '.join(old_roots) or 'none'})"
            )
        all_roots = _normalise_roots([r for r in old_roots if r not in dropped] + list(roots))
        if not all_roots:
            raise LibraryError("nothing to index: give at least one folder")
        for r in all_roots:
            if not os.path.isdir(r):
                hint = f"; drop it with --forget {r}" if r in old_roots else ""
                raise LibraryError(f"{r}: not a folder (missing or unmounted){hint}")

        root_ids = dict(old.state.get("root_ids", {})) if old else {}
        for r in all_roots:
            if r not in root_ids:
                root_ids[r] = max([FIRST_ROOT_ID - 1, *root_ids.values()]) + 1
        result = scan_roots(
            all_roots,
            root_ids=root_ids,
            previous=load_scans(path, all_roots, root_ids),
            on_file=on_scan,
            follow_links=follow_links,
        )
        report.skipped = list(result.skipped)
        old_files: dict[str, Any] = old.state.get("files", {}) if old else {}
        for f, fp in result.files.items():
            if f not in old_files:
                report.files_new += 1
            elif (
                old_files[f][-1] != fp[-1]
            ):  # content (sha256) differs; mtime alone is not a change
                report.files_changed += 1
            else:
                report.files_unchanged += 1
        report.files_removed = sum(1 for f in old_files if f not in result.files)

        fingerprint = str(embedder.fingerprint)
        report.model_changed = old is not None and old.fingerprint != fingerprint
        store = ShardStore(path / "shards", fingerprint)
        store.convert_legacy()  # shards of earlier mmembed versions (.npz): kept, not re-encoded
        wanted = {e.key: e for e in result.entries}
        have = store.load(set(wanted))  # key -> (D,) float16 row
        report.reused = len(have)
        todo = [e for e in result.entries if e.key not in have]
        total = len(todo)
        if on_progress:
            on_progress(0, total)
        done = 0
        for start in range(0, total, batch_size):
            batch = todo[start : start + batch_size]
            ok, emb, bad = _encode(embedder, batch, batch_size, report.failed)
            if ok:
                store.append([e.key for e in ok], emb, bad)
                for e, row in zip(ok, emb, strict=True):
                    have[e.key] = row.astype(np.float16)
            report.encoded += len(ok)
            done += len(batch)
            if on_progress:
                on_progress(done, total)

        live = sorted((e for e in result.entries if e.key in have), key=lambda e: e.did)
        report.items = len(live)
        _commit(path, old, live, have, embedder, all_roots, model_spec, result, report, root_ids)
        save_scans(path, result, root_ids)
        store.compact(set(have) & {e.key for e in live})
        store.drop_other_models()
    report.seconds = time.perf_counter() - t0
    return report


def _commit(
    path: Path,
    old: Library | None,
    live: list[LibraryEntry],
    have: dict[str, np.ndarray],
    embedder,
    roots: list[str],
    model_spec: str | None,
    result: ScanResult,
    report: UpdateReport,
    root_ids: dict[str, int],
) -> None:
    """Build and save the FAISS index, then switch state.json to it (the atomic step)."""
    from mmembed.index import Index

    dim = int(embedder.dim)
    emb = (
        np.stack([have[e.key] for e in live]).astype(np.float32)
        if live
        else np.zeros((0, dim), np.float32)
    )  # (N, D)
    if len(emb):
        emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)  # undo fp16 drift
    generation = (old.state.get("generation", 0) + 1) if old else 1
    index_dir = f"index-{generation:06d}"
    index = Index.build(emb, [e.did for e in live], fingerprint=str(embedder.fingerprint))
    index.save(path / index_dir)
    state = {
        "version": FORMAT_VERSION,
        "generation": generation,
        "index_dir": index_dir,
        "roots": roots,
        "root_ids": root_ids,
        "model": model_spec,
        "fingerprint": str(embedder.fingerprint),
        "dim": dim,
        "files": result.files,
        "entries": [e.to_json() for e in live],
        "skipped": [list(s) for s in report.skipped + report.failed],
        "follow_links": result.follow_links,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(path / STATE_FILE, state, sort_keys=True)
    for stale in path.glob("index-*"):
        if stale.name != index_dir and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
