"""Evaluate a model on an M-BEIR tree: encode queries (with instructions) and pools through the
resumable shard cache, search local and/or global pools in query chunks with FAISS (memory grows
with k, never with the pool), write TREC runs, and score them. Knows the Embedder protocol only."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmembed.data.mbeir import Layout, read_pool
from mmembed.data.records import hash_did
from mmembed.data.runfile import RunWriter
from mmembed.eval.mbeir import (
    Report,
    TaskData,
    discover,
    load_task,
    modalities_from_pools,
    score_task,
    top1_miss_labels,
)
from mmembed.index.encode import (
    EncodeEntry,
    content_source,
    encode_entries,
    file_source,
    load_encoded,
)
from mmembed.model.protocol import EncoderLike

log = logging.getLogger(__name__)
POOLS = ("local", "global")


def _encode(
    encoder: EncoderLike,
    entries: list[EncodeEntry] | Any,
    folder: Path,
    *,
    is_query: bool,
    source: dict[str, Any],
    image_root: Path,
    batch_size: int,
    shard_size: int,
    total: int | None,
    show_progress: bool,
) -> tuple[np.ndarray, list[str]]:
    res = encode_entries(
        encoder,
        entries,
        folder,
        is_query=is_query,
        source=source,
        image_root=image_root,
        shard_size=shard_size,
        batch_size=batch_size,
        rank=0,
        world_size=1,
        total=total,
        overwrite=True,
        show_progress=show_progress,
    )
    for bad in res.skipped[:10]:
        log.warning("not encoded: %s: %s", bad["id"], bad["error"])
    emb, ids, _ = load_encoded(folder, expect_fingerprint=encoder.fingerprint)
    return emb, ids


def _query_matrix(emb: np.ndarray, ids: list[str], data: TaskData) -> np.ndarray:
    """Rows in the task's query order; a query that could not be encoded gets a zero vector
    (it then retrieves arbitrary candidates and counts as a miss, as it should)."""
    row = {q: i for i, q in enumerate(ids)}
    out = np.zeros((len(data.queries), emb.shape[1]), dtype=np.float32)  # (Q, dim)
    for i, q in enumerate(data.queries):
        j = row.get(q.qid)
        if j is not None:
            out[i] = emb[j]
    return out


def evaluate_model(
    root: str | Path,
    encoder: EncoderLike,
    *,
    out_dir: str | Path,
    pools: Sequence[str] = POOLS,
    instructions: bool = True,
    split: str = "test",
    k: int = 50,
    seed: int = 0,
    factory: str = "Flat",
    batch_size: int = 32,
    shard_size: int = 8192,
    model_name: str | None = None,
    show_progress: bool = True,
    positives: str = "positive",
    preset: str | None = None,
) -> Report:
    """Encode, search and score every task set of ``split``; runs go to ``out_dir/runs``.
    ``preset``: a preset name whose per-task instruction table (model/preset_instructions.tsv)
    replaces M-BEIR's draw where its authors published an instruction."""
    from mmembed.index import Index
    from mmembed.index.inputs import instruction_chooser
    from mmembed.model.preset_instructions import preset_family

    t0 = time.time()
    root, out = Path(root), Path(out_dir)
    bad = [p for p in pools if p not in POOLS]
    if bad or not pools:
        raise ValueError(f"unknown pool setting(s) {bad}; choose from {POOLS}")
    layout = Layout(root)
    tasks = discover(root, split)
    k = max(k, max(max(t.ks) for t in tasks))
    if instructions and not layout.instructions_file.is_file():
        raise FileNotFoundError(
            f"{layout.instructions_file}: no instruction table; pass --instructions off"
        )
    family = preset_family(preset) if instructions else None
    choose = instruction_chooser(
        str(layout.instructions_file) if instructions else None, root, seed, preset
    )
    cache = out / "cache" / encoder.fingerprint.replace("sha256:", "")[:16]
    enc = dict(
        batch_size=batch_size, shard_size=shard_size, show_progress=show_progress, image_root=root
    )

    datas = [load_task(t, positives=positives) for t in tasks]
    qvecs = []
    for d in datas:
        entries = [EncodeEntry(q.qid, q, choose(q)) for q in d.queries]
        tag = ("instr" if instructions else "noinstr") + (f"-{family}" if family else "")
        emb, ids = _encode(
            encoder,
            entries,
            cache / "queries" / f"{d.task.key}_{split}_{tag}",
            is_query=True,
            source=content_source(entries, seed=seed),
            total=len(entries),
            **enc,
        )
        qvecs.append(_query_matrix(emb, ids, d))

    report = Report(
        split,
        tasks,
        settings={
            "data": str(root),
            "split": split,
            "pools": list(pools),
            "instructions": instructions,
            "instruction_source": (f"preset:{family}" if family else "uniir")
            if instructions
            else None,
            "instruction_seed": seed,
            "k": k,
            "factory": factory,
            "model": model_name,
            "fingerprint": encoder.fingerprint,
            "dim": encoder.dim,
            "qrels": positives,
        },
    )
    gemb = gids = gmap = None
    if "global" in pools:
        gemb, gids = _encode_global(encoder, layout, split, cache, enc)
    else:  # local only: reuse the global pool's embeddings when an earlier run cached them
        gemb, gids = _cached_global(encoder, layout, split, cache, enc) or (None, None)
    if gemb is not None and gids is not None:
        glab = np.fromiter((hash_did(x) for x in gids), dtype=np.int64, count=len(gids))
        order = np.argsort(glab)
        gmap = (glab[order], order)  # sorted labels, their rows: did -> row by binary search

    for system in [p for p in POOLS if p in pools]:
        labels_by_task = []
        with RunWriter(out / "runs" / f"{system}.trec", tag=model_name or "mmembed") as run:
            if system == "global":
                index = Index.build(gemb, gids, factory=factory, fingerprint=encoder.fingerprint)
            for d, q in zip(datas, qvecs, strict=True):
                if system == "local":
                    index = _local_index(encoder, d, gemb, gids, gmap, cache, factory, enc, split)
                scores, labels = index.search_labels(q, k)  # (Q, k) each, in query chunks
                labels_by_task.append(labels)
                for qq, s_row, dids in zip(d.queries, scores, index.ids_of(labels), strict=True):
                    run.add(qq.qid, dids, s_row[: len(dids)].tolist())
        wanted = set().union(
            *(
                top1_miss_labels(lab, d.positives)
                for d, lab in zip(datas, labels_by_task, strict=True)
            )
        )
        files = (
            [layout.global_pool_file(split)]
            if system == "global"
            else [d.task.pool_file for d in datas]
        )
        modality_of = modalities_from_pools(files, wanted)
        for d, lab in zip(datas, labels_by_task, strict=True):
            report.results.append(score_task(d, system, labels=lab, modality_of=modality_of))
    report.settings["seconds"] = round(time.time() - t0, 2)
    return report


def _encode_global(
    encoder: EncoderLike, layout: Layout, split: str, cache: Path, enc: dict[str, Any]
) -> tuple[np.ndarray, list[str]]:
    from mmembed.data.errors import ErrorLog

    gfile = layout.global_pool_file(split)
    if not gfile.is_file():
        raise FileNotFoundError(f"{gfile}: no global pool for split {split!r}; use --pool local")
    errors = ErrorLog()
    entries = (EncodeEntry(c.did, c) for c in read_pool(gfile, errors))
    out = _encode(
        encoder,
        entries,
        cache / "pools" / f"global_{split}",
        is_query=False,
        source=file_source(gfile, kind="pool"),
        total=None,
        **enc,
    )
    if errors:
        log.warning("%s: %s", gfile, errors.summary())
    return out


def _cached_global(
    encoder: EncoderLike, layout: Layout, split: str, cache: Path, enc: dict[str, Any]
) -> tuple[np.ndarray, list[str]] | None:
    """The global pool's embeddings from a finished earlier encoding of the same pool file, with
    the same model and image root; None when there is none (nothing is encoded here)."""
    import json

    from mmembed.index.encode import MANIFEST

    gfile = layout.global_pool_file(split)
    folder = cache / "pools" / f"global_{split}"
    if not gfile.is_file() or not (folder / MANIFEST).is_file():
        return None
    meta = json.loads((folder / MANIFEST).read_text())
    same = (
        meta.get("complete")
        and meta.get("model_fingerprint") == encoder.fingerprint
        and meta.get("source") == file_source(gfile, kind="pool")
        and meta.get("image_root") == str(enc["image_root"])
        and meta.get("is_query") is False
    )
    if not same:
        return None
    emb, ids, _ = load_encoded(folder, expect_fingerprint=encoder.fingerprint)
    log.info("local pools: reusing the cached global pool embeddings in %s", folder)
    return emb, ids


def _local_index(
    encoder: EncoderLike,
    d: TaskData,
    gemb: np.ndarray | None,
    gids: list[str] | None,
    gmap: tuple[np.ndarray, np.ndarray] | None,
    cache: Path,
    factory: str,
    enc: dict[str, Any],
    split: str,
) -> Any:
    """The task's own pool: rows gathered from the global pool's embeddings when it holds every
    candidate (each candidate is encoded once), else the local pool encoded on its own."""
    from mmembed.index import Index

    pool = d.task.pool_file
    if not pool.is_file():
        raise FileNotFoundError(
            f"{pool}: local pool of {d.task.dataset} task {d.task.task_id} missing"
        )
    from mmembed.data.errors import ErrorLog

    errors = ErrorLog()
    cands = list(read_pool(pool, errors))
    if errors:
        log.warning("%s: %s", pool, errors.summary())
    dids = [c.did for c in cands]
    if gemb is not None and gids is not None and gmap is not None and len(gids):
        sorted_labels, order = gmap
        want = np.fromiter((hash_did(x) for x in dids), dtype=np.int64, count=len(dids))
        pos = np.searchsorted(sorted_labels, want).clip(0, len(sorted_labels) - 1)
        if (sorted_labels[pos] == want).all():
            rows = np.sort(order[pos])  # ascending rows: a sequential read of the memmap
            return Index.build(
                gemb[rows],
                [gids[r] for r in rows],
                factory=factory,
                fingerprint=encoder.fingerprint,
            )
    entries = [EncodeEntry(c.did, c) for c in cands]
    emb, ids = _encode(
        encoder,
        entries,
        cache / "pools" / f"local_{d.task.key}_{split}",
        is_query=False,
        source=content_source(entries),
        total=len(entries),
        **enc,
    )
    return Index.build(emb, ids, factory=factory, fingerprint=encoder.fingerprint)
