"""The learning-rate schedule: the rate the optimiser actually uses at each step, written down by
hand for warmup, linear and cosine decay (base rate 1, 4 warmup steps, 10 steps in all)."""

from __future__ import annotations

import math

import pytest
import torch

from mmembed.train.config import OptimConfig, TrainConfig
from mmembed.train.trainer import make_scheduler


def used_rates(schedule: str, warmup: int, steps: int = 12, total: int = 10) -> list[float]:
    """The lr of each optimiser step 0..steps-1 (read before the step, as AdamW sees it)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    cfg = TrainConfig(optim=OptimConfig(lr=1.0, warmup_steps=warmup, schedule=schedule))
    sched = make_scheduler(opt, cfg, total)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_warmup_then_decay_to_zero():
    # warmup: step s uses (s + 1) / 4, so the first step already moves and step 3 is at the peak;
    # then 1 - (s - 4) / 6, reaching 0 at step 10 and staying there
    want = [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0, 0.0]
    assert used_rates("linear", 4) == pytest.approx(want, abs=1e-12)


def test_cosine_warmup_then_half_cosine():
    c = [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(7)]  # 1, .933, .75, .5, .25, .067, 0
    want = [0.25, 0.5, 0.75, 1.0, *c, 0.0]
    assert used_rates("cosine", 4) == pytest.approx(want, abs=1e-12)
    assert c[2] == pytest.approx(0.75) and c[3] == pytest.approx(0.5)


def test_constant_and_no_warmup():
    assert used_rates("constant", 4) == pytest.approx([0.25, 0.5, 0.75] + [1.0] * 9)
    assert used_rates("constant", 0) == [1.0] * 12
    assert used_rates("linear", 0)[:6] == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
