"""Cross-process helpers for contrastive training: gather with gradient, gather without,
string ids as int64 for gathering. Every helper is a no-op on one process; rank and world size
are passed in, never read from globals. Knows nothing about models or losses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` in ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def id64(value: str) -> int:
    """A stable signed int64 for a string id (blake2b), so ids can travel in tensors."""
    return int.from_bytes(
        hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little", signed=True
    )


def _sizes(n: int, world_size: int, device: torch.device) -> list[int]:
    import torch
    import torch.distributed as dist

    size = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _pad(t: torch.Tensor, n: int) -> torch.Tensor:
    import torch

    if t.shape[0] == n:
        return t
    pad = torch.zeros((n - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
    return torch.cat([t, pad], dim=0)  # (n, ...)


def gather_with_grad(t: torch.Tensor, dist_info: DistInfo) -> torch.Tensor:
    """Concatenate ``t`` (N_r, ...) of every rank along dim 0, in rank order, keeping the graph:
    the backward pass sends each rank the gradient every rank's loss put on its rows. Ranks may
    hold different N_r (rows are padded for the collective and cut after). One process: ``t``."""
    if dist_info.world_size == 1:
        return t
    import torch

    sizes = _sizes(t.shape[0], dist_info.world_size, t.device)
    m = max(sizes)
    full = _gather_fn().apply(_pad(t, m), dist_info.rank, dist_info.world_size)  # (W * max_n, ...)
    return torch.cat(
        [full[r * m : r * m + n] for r, n in enumerate(sizes)], dim=0
    )  # (sum N_r, ...)


def _gather_fn():  # built lazily so importing this module does not import torch
    global _GATHER
    if _GATHER is None:
        import torch
        import torch.distributed as dist

        class GatherWithGrad(torch.autograd.Function):
            """all_gather forward; backward sums every rank's gradient and keeps this rank's rows."""

            @staticmethod
            def forward(ctx, t, rank, world):  # t (n, ...)
                parts = [torch.empty_like(t) for _ in range(world)]
                dist.all_gather(parts, t.contiguous())
                ctx.rank, ctx.n = rank, t.shape[0]
                return torch.cat(parts, dim=0)  # (world * n, ...)

            @staticmethod
            def backward(ctx, grad):  # grad (world * n, ...)
                grad = grad.contiguous().clone()
                dist.all_reduce(grad)  # sum over ranks
                return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None, None

        _GATHER = GatherWithGrad
    return _GATHER


_GATHER = None


def gather_nograd(t: torch.Tensor, dist_info: DistInfo) -> torch.Tensor:
    """Like gather_with_grad for tensors that need no gradient (ids, labels, masks)."""
    if dist_info.world_size == 1:
        return t
    import torch
    import torch.distributed as dist

    sizes = _sizes(t.shape[0], dist_info.world_size, t.device)
    padded = _pad(t, max(sizes))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)], dim=0)


def offsets(n_local: int, dist_info: DistInfo, device: torch.device | None = None) -> int:
    """Row offset of this rank's rows inside a gathered tensor (0 on one process)."""
    if dist_info.world_size == 1:
        return 0
    import torch

    sizes = _sizes(n_local, dist_info.world_size, device or torch.device("cpu"))
    return sum(sizes[: dist_info.rank])


def all_reduce_mean(value: float, dist_info: DistInfo, device: torch.device | None = None) -> float:
    """Mean of a scalar over processes (for logging)."""
    if dist_info.world_size == 1:
        return float(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], device=device or torch.device("cpu"))
    dist.all_reduce(t)
    return float(t.item()) / dist_info.world_size
