"""Encoding at scale: records -> fp16 shards + ids + a manifest, resumable (a killed run starts
again from its finished shards) and sharded by rank under ``accelerate launch``; a merge step
joins the shards. The shard files and the failure policy are mmembed.index.embedding_shards'.
Knows the Embedder protocol and record types, not FAISS or metrics."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmembed.data.atomic import atomic_open, atomic_write_json
from mmembed.index.embedding_shards import (
    EncodeEntry,
    encode_isolating,
    has_shard,
    read_shard,
    read_skipped,
    shard_stem,
    write_shard,
)
from mmembed.model.protocol import EncoderLike

PLAN = "plan.json"
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
IDS = "ids.txt"


class EncodeMismatchError(ValueError):
    """The output folder holds an encoding made with other settings, model or input."""


@dataclass
class EncodeResult:
    out_dir: Path
    count: int  # rows in the merged output (0 until merged)
    encoded_shards: int  # shards this call encoded (0 when everything was already there)
    reused_shards: int
    skipped: list[dict[str, str]] = field(default_factory=list)  # records that could not be encoded
    complete: bool = False


def env_rank() -> tuple[int, int]:
    """(rank, world size) from the variables accelerate / torchrun set; (0, 1) otherwise."""
    rank = int(os.environ.get("RANK", os.environ.get("ACCELERATE_PROCESS_INDEX", "0")))
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("ACCELERATE_NUM_PROCESSES", "1")))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, indent=2, sort_keys=True)


def _chunks(entries: Iterable[EncodeEntry], size: int) -> Iterator[list[EncodeEntry]]:
    chunk: list[EncodeEntry] = []
    for e in entries:
        chunk.append(e)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ShardWriter:
    """The on-disk layout of one encoding: ``plan.json`` (what is encoded and how),
    ``shards/NNNNNN.npy`` + ``.ids`` (fp16 rows; the .npy is renamed into place last, so a shard
    exists only once complete), ``done/`` markers per rank, then the merged
    ``embeddings.npy`` + ``ids.txt`` + ``manifest.json``."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out = Path(out_dir)
        self.shards = self.out / "shards"

    def stem(self, i: int) -> Path:
        return shard_stem(self.shards, i)

    def has_shard(self, i: int) -> bool:
        return has_shard(self.stem(i))

    def write_shard(
        self, i: int, emb: np.ndarray, ids: list[str], skipped: list[dict[str, str]]
    ) -> None:
        write_shard(self.stem(i), emb, ids, skipped)

    def read_shard(self, i: int) -> tuple[np.ndarray, list[str]]:
        return read_shard(self.stem(i))

    def skipped_of(self, i: int) -> list[dict[str, str]]:
        return read_skipped(self.stem(i))

    def check_plan(self, plan: dict[str, Any], overwrite: bool) -> None:
        path = self.out / PLAN
        self.out.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            old = json.loads(path.read_text())
            if old == plan:
                return
            if not overwrite:
                diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
                raise EncodeMismatchError(
                    f"{self.out} holds an encoding made with different {', '.join(diff)}; "
                    "use another output folder, or --overwrite to start it again"
                )
            import shutil

            for name in ("shards", "done", EMBEDDINGS, IDS, MANIFEST):
                p = self.out / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        _write_json(path, plan)

    def mark_done(
        self, rank: int, world: int, n_shards: int, count: int, input_skipped: int = 0
    ) -> None:
        (self.out / "done").mkdir(exist_ok=True)
        _write_json(
            self.out / "done" / f"rank{rank}.json",
            {
                "rank": rank,
                "world_size": world,
                "shards": n_shards,
                "records": count,
                "input_skipped": input_skipped,
            },
        )

    def input_skipped(self) -> int:
        """Records the input reader skipped (bad lines, unreadable files); every rank reads the
        whole input, so any rank's count is the total."""
        folder = self.out / "done"
        counts = [
            int(json.loads(p.read_text()).get("input_skipped", 0))
            for p in (folder.glob("rank*.json") if folder.is_dir() else [])
        ]
        return max(counts, default=0)

    def total_shards(self) -> int | None:
        """Shards of the whole input, known once any rank has read it to the end."""
        folder = self.out / "done"
        counts = (
            {json.loads(p.read_text())["shards"] for p in folder.glob("rank*.json")}
            if folder.is_dir()
            else set()
        )
        if len(counts) > 1:
            raise ValueError(
                f"{folder}: ranks disagree on the number of shards {sorted(counts)}; rerun with --overwrite"
            )
        return counts.pop() if counts else None

    def merge(self, plan: dict[str, Any]) -> tuple[int, list[dict[str, str]]]:
        """Join all shards into embeddings.npy (fp16) + ids.txt + manifest.json, streaming."""
        n_shards = self.total_shards()
        if n_shards is None or not all(self.has_shard(i) for i in range(n_shards)):
            missing = [i for i in range(n_shards or 0) if not self.has_shard(i)]
            raise RuntimeError(
                f"{self.out}: cannot merge yet, shards missing: {missing[:10] or 'unknown count'} "
                "(run the encoding again to finish them)"
            )
        rows, dim = 0, int(plan["dim"])
        for i in range(n_shards):
            emb, _ = self.read_shard(i)
            rows += emb.shape[0]
        skipped: list[dict[str, str]] = []
        with atomic_open(self.out / IDS, "w") as f:
            for i in range(n_shards):
                f.writelines(s + "\n" for s in self.read_shard(i)[1])
                skipped.extend(self.skipped_of(i))
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
            "fortran_order": False,
            "shape": (rows, dim),
        }
        with atomic_open(self.out / EMBEDDINGS, "wb") as f:  # streamed, one shard at a time
            np.lib.format.write_array_header_1_0(f, header)
            for i in range(n_shards):
                emb, _ = self.read_shard(i)  # (n_i, dim)
                f.write(np.ascontiguousarray(emb, dtype=np.float16).tobytes())
        unread = self.input_skipped()
        _write_json(
            self.out / MANIFEST,
            {
                **plan,
                "count": rows,
                "shards": n_shards,
                "dtype": "float16",
                "skipped": len(skipped) + unread,  # every input record that is not a row
                "skipped_input": unread,  # bad records / files the reader passed over
                "skipped_encode": len(skipped),  # records that failed to encode
                "complete": True,
            },
        )
        return rows, skipped


def encode_entries(
    encoder: EncoderLike,
    entries: Iterable[EncodeEntry],
    out_dir: str | Path,
    *,
    is_query: bool,
    source: dict[str, Any],
    image_root: str | Path | None = None,
    shard_size: int = 4096,
    batch_size: int = 32,
    rank: int | None = None,
    world_size: int | None = None,
    total: int | None = None,
    overwrite: bool = False,
    merge: bool = True,
    show_progress: bool = True,
    input_errors: Sized | None = None,
) -> EncodeResult:
    """Encode ``entries`` into ``out_dir``; rank r of W encodes shards i with i % W == r.

    ``source`` identifies the input (file fingerprint or content hash); it, the model fingerprint,
    the shard size and whether these are queries make up the plan a resumed run must match.
    ``input_errors`` (an ErrorLog the entries' reader fills) is counted in the manifest's
    ``skipped`` once the entries are read."""
    if rank is None or world_size is None:
        rank, world_size = env_rank()
    writer = ShardWriter(out_dir)
    plan = {
        "source": source,
        "model_fingerprint": encoder.fingerprint,
        "dim": int(encoder.dim),
        "is_query": is_query,
        "shard_size": int(shard_size),
        "image_root": None if image_root is None else str(image_root),
    }
    writer.check_plan(plan, overwrite)
    if (writer.out / MANIFEST).is_file() and json.loads((writer.out / MANIFEST).read_text()).get(
        "complete"
    ):
        meta = json.loads((writer.out / MANIFEST).read_text())
        return EncodeResult(writer.out, meta["count"], 0, meta["shards"], [], True)
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total, unit="rec", desc=f"encode[{rank}/{world_size}]", disable=not show_progress
    )
    encoded = reused = count = 0
    skipped: list[dict[str, str]] = []
    n_shards = 0
    for i, chunk in enumerate(_chunks(entries, shard_size)):
        n_shards, count = i + 1, count + len(chunk)
        if i % world_size != rank:
            continue
        if writer.has_shard(i):
            reused += 1
        else:
            ok, emb, bad = encode_isolating(
                encoder, chunk, is_query=is_query, image_root=image_root, batch_size=batch_size
            )
            writer.write_shard(i, emb, [e.id for e in ok], bad)
            skipped.extend(bad)
            encoded += 1
        bar.update(len(chunk) * world_size)
    bar.close()
    unread = len(input_errors) if input_errors is not None else 0
    writer.mark_done(rank, world_size, n_shards, count, unread)
    result = EncodeResult(writer.out, 0, encoded, reused, skipped)
    if merge and all(writer.has_shard(j) for j in range(n_shards)):
        result.count, result.skipped = writer.merge(plan)
        result.complete = True
    return result


def load_encoded(
    out_dir: str | Path, *, mmap: bool = True, expect_fingerprint: str | None = None
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """The merged (N, dim) fp16 embeddings (memory-mapped), their ids and the manifest."""
    out = Path(out_dir)
    mpath = out / MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(
            f"{out}: no {MANIFEST}; the encoding is unfinished (run it again to resume)"
        )
    meta = json.loads(mpath.read_text())
    if expect_fingerprint and meta.get("model_fingerprint") != expect_fingerprint:
        raise EncodeMismatchError(
            f"{out} was encoded with model {str(meta.get('model_fingerprint'))[:16]}..., "
            f"not {expect_fingerprint[:16]}...; encode again with this model"
        )
    emb = np.load(out / EMBEDDINGS, mmap_mode="r" if mmap else None)
    ids = (out / IDS).read_text(encoding="utf-8").splitlines()
    return emb, ids, meta


def file_source(path: str | Path, **extra: Any) -> dict[str, Any]:
    """A cheap identity of an input file: size and a hash of its first and last MiB."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            h.update(f.read())
    return {"path": str(p.resolve()), "size": size, "head_tail_sha256": h.hexdigest(), **extra}


def content_source(entries: list[EncodeEntry], **extra: Any) -> dict[str, Any]:
    """An identity of in-memory entries: a hash of every id, text, image path and instruction."""
    h = hashlib.sha256()
    for e in entries:
        r = e.record
        img = getattr(r, "image_path", getattr(r, "image", None))
        h.update(
            json.dumps(
                [
                    e.id,
                    getattr(r, "text", None),
                    str(img) if img is not None else None,
                    e.instruction,
                ],
                ensure_ascii=False,
            ).encode()
        )
    return {"entries": len(entries), "content_sha256": h.hexdigest(), **extra}
