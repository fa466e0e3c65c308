"""Score fusion (UniIR CLIP_SF) over any pooler: the text positions and the image positions of a
backbone's output are pooled apart, each vector is L2-normalised, and an item's embedding is the
normalised sum of the parts it has; and late fusion, the same sum over a whole encoder's text-only
and image-only embeddings. Knows masks, poolers and the encode API only: no tokeniser, no backbone."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Poolers whose output at a position depends on that position alone, so pooling a subset of
# positions is the pooling of that modality by itself.
TOKENWISE_POOLERS = ("mean", "latent_attention")


def score_fusion_pool(
    pooler: nn.Module,
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    pool_mask: torch.Tensor,
    image_mask: torch.Tensor,
    has_text: torch.Tensor,
) -> torch.Tensor:
    """(B, L, D) hidden states -> (B, dim) float32, L2-normalised.

    ``image_mask`` (B, L) marks the visual tokens; the text part is ``pool_mask`` without them.
    ``has_text`` (B,) says which items have a text part (text, or a query instruction); an item
    with an image has an image part. An item with neither gives a zero vector."""
    image = image_mask.bool()  # (B, L)
    text_pool = pool_mask.bool() & ~image  # (B, L)
    text_attn = attention_mask.bool() & ~image  # (B, L)
    t = F.normalize(pooler(hidden, text_attn.long(), text_pool.long()).float(), dim=-1)  # (B, d)
    v = F.normalize(pooler(hidden, image.long(), image.long()).float(), dim=-1)  # (B, d)
    has_image = image.any(dim=-1)  # (B,)
    fused = t * has_text.to(t.device, t.dtype).unsqueeze(-1)  # (B, d)
    fused = fused + v * has_image.to(v.dtype).unsqueeze(-1)
    return F.normalize(fused, dim=-1)


class LateFusion:
    """Late score fusion over any encoder with the Embedder's encode API: a composed item is the
    normalised sum of the encoder's embeddings of its text alone and its image alone (each already
    L2-normalised); single-modality items are embedded as they are. Same encode API, so it
    evaluates and indexes like an Embedder. Trains nothing (a baseline of docs/mmembed_mini.md)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.dim = encoder.dim
        digest = hashlib.sha256(f"late-fusion:{encoder.fingerprint}".encode()).hexdigest()
        self.fingerprint = f"sha256:{digest}"

    def _encode(
        self, records: Sequence[Any], is_query: bool, instructions: Any, **kw: Any
    ) -> np.ndarray:
        from mmembed.data.records import Item, as_item

        root = kw.pop("image_root", None)
        items = [as_item(r, root) for r in records]
        n = len(items)
        if instructions is None or isinstance(instructions, str):
            instructions = [instructions] * n
        parts: list[Item] = []  # composed items split into a text half and an image half
        instr: list[str | None] = []
        owner: list[int] = []  # parts[j] belongs to items[owner[j]]
        for i, it in enumerate(items):
            halves = (
                [it]
                if (it.image is None or not it.text)
                else [Item(it.text, None), Item(None, it.image)]
            )
            for h in halves:
                parts.append(h)
                instr.append(instructions[i])
                owner.append(i)
        if is_query:
            vecs = self.encoder.encode_queries(parts, instructions=instr, **kw)  # (P, dim)
        else:
            vecs = self.encoder.encode_candidates(parts, **kw)  # (P, dim)
        out = np.zeros((n, self.dim), dtype=np.float32)  # (N, dim)
        np.add.at(out, np.asarray(owner, dtype=np.int64), np.asarray(vecs, dtype=np.float32))
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def encode_queries(
        self, queries: Sequence[Any], *, instructions: Any = None, **kw: Any
    ) -> np.ndarray:
        return self._encode(queries, True, instructions, **kw)

    def encode_candidates(self, candidates: Sequence[Any], **kw: Any) -> np.ndarray:
        return self._encode(candidates, False, None, **kw)
