"""Turns a TrainBatch into encoder feature chunks (one chunk for the plain loss, several for
GradCache) through the model's own ``collate``; with a vision-feature cache, images are encoded
once and batches carry ``vision_features`` instead of pixels. Knows nothing about losses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mmembed.data.images import load_image
from mmembed.data.records import Item
from mmembed.model.feature_cache import VisionFeatureCache
from mmembed.train.gradcache import split
from mmembed.train.loss import PairMeta
from mmembed.train.sampler import TrainBatch

_PLACEHOLDER = Image.new("RGB", (1, 1))
KEYS = "_image_keys"


@dataclass
class Prepared:
    query_chunks: list[dict[str, Any]]
    cand_chunks: list[dict[str, Any]]
    meta: PairMeta
    n_queries: int
    n_cands: int


def _image_key(image: Any) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    raise TypeError(
        "the vision-feature cache needs images given as paths; turn model.cache_vision_features off"
    )


def collate_chunk(
    model: Any,
    items: list[Item],
    instructions: list[str | None] | None,
    is_query: bool,
    cached: bool,
) -> dict[str, Any]:
    """One chunk of model inputs; with ``cached``, images are replaced by keys for the cache."""
    if not cached:
        return model.collate(items, instructions=instructions, is_query=is_query)
    keys = [_image_key(it.image) for it in items if it.image is not None]
    light = [Item(it.text, _PLACEHOLDER if it.image is not None else None) for it in items]
    batch = model.collate(light, instructions=instructions, is_query=is_query)
    batch.pop("pixel_values", None)  # placeholder pixels; real features come from the cache
    batch[KEYS] = keys
    return batch


def prepare(model: Any, batch: TrainBatch, *, chunk_size: int | None, cached: bool) -> Prepared:
    """Collate queries and candidates, in chunks of ``chunk_size`` items (None: one chunk each)."""
    size = chunk_size or max(len(batch.query_items), len(batch.cand_items), 1)
    qc, cc = [], []
    for start, part in zip(
        range(0, len(batch.query_items), size), split(batch.query_items, size), strict=True
    ):
        qc.append(
            collate_chunk(model, list(part), batch.instructions[start : start + size], True, cached)
        )
    for part in split(batch.cand_items, size):
        cc.append(collate_chunk(model, list(part), None, False, cached))
    return Prepared(qc, cc, batch.to_meta(), len(batch.query_items), len(batch.cand_items))


def fill_from_cache(chunk: dict[str, Any], cache: VisionFeatureCache, model: Any) -> dict[str, Any]:
    """Swap a chunk's image keys for cached (or newly computed) vision features (M, N, C)."""
    keys = chunk.pop(KEYS, None)
    if keys:

        def pixels(missing: list[str]) -> torch.Tensor:
            return model.backbone.preprocess_images([load_image(k) for k in missing])[
                "pixel_values"
            ]

        chunk["vision_features"] = cache.features(keys, pixels)  # (M, N, C)
    return chunk


def to_device(chunk: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in chunk.items()
    }
