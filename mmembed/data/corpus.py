"""Local corpora: a folder (walked recursively) of images, text files and jsonl records turned
into Candidates with stable dids, a report of skipped files and why, and file fingerprints for
incremental re-indexing. Knows nothing of models or indexes.

Did scheme: every item has a key -- its path relative to the root (POSIX, NFC), plus
``#<id>`` (the record's own ``did``/``id``) or ``#L<line>`` for a jsonl record. Its did is
``f"{dataset_id}:{n}"`` with ``n = blake2b-64(key) mod 10_000_000``, so it fits M-BEIR's int64
hashing. Two keys that land on the same ``n`` are resolved by re-hashing (``key#1``, ``key#2``,
...) in sorted key order; keys that held a did in a previous scan keep it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from mmembed.data import corpus_files
from mmembed.data.atomic import atomic_write_text
from mmembed.data.corpus_files import (
    MAX_TEXT_CHARS,
    FileItem,
    FileReader,
    Skipped,
    file_kind,
    os_reason,
    relkey,
    walk_files,
)
from mmembed.data.records import DID_BASE, Candidate, Modality

CORPUS_DATASET_ID = 99  # outside M-BEIR's 0-9 and the offline benchmark's ids


@dataclass(frozen=True)
class Fingerprint:
    """What a file looked like when scanned: enough to tell whether it changed."""

    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class CandidateOrigin:
    """Where a candidate came from: the file (absolute), the jsonl line if any, and its key."""

    path: str
    line: int | None
    key: str


@dataclass
class CorpusScan:
    """The result of scanning one root folder."""

    root: str
    dataset_id: int
    candidates: list[Candidate] = field(default_factory=list)
    sources: dict[str, CandidateOrigin] = field(default_factory=dict)  # did -> source
    skipped: list[Skipped] = field(default_factory=list)
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)  # relative path -> print
    ignored: int = 0  # files with extensions the corpus does not read

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "dataset_id": self.dataset_id,
            "candidates": [c.to_json() for c in self.candidates],
            "sources": {d: asdict(s) for d, s in self.sources.items()},
            "skipped": [list(s) for s in self.skipped],
            "fingerprints": {p: asdict(f) for p, f in self.fingerprints.items()},
            "ignored": self.ignored,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CorpusScan:
        return cls(
            root=obj["root"],
            dataset_id=int(obj["dataset_id"]),
            candidates=[Candidate.from_json(c) for c in obj["candidates"]],
            sources={d: CandidateOrigin(**s) for d, s in obj["sources"].items()},
            skipped=[Skipped(*s) for s in obj["skipped"]],
            fingerprints={p: Fingerprint(**f) for p, f in obj["fingerprints"].items()},
            ignored=int(obj.get("ignored", 0)),
        )

    def save(self, path: str | Path) -> None:
        """Write the scan as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> CorpusScan:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def candidates_of(self, relpath: str) -> list[Candidate]:
        """The candidates that came from one file (relative path as in ``fingerprints``)."""
        by_did = {c.did: c for c in self.candidates}
        return [by_did[d] for d, s in self.sources.items() if _key_file(s.key) == relpath]


class Changes(NamedTuple):
    """Relative paths that differ between two scans of the same root."""

    added: list[str]
    changed: list[str]
    removed: list[str]


def diff_scans(old: CorpusScan, new: CorpusScan) -> Changes:
    """Which files were added, changed (content hash differs) or removed since ``old``."""
    added = sorted(p for p in new.fingerprints if p not in old.fingerprints)
    removed = sorted(p for p in old.fingerprints if p not in new.fingerprints)
    changed = sorted(
        p
        for p, f in new.fingerprints.items()
        if p in old.fingerprints and old.fingerprints[p].sha256 != f.sha256
    )
    return Changes(added, changed, removed)


# --------------------------------------------------------------------------- dids


def _key_file(key: str) -> str:
    return key.split("#", 1)[0]


def _slot(key: str, attempt: int) -> int:
    data = (key if attempt == 0 else f"{key}#{attempt}").encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") % DID_BASE


def assign_dids(
    keys: list[str], dataset_id: int = CORPUS_DATASET_ID, pinned: dict[str, str] | None = None
) -> dict[str, str]:
    """key -> did for distinct keys, collision-free and deterministic (see the module doc).

    ``pinned`` (key -> did from an earlier scan) keeps existing dids stable when new files
    arrive; pinned dids of another dataset id or of keys no longer present are ignored."""
    prefix = f"{dataset_id}:"
    present = set(keys)
    if len(present) > DID_BASE:
        raise ValueError(
            f"more than {DID_BASE:,} items cannot share dataset id {dataset_id}; split the corpus "
            "and give each part its own dataset_id"
        )
    out: dict[str, str] = {}
    taken: set[int] = set()
    for key, did in sorted((pinned or {}).items()):
        if key in present and did.startswith(prefix) and did[len(prefix) :].isdigit():
            n = int(did[len(prefix) :])
            if n < DID_BASE and n not in taken:
                out[key] = did
                taken.add(n)
    for key in sorted(present):
        if key in out:
            continue
        attempt = 0
        n = _slot(key, 0)
        while n in taken:
            attempt += 1
            n = _slot(key, attempt)
        taken.add(n)
        out[key] = f"{prefix}{n}"
    return out


# --------------------------------------------------------------------------- scanning


def scan_corpus(
    root: str | Path,
    *,
    dataset_id: int = CORPUS_DATASET_ID,
    verify_images: bool = True,
    max_text_chars: int = MAX_TEXT_CHARS,
    max_pixels: int | None = None,
    include_hidden: bool = False,
    follow_links: bool = False,
    previous: CorpusScan | None = None,
    progress: Callable[[Path], None] | None = None,
) -> CorpusScan:
    """Scan ``root`` recursively into Candidates; bad files are reported, never fatal.

    ``previous``: an earlier scan of the same root; files whose size and mtime are unchanged
    reuse its candidates without being read, and existing dids are kept. ``progress`` is called
    with each file before it is read. Symlinks leaving ``root`` are reported, not followed,
    unless ``follow_links``."""
    from mmembed.data.images import MAX_PIXELS

    root_path = Path(root).expanduser().resolve()
    if not root_path.is_dir():
        raise NotADirectoryError(f"{root}: not a folder (give the folder of files to index)")
    reader = FileReader(root_path, verify_images, max_text_chars, max_pixels or MAX_PIXELS)
    skipped = reader.skipped
    scan = CorpusScan(root=str(root_path), dataset_id=dataset_id)
    reuse = previous if previous is not None and previous.dataset_id == dataset_id else None
    old_by_file: dict[str, list[tuple[CandidateOrigin, Candidate]]] = {}
    if reuse is not None:
        by_did = {c.did: c for c in reuse.candidates}
        for did, src in reuse.sources.items():
            if did in by_did:
                old_by_file.setdefault(_key_file(src.key), []).append((src, by_did[did]))

    items: list[FileItem] = []
    readers = {"image": reader.image, "text": reader.text}
    walk = walk_files(root_path, skipped, include_hidden=include_hidden, follow_links=follow_links)
    for path in walk:
        kind = file_kind(path)
        if kind is None:
            scan.ignored += 1
            continue
        if progress is not None:
            progress(path)
        rel = relkey(path, root_path)
        try:
            st = path.stat()
        except OSError as e:
            skipped.append(Skipped(str(path), os_reason(e)))
            continue
        old = reuse.fingerprints.get(rel) if reuse is not None else None
        unchanged = old is not None and (old.size, old.mtime_ns) == (st.st_size, st.st_mtime_ns)
        if unchanged:  # items and skips alike: an unchanged file costs a stat, not a read
            scan.fingerprints[rel] = old
            for src, cand in old_by_file.get(rel, []):
                items.append(
                    FileItem(
                        src.key,
                        cand.text,
                        cand.image_path,
                        json.loads(cand.src_content or "{}"),
                        src.path,
                        src.line,
                    )
                )
            mine = str(path)
            skipped.extend(
                s for s in reuse.skipped if s.path == mine or s.path.startswith(f"{mine}:")
            )
            continue
        big = corpus_files.too_large(kind, st.st_size)
        if big:  # remembered by (size, mtime) like any file, so never read on a re-run
            scan.fingerprints[rel] = Fingerprint(
                st.st_size, st.st_mtime_ns, f"unread:{st.st_size}:{st.st_mtime_ns}"
            )
            skipped.append(Skipped(str(path), big))
            continue
        try:
            if kind == "jsonl":  # streamed: one capped line in memory at a time
                hasher = hashlib.sha256()
                with corpus_files.open_stream(path) as f:
                    found = reader.jsonl(path, rel, f, hasher)
                    size = f.tell()
                digest = hasher.hexdigest()
            else:
                data = corpus_files.read_bytes(path)
                size, digest = len(data), hashlib.sha256(data).hexdigest()
        except OSError as e:
            skipped.append(Skipped(str(path), os_reason(e)))
            continue
        scan.fingerprints[rel] = Fingerprint(size, st.st_mtime_ns, digest)
        if not size:
            skipped.append(Skipped(str(path), "empty file (0 bytes)"))
            continue
        items.extend(found if kind == "jsonl" else readers[kind](path, rel, data))

    pinned = {s.key: did for did, s in reuse.sources.items()} if reuse is not None else None
    dids = assign_dids([it.key for it in items], dataset_id, pinned)
    for it in sorted(items, key=lambda it: it.key):
        did = dids[it.key]
        modality = Modality.of(it.text, it.image_path)
        src = json.dumps(it.src, ensure_ascii=False, sort_keys=True)
        scan.candidates.append(Candidate(did, it.text, it.image_path, modality, src))
        scan.sources[did] = CandidateOrigin(it.path, it.line, it.key)
    scan.skipped = skipped
    return scan
