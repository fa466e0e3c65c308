"""Score fusion (UniIR CLIP_SF) over any pooler: the text positions and the image positions of a
backbone's output are pooled apart, each vector is L2-normalised, and an item's embedding is the
normalised sum of the parts it has. Knows masks and poolers only: no tokeniser, no backbone."""

from __future__ import annotations

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
