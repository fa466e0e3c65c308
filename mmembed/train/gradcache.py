"""GradCache (cached contrastive loss): the loss of a large batch with the activation memory of
a small chunk. Embed every chunk without a graph, take the loss and its gradient with respect to
the embeddings, then re-run each chunk with a graph (same RNG state) and push that cached
gradient through it. Gives the plain loss's value and gradients. Knows nothing about the data;
the model is any callable ``features -> (n, D)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from mmembed.train.loss import LossOutput

Features = dict[str, Any]


class RandContext:
    """Captures the CPU and CUDA RNG states at construction and restores them on ``with``, so a
    recomputed forward draws the same dropout masks as the cached one."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        )

    def __enter__(self) -> None:
        self._fork = torch.random.fork_rng(devices=list(range(len(self.cuda))) if self.cuda else [])
        self._fork.__enter__()
        torch.set_rng_state(self.cpu)
        if self.cuda:
            torch.cuda.set_rng_state_all(self.cuda)

    def __exit__(self, *exc: object) -> None:
        self._fork.__exit__(*exc)


def _embed_no_grad(
    model: Callable[[Features], torch.Tensor], chunks: Sequence[Features]
) -> tuple[torch.Tensor, list[RandContext]]:
    reps, states = [], []
    with torch.no_grad():
        for ch in chunks:
            states.append(RandContext())
            reps.append(model(ch))  # (n_chunk, D)
    return torch.cat(reps, dim=0), states  # (n, D)


def grad_cache_step(
    model: Callable[[Features], torch.Tensor],
    query_chunks: Sequence[Features],
    cand_chunks: Sequence[Features],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], LossOutput],
    *,
    backward: Callable[[torch.Tensor], None] | None = None,
    sync_context: Callable[[bool], AbstractContextManager] | None = None,
) -> LossOutput:
    """One cached forward/backward over a batch given as chunks of model features.

    ``loss_fn(q (B, D), c (N, D))`` is the loss from embeddings; ``backward`` runs a backward pass
    (default ``Tensor.backward``; pass ``accelerator.backward`` under accelerate);
    ``sync_context(is_last)`` wraps each recomputed chunk (pass DDP ``no_sync`` for all but the
    last). Parameter gradients are accumulated; the returned loss is detached."""
    backward = backward or (lambda t: t.backward())
    sync_context = sync_context or (lambda is_last: nullcontext())
    q, q_states = _embed_no_grad(model, query_chunks)  # (B, D)
    c, c_states = _embed_no_grad(model, cand_chunks)  # (N, D)
    q = q.detach().requires_grad_()
    c = c.detach().requires_grad_()
    out = loss_fn(q, c)
    backward(out.loss)  # grads into q.grad, c.grad (and a learnable temperature)
    grads = [q.grad, c.grad]
    jobs = [(ch, st, 0) for ch, st in zip(query_chunks, q_states, strict=True)]
    jobs += [(ch, st, 1) for ch, st in zip(cand_chunks, c_states, strict=True)]
    starts = [0, 0]
    for k, (ch, st, side) in enumerate(jobs):
        with sync_context(k == len(jobs) - 1), st:
            rep = model(ch)  # (n_chunk, D)
            g = grads[side][starts[side] : starts[side] + rep.shape[0]]  # (n_chunk, D)
            starts[side] += rep.shape[0]
            surrogate = (rep * g.to(rep.dtype)).sum()  # d(surrogate)/d(rep) = cached gradient
            backward(surrogate)
    return LossOutput(out.loss.detach(), out.accuracy, out.logits)


def split(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``items`` in consecutive chunks of at most ``size`` (at least one chunk)."""
    if size <= 0:
        return [items]
    return [items[i : i + size] for i in range(0, len(items), size)] or [items]
