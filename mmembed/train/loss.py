"""Contrastive InfoNCE over in-batch and hard negatives, as a "loss from embeddings" that needs
no model: queries (B, D) against candidates (N, D), each query's positive given by index, the
query's other positives masked out, in-batch negatives switchable per query, candidates gathered
across processes. Knows nothing about models, data files or optimisers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mmembed.train.distributed import DistInfo, gather_nograd, gather_with_grad, offsets


@dataclass
class PairMeta:
    """What the loss needs to know about one local batch besides the embeddings.

    labels:   (B,) index of each query's positive among this process's candidates.
    cand_ids: (N,) int64 id of each candidate (``distributed.id64`` of its did).
    pos_ids:  (B, P) int64 ids of all positives of each query, padded; ``pos_valid`` (B, P) marks
              real entries. A candidate whose id is among query i's positives is never a negative
              for i (except that it is i's labelled positive).
    own:      (B, N) True where candidate j was brought into the batch by query i (its positive or
              one of its hard negatives).
    in_batch: (B,) False for queries whose source turns in-batch negatives off: they are scored only
              against the candidates they brought themselves.
    """

    labels: torch.Tensor
    cand_ids: torch.Tensor
    pos_ids: torch.Tensor
    pos_valid: torch.Tensor
    own: torch.Tensor
    in_batch: torch.Tensor


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, mean over this process's queries
    accuracy: float  # share of queries whose positive scores highest among their valid candidates
    logits: torch.Tensor  # (B, N_global) masked scaled similarities (masked = -inf), detached


def valid_mask(
    labels: torch.Tensor,
    cand_ids: torch.Tensor,
    pos_ids: torch.Tensor,
    pos_valid: torch.Tensor,
    own: torch.Tensor,
    in_batch: torch.Tensor,
) -> torch.Tensor:
    """(B, N) True where candidate j counts for query i: its labelled positive, or a negative that
    is not one of its positives (and, with in-batch negatives off, one it brought itself)."""
    b, n = own.shape
    is_pos = (cand_ids[None, :, None] == pos_ids[:, None, :]) & pos_valid[:, None, :]  # (B, N, P)
    is_pos = is_pos.any(dim=-1)  # (B, N)
    valid = ~is_pos & (own | in_batch[:, None])  # (B, N)
    label_hot = torch.zeros((b, n), dtype=torch.bool, device=own.device)
    label_hot[torch.arange(b, device=own.device), labels] = True  # (B, N)
    return valid | label_hot


def info_nce(
    q: torch.Tensor,
    c: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor | None,
    scale: torch.Tensor | float,
) -> LossOutput:
    """InfoNCE from embeddings: cross-entropy of ``scale * q @ c.T`` with masked columns removed.

    q (B, D), c (N, D) (L2-normalised upstream), labels (B,), valid (B, N) bool or None (all)."""
    logits = scale * (q @ c.T)  # (B, N)
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))  # (B, N)
    loss = nn.functional.cross_entropy(logits.float(), labels)
    with torch.no_grad():
        acc = (logits.argmax(dim=1) == labels).float().mean().item() if len(labels) else 0.0
    return LossOutput(loss, acc, logits.detach())


class InfoNCELoss(nn.Module):
    """InfoNCE with a fixed or learnable temperature and cross-process candidate gathering.

    ``temperature``: softmax temperature (logits = cos / temperature). ``learnable=True`` makes
    log(1/temperature) a parameter (clamped to 1/temperature <= ``max_scale``), which the trainer
    hands to the optimiser. ``dist_info``: rank and world size (gathering is a no-op on one)."""

    def __init__(
        self,
        temperature: float = 0.02,
        *,
        learnable: bool = False,
        max_scale: float = 100.0,
        dist_info: DistInfo | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        init = torch.tensor(math.log(1.0 / temperature))
        if learnable:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)
        self.max_scale = max_scale
        self.dist_info = dist_info or DistInfo()

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(self.max_scale)).exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.scale.item())

    def forward(self, q: torch.Tensor, c: torch.Tensor, meta: PairMeta) -> LossOutput:
        d = self.dist_info
        c_all = gather_with_grad(c, d)  # (N_global, D)
        ids_all = gather_nograd(meta.cand_ids.to(c.device), d)  # (N_global,)
        off = offsets(c.shape[0], d, c.device)
        own = meta.own.to(c.device)
        if d.world_size > 1:
            own_all = torch.zeros((own.shape[0], c_all.shape[0]), dtype=torch.bool, device=c.device)
            own_all[:, off : off + own.shape[1]] = own  # (B, N_global): only local columns are own
            own = own_all
        labels = meta.labels.to(c.device) + off  # (B,)
        valid = valid_mask(
            labels,
            ids_all,
            meta.pos_ids.to(c.device),
            meta.pos_valid.to(c.device),
            own,
            meta.in_batch.to(c.device),
        )
        return info_nce(q, c_all.to(q.dtype), labels, valid, self.scale.to(q.dtype))
