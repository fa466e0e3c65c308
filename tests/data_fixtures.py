"""Shared data-test fixtures: a small, valid M-BEIR tree written by the library's own writers
(``make_tree``), a jsonl line editor for broken-record cases, and image bytes (a noise picture, a
PNG header that claims a huge size). Imported by the data tests; holds no tests itself."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mmembed.data import mbeir
from mmembed.data.instructions import InstructionRow, InstructionTable, write_instructions
from mmembed.data.records import Candidate, Modality, Query, src_json

SPLITS = ("train", "val", "test")


@dataclass
class Tree:
    root: Path
    queries: dict[tuple[str, int, str], list[Query]] = field(default_factory=dict)
    pools: dict[tuple[str, int], list[Candidate]] = field(default_factory=dict)
    globals: dict[str, list[Candidate]] = field(default_factory=dict)
    table: InstructionTable | None = None

    @property
    def layout(self) -> mbeir.Layout:
        return mbeir.Layout(self.root)


def _png(path: Path, color: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path)
    return path.as_posix()


def make_tree(root: Path) -> Tree:
    """Four (dataset, task) pairs -- mscoco 0 and 3, webqa 1, cirr 7 -- with two queries per
    split each, local pools holding every split's candidates, a global pool per split (the
    union of the local pools), qrels and an instruction table."""
    t = Tree(root)
    rel = lambda p: Path(p).relative_to(root).as_posix()  # noqa: E731
    coco_imgs = [rel(_png(root / "images/mscoco" / f"{i}.png", (40 * i, 0, 0))) for i in range(6)]
    cirr_imgs = [rel(_png(root / "images/cirr" / f"{i}.png", (0, 40 * i, 0))) for i in range(7)]
    src = src_json({"source": "test"})
    t.pools[("mscoco", 0)] = [
        Candidate(f"9:{i}", None, coco_imgs[i], Modality.IMAGE, src) for i in range(6)
    ]
    t.pools[("mscoco", 3)] = [
        Candidate(f"9:{100 + i}", f"a red square number {i}", None, Modality.TEXT, None)
        for i in range(6)
    ]
    t.pools[("webqa", 1)] = [
        Candidate(f"2:{i}", f"passage {i} about topic {i}", None, Modality.TEXT, src)
        for i in range(6)
    ]
    t.pools[("cirr", 7)] = [
        Candidate(f"8:{i}", None, cirr_imgs[i], Modality.IMAGE, None) for i in range(7)
    ]
    for s, split in enumerate(SPLITS):
        ks = (2 * s, 2 * s + 1)
        t.queries[("mscoco", 0, split)] = [
            Query(f"9:{k}", f"caption {k}", None, Modality.TEXT, 0, [f"9:{k}"], [], src) for k in ks
        ]
        t.queries[("mscoco", 3, split)] = [
            Query(f"9:{100 + k}", None, coco_imgs[k], Modality.IMAGE, 3, [f"9:{100 + k}"])
            for k in ks
        ]
        t.queries[("webqa", 1, split)] = [
            Query(
                f"2:{k}",
                f"question {k}?",
                None,
                Modality.TEXT,
                1,
                [f"2:{k}"],
                [f"2:{(k + 1) % 6}"] if split == "train" else [],
            )
            for k in ks
        ]
        t.queries[("cirr", 7, split)] = [
            Query(
                f"8:{k}",
                "make it greener",
                cirr_imgs[k],
                Modality.IMAGE_TEXT,
                7,
                [f"8:{k + 1}", f"8:{(k + 2) % 7}"],
            )
            for k in ks
        ]
    union = [c for pool in t.pools.values() for c in pool]
    t.globals = {split: union for split in SPLITS}
    t.table = InstructionTable(
        [
            InstructionRow(
                "text",
                "image",
                "MSCOCO",
                9,
                ["Find an image of this caption.", "Retrieve a picture matching this."],
            ),
            InstructionRow("image", "text", "MSCOCO", 9, ["Find a caption for this image."]),
            InstructionRow("text", "text", "WebQA", 2, ["Retrieve a passage that answers this."]),
            InstructionRow("image,text", "image", "CIRR", 8, ["Edit the image as described."]),
        ]
    )
    write_tree(t)
    return t


def write_tree(t: Tree) -> None:
    lay = t.layout
    for (name, task), pool in t.pools.items():
        mbeir.write_pool(lay.pool_file(name, task), pool)
    for split, pool in t.globals.items():
        mbeir.write_pool(lay.global_pool_file(split), pool)
    for (name, task, split), qs in t.queries.items():
        mbeir.write_queries(lay.query_file(name, task, split), qs)
        mbeir.write_qrels(lay.qrels_file(name, task, split), qs)
    if t.table is not None:
        write_instructions(lay.instructions_file, t.table)


def edit_line(path: Path, line: int, fn) -> None:
    """Replace one jsonl line (1-based) by fn(parsed object) (an object or a raw string)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    new = fn(json.loads(lines[line - 1]))
    lines[line - 1] = new if isinstance(new, str) else json.dumps(new)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming ``width`` x ``height``, with an empty IDAT: what a
    decompression bomb looks like before anything is decoded (a few dozen bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def noise(w: int = 64, h: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))
