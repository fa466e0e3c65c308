"""Poolers: (B, L, D) hidden states + masks -> (B, D_out) vectors (not normalised).

NV-Embed latent attention, masked mean, last token. Poolers know nothing about tokenisers,
prompts or backbones: they see hidden states, the attention mask and the pooling mask."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, L, D) over positions where ``mask`` (B, L) is 1 -> (B, D).

    Rows whose mask is all zero give zeros (not NaN)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    total = (hidden * m).sum(dim=1)  # (B, D)
    count = m.sum(dim=1).clamp(min=1.0)  # (B, 1)
    return total / count


class MeanPooler(nn.Module):
    """Masked mean over the pooling mask (instruction tokens and padding excluded)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor
    ) -> torch.Tensor:
        return masked_mean(hidden, pool_mask)  # (B, D)


class LastTokenPooler(nn.Module):
    """The hidden state of the last real (non-padding) token, for left or right padding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor
    ) -> torch.Tensor:
        B, L, _ = hidden.shape
        positions = torch.arange(L, device=hidden.device).expand(B, L)  # (B, L)
        # The last position whose attention mask is set: works whatever the padding side.
        last = torch.where(attention_mask.bool(), positions, -1).max(dim=1).values  # (B,)
        last = last.clamp(min=0)
        return hidden[torch.arange(B, device=hidden.device), last]  # (B, D)


class GEGLU(nn.Module):
    """Split the last dim in two halves x, g and return x * gelu(g)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gates = x.chunk(2, dim=-1)  # (..., 2F) -> 2 x (..., F)
        return x * F.gelu(gates)


class FeedForward(nn.Module):
    """Linear(D, 2*mult*D) -> GEGLU -> Linear(mult*D, D). Names ``net.0`` / ``net.2`` as NV-Embed."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, dim * mult * 2), GEGLU(), nn.Linear(dim * mult, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttention(nn.Module):
    """Multi-head attention: queries from x, keys/values from a context; no attention mask."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, query_dim, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        h = self.heads
        q = self.to_q(x)  # (B, L, H*Dh)
        k, v = self.to_kv(context).chunk(2, dim=-1)  # 2 x (B, R, H*Dh)
        q = q.view(B, L, h, -1).transpose(1, 2)  # (B, H, L, Dh)
        k = k.view(B, k.shape[1], h, -1).transpose(1, 2)  # (B, H, R, Dh)
        v = v.view(B, v.shape[1], h, -1).transpose(1, 2)  # (B, H, R, Dh)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, H, L, Dh)
        out = out.transpose(1, 2).reshape(B, L, -1)  # (B, L, H*Dh)
        return self.to_out(out)  # (B, L, D)


class PreNorm(nn.Module):
    """LayerNorm the input (and the context, when given) before ``fn``."""

    def __init__(self, dim: int, fn: nn.Module, context_dim: int | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        if self.norm_context is not None:
            return self.fn(x, self.norm_context(context))
        return self.fn(x)


@dataclass
class LatentAttentionConfig:
    """Sizes of the NV-Embed latent-attention pooler. ``mmembed()`` gives MM-Embed's preset."""

    num_latents: int = 512
    latent_dim: int = 4096
    heads: int = 8
    dim_head: int = 4096
    ff_mult: int = 4

    @classmethod
    def mmembed(cls) -> LatentAttentionConfig:
        return cls(num_latents=512, latent_dim=4096, heads=8, dim_head=4096, ff_mult=4)


class LatentAttentionPooler(nn.Module):
    """NV-Embed latent attention: hidden tokens attend to a trainable latent array (keys and
    values), then a GEGLU MLP, both with residuals, then a masked mean over ``pool_mask``.

    Parameter names follow the published layout: ``latents``,
    ``cross_attend_blocks.0.{norm,norm_context,fn.to_q,fn.to_kv,fn.to_out}``,
    ``cross_attend_blocks.1.{norm,fn.net.0,fn.net.2}``."""

    def __init__(self, dim: int, cfg: LatentAttentionConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or LatentAttentionConfig()
        self.out_dim = dim
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, cfg.latent_dim))  # (R, C)
        attn = CrossAttention(dim, cfg.latent_dim, cfg.heads, cfg.dim_head)
        self.cross_attend_blocks = nn.ModuleList(
            [
                PreNorm(dim, attn, context_dim=cfg.latent_dim),
                PreNorm(dim, FeedForward(dim, cfg.ff_mult)),
            ]
        )

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor
    ) -> torch.Tensor:
        B = hidden.shape[0]
        latents = self.latents.to(hidden.dtype).unsqueeze(0).expand(B, -1, -1)  # (B, R, C)
        attn, ff = self.cross_attend_blocks
        x = attn(hidden, context=latents) + hidden  # (B, L, D)
        x = ff(x) + x  # (B, L, D)
        return masked_mean(x, pool_mask)  # (B, D)


@dataclass
class PoolerConfig:
    """Which pooler and its sizes (``latent`` only for latent attention)."""

    type: str = "mean"  # "mean" | "last_token" | "latent_attention"
    latent: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(dim: int, cfg: PoolerConfig) -> nn.Module:
    return MeanPooler(dim)


def _last(dim: int, cfg: PoolerConfig) -> nn.Module:
    return LastTokenPooler(dim)


def _latent(dim: int, cfg: PoolerConfig) -> nn.Module:
    return LatentAttentionPooler(dim, LatentAttentionConfig(**cfg.latent))


POOLERS = {"mean": _mean, "last_token": _last, "latent_attention": _latent}


def build_pooler(dim: int, cfg: PoolerConfig | dict[str, Any]) -> nn.Module:
    """A pooler for hidden size ``dim`` from its config."""
    if isinstance(cfg, dict):
        cfg = PoolerConfig(**cfg)
    try:
        factory = POOLERS[cfg.type]
    except KeyError:
        raise ValueError(
            f"unknown pooler {cfg.type!r}; expected one of {sorted(POOLERS)}"
        ) from None
    return factory(dim, cfg)
