"""The inference loop behind ``Embedder.encode_*``: sort by length, collate the next batch in a
background thread (image decoding overlaps the model's forward), restore the input order.
Knows nothing of files, shards or indexes (``mmembed encode`` builds on this)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmembed.data.records import Candidate, Item, Query, as_item

if TYPE_CHECKING:
    from mmembed.model.embedder import Embedder


def _label(record: Any) -> str | None:
    for attr in ("qid", "did"):
        value = getattr(record, attr, None)
        if value is not None:
            return f"{attr} {value}"
    return None


def _instructions(instructions: str | Sequence[str | None] | None, n: int) -> list[str | None]:
    if instructions is None:
        return [None] * n
    if isinstance(instructions, str):
        return [instructions] * n
    out = list(instructions)
    if len(out) != n:
        raise ValueError(
            f"got {len(out)} instructions for {n} items; pass one per item, one string, or None"
        )
    return out


def _approx_len(item: Item, instruction: str | None, image_tokens: int) -> int:
    """Sort key: characters of text + instruction, plus the visual tokens (about 4 chars each)."""
    return (
        len(item.text or "")
        + len(instruction or "")
        + (4 * image_tokens if item.image is not None else 0)
    )


def encode_records(
    emb: Embedder,
    records: Sequence[Query | Candidate | Item],
    *,
    is_query: bool,
    instructions: str | Sequence[str | None] | None = None,
    image_root: str | Path | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
    convert_to_tensor: bool = False,
    num_workers: int = 2,
) -> np.ndarray | torch.Tensor:
    """(N, dim) float32 L2-normalised embeddings of ``records`` in their input order."""
    n = len(records)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    items = [as_item(r, image_root) for r in records]
    labels = [_label(r) for r in records]
    instr = _instructions(instructions, n)
    out = np.zeros((n, emb.dim), dtype=np.float32)  # (N, dim)
    if n == 0:
        return torch.from_numpy(out) if convert_to_tensor else out
    m = emb.num_image_tokens
    order = sorted(range(n), key=lambda i: -_approx_len(items[i], instr[i], m))  # longest first
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    device = emb.device
    dtype = emb.dtype
    pin = device.type == "cuda"
    workers = max(1, min(num_workers, os.cpu_count() or 1))

    def make(idx: list[int], pool: ThreadPoolExecutor) -> dict[str, torch.Tensor]:
        batch = emb.collate(
            [items[i] for i in idx],
            instructions=[instr[i] for i in idx],
            is_query=is_query,
            executor=pool if workers > 1 else None,
            labels=[labels[i] for i in idx],
        )
        return {k: (v.pin_memory() if pin else v) for k, v in batch.items()}

    progress = None
    if show_progress and len(batches) > 1:
        from tqdm.auto import tqdm

        progress = tqdm(
            total=n, desc="encode queries" if is_query else "encode candidates", unit="item"
        )
    was_training = emb.training
    emb.eval()
    try:
        with (
            ThreadPoolExecutor(max_workers=1) as prefetch,
            ThreadPoolExecutor(max_workers=workers) as pool,
        ):
            future = prefetch.submit(make, batches[0], pool)
            for b, idx in enumerate(batches):
                batch = future.result()
                if b + 1 < len(batches):
                    future = prefetch.submit(
                        make, batches[b + 1], pool
                    )  # overlaps the forward below
                batch = {
                    k: v.to(
                        device, dtype=dtype if v.is_floating_point() else None, non_blocking=pin
                    )
                    for k, v in batch.items()
                }
                with torch.inference_mode():
                    vecs = emb(batch)  # (b, dim) float32
                out[idx] = vecs.cpu().numpy()
                if progress is not None:
                    progress.update(len(idx))
    finally:
        emb.train(was_training)
        if progress is not None:
            progress.close()
    return torch.from_numpy(out) if convert_to_tensor else out
