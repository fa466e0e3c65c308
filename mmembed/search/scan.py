"""Folder scanning for the library: turns `mmembed.data.corpus` scans of one or more roots into
Entries (did, source file, display text, image path, content key) and a per-file fingerprint map.

A content key changes exactly when what the encoder would see changes (text, image bytes), so
unchanged files are never re-encoded. Knows nothing of models, shards or indexes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmembed.data.records import image_file

log = logging.getLogger(__name__)

SNIPPET_CHARS = 400  # text kept in the library state for display


@dataclass
class LibraryEntry:
    """One searchable item of a library."""

    did: str
    source: str  # absolute path of the file it came from
    modality: str  # "text" | "image" | "image,text"
    text: str | None  # full text at scan time; a display snippet once reloaded from state
    image: str | None  # absolute path of the image, if any
    key: str  # content key (see module docstring)
    line: int | None = None  # line in a .jsonl source

    @property
    def where(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"

    def snippet(self, n: int = SNIPPET_CHARS) -> str | None:
        if self.text is None:
            return None
        t = " ".join(self.text.split())
        return t if len(t) <= n else t[: n - 1] + "…"

    def to_json(self) -> dict[str, Any]:
        return {
            "did": self.did,
            "source": self.source,
            "line": self.line,
            "modality": self.modality,
            "text": self.snippet(),
            "image": self.image,
            "key": self.key,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LibraryEntry:
        return cls(
            did=obj["did"],
            source=obj["source"],
            modality=obj["modality"],
            text=obj.get("text"),
            image=obj.get("image"),
            key=obj["key"],
            line=obj.get("line"),
        )


@dataclass
class ScanResult:
    """Entries found, files skipped and why, and a fingerprint per scanned file."""

    entries: list[LibraryEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, Any] = field(default_factory=dict)  # abs path -> [size, mtime_ns, sha256]
    scans: dict[str, Any] = field(default_factory=dict)  # root -> mmembed.data.corpus.CorpusScan
    follow_links: bool = False  # whether symlinks leaving the roots were followed


def content_key(
    did: str, modality: str, text: str | None, image: str | None, image_fingerprint: Any
) -> str:
    """sha256 over what the encoder sees: the text, and the image's identity and fingerprint."""
    blob = json.dumps(
        [did, modality, text, image, image_fingerprint],
        ensure_ascii=False,
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _stat_fingerprint(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def scan_roots(
    roots: Sequence[str],
    *,
    root_ids: dict[str, int],
    previous: dict[str, Any] | None = None,
    on_file: Callable[[Path], None] | None = None,
    follow_links: bool = False,
) -> ScanResult:
    """Scan every root with `mmembed.data.corpus` (root ``r`` gets dataset id ``root_ids[r]``, so
    dids of different roots never collide) and merge the results. ``previous``: root -> the
    CorpusScan of the last update, so files with unchanged size and mtime are not re-read.
    ``on_file(path)`` is called before each file is looked at. Symlinks that leave a root are
    reported, not followed, unless ``follow_links``."""
    from mmembed.data.corpus import scan_corpus

    result = ScanResult(follow_links=follow_links)
    for root in roots:
        old = (previous or {}).get(root)
        scan = scan_corpus(
            root,
            dataset_id=root_ids[root],
            previous=old,
            progress=on_file,
            follow_links=follow_links,
        )
        result.scans[root] = scan
        base = scan.root  # the resolved root the corpus used
        fps = {}
        for rel, fp in scan.fingerprints.items():
            fps[os.path.join(base, rel)] = [fp.size, fp.mtime_ns, fp.sha256]
        result.files.update(fps)
        result.skipped.extend((str(s.path), str(s.reason)) for s in scan.skipped)
        for cand in scan.candidates:
            src = scan.sources[cand.did]
            image = image_file(cand.image_path, base)
            # the image's content hash: a touched but unchanged file is not re-encoded
            image_fp = fps[image][2] if image in fps else None
            if image and image_fp is None:  # a jsonl record's image outside the scanned files
                image_fp = _stat_fingerprint(image)
            modality = cand.modality.value
            result.entries.append(
                LibraryEntry(
                    did=cand.did,
                    source=os.path.abspath(src.path),
                    line=src.line,
                    modality=modality,
                    text=cand.text,
                    image=image,
                    key=content_key(cand.did, modality, cand.text, image, image_fp),
                )
            )
    return result


def load_scans(path: Path, roots: list[str], root_ids: dict[str, int]) -> dict[str, Any]:
    """The corpus scans saved by the last update (so unchanged files are not re-read)."""
    from mmembed.data.corpus import CorpusScan

    out = {}
    for r in roots:
        f = path / "scans" / f"{root_ids[r]}.json"
        if f.is_file():
            try:
                out[r] = CorpusScan.load(f)
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("%s: unreadable saved scan (%s); re-reading %s", f, e, r)
    return out


def save_scans(path: Path, result: ScanResult, root_ids: dict[str, int]) -> None:
    folder = path / "scans"
    folder.mkdir(parents=True, exist_ok=True)
    keep = set()
    for root, scan in result.scans.items():
        name = f"{root_ids[root]}.json"
        scan.save(folder / name)
        keep.add(name)
    for f in folder.glob("*.json"):
        if f.name not in keep:
            f.unlink(missing_ok=True)
