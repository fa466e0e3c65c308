"""GradCache under DDP: gradient sync must be skipped for every recomputed chunk but the last,
or the all-reduce runs before the last chunk's gradients exist (and not after them)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from mmembed.train.gradcache import grad_cache_step
from mmembed.train.loss import info_nce


def test_sync_context_is_last_only_for_the_last_chunk():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    chunks = [torch.randn(2, 4) for _ in range(3)]  # 3 query chunks + 3 candidate chunks
    flags: list[bool] = []
    calls: list[int] = []

    @contextmanager
    def sync(is_last: bool):
        flags.append(is_last)
        yield

    def backward(t: torch.Tensor) -> None:
        calls.append(len(flags))  # how many chunks were recomputed when this backward ran
        t.backward()

    out = grad_cache_step(
        model,
        chunks,
        chunks,
        lambda q, c: info_nce(q, c, torch.arange(6), None, 1.0),
        backward=backward,
        sync_context=sync,
    )
    assert flags == [False] * 5 + [True]
    assert calls == [0, 1, 2, 3, 4, 5, 6]  # the loss, then one surrogate per chunk in order
    assert torch.isfinite(out.loss) and model.weight.grad.abs().sum() > 0
