"""Records of the M-BEIR world: modalities, queries, candidates, and the id hashing the
reference evaluation uses. Knows nothing about files, models or indexes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

# M-BEIR task ids (docs/data.md): (query modality, candidate modality). Id 5 is unused.
TASKS: dict[int, tuple[str, str]] = {
    0: ("text", "image"),
    1: ("text", "text"),
    2: ("text", "image,text"),
    3: ("image", "text"),
    4: ("image", "image"),
    6: ("image,text", "text"),
    7: ("image,text", "image"),
    8: ("image,text", "image,text"),
}

# M-BEIR dataset ids (docs/data.md).
DATASETS: dict[str, int] = {
    "VisualNews": 0,
    "Fashion200K": 1,
    "WebQA": 2,
    "EDIS": 3,
    "NIGHTS": 4,
    "OVEN": 5,
    "InfoSeek": 6,
    "FashionIQ": 7,
    "CIRR": 8,
    "MSCOCO": 9,
}

DID_BASE = 10_000_000
QID_BASE = 500_000
MAX_DATASET_ID = (2**63 - 1) // DID_BASE - 1  # so that every did hash fits an int64


class Modality(str, Enum):
    """What an item carries. The values are M-BEIR's modality strings."""

    TEXT = "text"
    IMAGE = "image"
    IMAGE_TEXT = "image,text"

    @classmethod
    def parse(cls, value: str) -> Modality:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"unknown modality {value!r}; expected one of {allowed}") from None

    @classmethod
    def of(cls, text: str | None, image: object | None) -> Modality:
        """The modality of an item with this text and image (either may be absent)."""
        if text and image is not None:
            return cls.IMAGE_TEXT
        if image is not None:
            return cls.IMAGE
        if text:
            return cls.TEXT
        raise ValueError("an item needs text, an image, or both")

    @property
    def has_image(self) -> bool:
        return self is not Modality.TEXT

    @property
    def has_text(self) -> bool:
        return self is not Modality.IMAGE


def _split_id(value: str, kind: str) -> tuple[int, int]:
    try:
        a, b = value.split(":")
        d, n = int(a), int(b)
    except (ValueError, AttributeError):
        raise ValueError(
            f"malformed {kind} {value!r}; expected 'DATASET_ID:N' with two integers"
        ) from None
    if d < 0 or n < 0:
        raise ValueError(f"malformed {kind} {value!r}; ids are non-negative")
    if d > MAX_DATASET_ID:
        raise ValueError(
            f"{kind} {value!r}: dataset id over {MAX_DATASET_ID:,} (ids are hashed to int64)"
        )
    return d, n


def hash_did(did: str) -> int:
    """M-BEIR candidate id 'd:n' -> int64 ``d * 10_000_000 + n`` (the reference's hashing)."""
    d, n = _split_id(did, "did")
    if n >= DID_BASE:
        raise ValueError(f"did {did!r}: within-dataset number must be < {DID_BASE}")
    return d * DID_BASE + n


def unhash_did(value: int) -> str:
    d, n = divmod(int(value), DID_BASE)
    return f"{d}:{n}"


def hash_qid(qid: str) -> int:
    """M-BEIR query id 'd:n' -> int64 ``d * 500_000 + n`` (the reference's hashing)."""
    d, n = _split_id(qid, "qid")
    if n >= QID_BASE:
        raise ValueError(f"qid {qid!r}: within-dataset number must be < {QID_BASE}")
    return d * QID_BASE + n


def unhash_qid(value: int) -> str:
    d, n = divmod(int(value), QID_BASE)
    return f"{d}:{n}"


def dataset_of(record_id: str) -> int:
    """The dataset id of a qid or did ('d:n' -> d)."""
    return _split_id(record_id, "id")[0]


@dataclass
class Query:
    """One M-BEIR query line. ``image_path`` is stored as written in the file (relative to the
    data root for M-BEIR); ``src_content`` is kept as the raw JSON string."""

    qid: str
    text: str | None
    image_path: str | None
    modality: Modality
    task_id: int
    pos_dids: list[str] = field(default_factory=list)
    neg_dids: list[str] = field(default_factory=list)
    src_content: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "qid": self.qid,
            "query_txt": self.text,
            "query_img_path": self.image_path,
            "query_modality": self.modality.value,
            "query_src_content": self.src_content,
            "pos_cand_list": list(self.pos_dids),
            "neg_cand_list": list(self.neg_dids),
            "task_id": self.task_id,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Query:
        """Build from a parsed M-BEIR query object (fields assumed checked; see validate)."""
        return cls(
            qid=obj["qid"],
            text=obj.get("query_txt"),
            image_path=obj.get("query_img_path"),
            modality=Modality.parse(obj["query_modality"]),
            task_id=int(obj["task_id"]),
            pos_dids=list(obj.get("pos_cand_list") or []),
            neg_dids=list(obj.get("neg_cand_list") or []),
            src_content=obj.get("query_src_content"),
        )

    @property
    def dataset_id(self) -> int:
        return dataset_of(self.qid)


@dataclass
class Candidate:
    """One M-BEIR candidate-pool line (or one file of a local corpus)."""

    did: str
    text: str | None
    image_path: str | None
    modality: Modality
    src_content: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "txt": self.text,
            "img_path": self.image_path,
            "modality": self.modality.value,
            "did": self.did,
            "src_content": self.src_content,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Candidate:
        return cls(
            did=obj["did"],
            text=obj.get("txt"),
            image_path=obj.get("img_path"),
            modality=Modality.parse(obj["modality"]),
            src_content=obj.get("src_content"),
        )

    @property
    def dataset_id(self) -> int:
        return dataset_of(self.did)


@dataclass
class Item:
    """What an encoder consumes: text, an image (path or PIL image), or both."""

    text: str | None = None
    image: Any = None  # str | Path | PIL.Image.Image | None

    @property
    def modality(self) -> Modality:
        return Modality.of(self.text, self.image)


def image_file(image_path: str | Path | None, image_root: str | Path | None) -> str | None:
    """Where a record's image is: ``image_path`` (an M-BEIR ``img_path``, or a corpus image
    relative to its root) joined to ``image_root``, as an absolute, normalised path. An absolute
    ``image_path`` is kept (normalised); no root: relative to the working folder; None: None.

    >>> image_file("images/../a.png", "/data")
    '/data/a.png'
    >>> image_file("/img/b.png", "/data")
    '/img/b.png'
    """
    if image_path is None:
        return None
    joined = os.path.join(image_root, image_path) if image_root is not None else image_path
    return os.path.abspath(joined)


def as_item(record: Query | Candidate | Item, image_root: str | Path | None = None) -> Item:
    """An encoder Item from a record; relative image paths are resolved against ``image_root``."""
    if isinstance(record, Item):
        return record
    image: Any = record.image_path
    if image is not None and image_root is not None and not Path(image).is_absolute():
        image = Path(image_root) / image
    return Item(text=record.text, image=image)


def src_json(content: dict[str, Any] | None) -> str | None:
    """Serialise a source-content dict the way M-BEIR stores it (a JSON string)."""
    return None if content is None else json.dumps(content, ensure_ascii=False, sort_keys=True)
