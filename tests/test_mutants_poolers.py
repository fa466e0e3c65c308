"""The latent-attention pooler is built with the sizes it is given (or the defaults when given
none): parameter shapes, on the meta device so nothing is allocated."""

from __future__ import annotations

import torch

from mmembed.model.poolers import LatentAttentionConfig, LatentAttentionPooler


def _shapes(p: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in p.named_parameters()}


def test_given_sizes_are_used_and_defaults_apply_without_a_config():
    cfg = LatentAttentionConfig(num_latents=3, latent_dim=5, heads=2, dim_head=4, ff_mult=2)
    with torch.device("meta"):
        small = _shapes(LatentAttentionPooler(8, cfg))
        default = _shapes(LatentAttentionPooler(8))
    assert small["latents"] == (3, 5)
    assert small["cross_attend_blocks.0.fn.to_q.weight"] == (2 * 4, 8)  # heads * dim_head
    assert small["cross_attend_blocks.0.fn.to_kv.weight"] == (2 * 2 * 4, 5)  # keys + values
    assert small["cross_attend_blocks.1.fn.net.0.weight"] == (8 * 2 * 2, 8)  # GEGLU: 2 x mult
    d = LatentAttentionConfig()
    assert default["latents"] == (d.num_latents, d.latent_dim)
    assert default["cross_attend_blocks.0.fn.to_q.weight"] == (d.heads * d.dim_head, 8)
