"""Checkpoints: atomic (a temp folder is never taken for a checkpoint), keep-last-N, a faithful
round trip of trainable weights, optimiser, scheduler and RNG, and the accelerate-engine path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmembed.train.checkpoint import (
    TrainerState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from mmembed.train.config import TrainConfig
from mmembed.train.loss import InfoNCELoss


def _parts(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # a frozen parameter is not saved
    loss = InfoNCELoss(0.1, learnable=True)
    params = [p for p in model.parameters() if p.requires_grad] + list(loss.parameters())
    opt = torch.optim.AdamW(params, lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, loss, opt, sched


def _step(model, loss, opt, sched):
    out = model(torch.randn(3, 4)).pow(2).sum() + loss.log_scale
    out.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_round_trip_and_keep_last(tmp_path):
    model, loss, opt, sched = _parts(0)
    for step in range(1, 5):
        _step(model, loss, opt, sched)
        save_checkpoint(
            tmp_path,
            TrainerState(step, 0, step, 1, 1),
            model=model,
            loss=loss,
            optimizer=opt,
            scheduler=sched,
            config=TrainConfig(),
            keep_last=2,
        )
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]
    (tmp_path / "step-00000009.tmp").mkdir()  # a save cut by a kill
    assert latest_checkpoint(tmp_path).name == "step-00000004"
    assert (tmp_path / "step-00000004/config.yaml").is_file()
    rng_after_save = torch.get_rng_state()
    _step(model, loss, opt, sched)
    expected = [p.detach().clone() for p in model.parameters()]

    m2, l2, o2, s2 = _parts(1)  # different init: everything must come from the checkpoint
    state = load_checkpoint(
        latest_checkpoint(tmp_path), model=m2, loss=l2, optimizer=o2, scheduler=s2
    )
    assert state.global_step == 4 and torch.equal(torch.get_rng_state(), rng_after_save)
    m2[0].weight.data.copy_(model[0].weight.data)  # the frozen part comes from the base model
    _step(m2, l2, o2, s2)
    for a, b in zip(expected, m2.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-7)
    assert s2.get_last_lr() == sched.get_last_lr()
    with pytest.raises(ValueError, match="resume with the same number of processes"):
        load_checkpoint(
            latest_checkpoint(tmp_path), model=m2, loss=l2, optimizer=o2, scheduler=s2, world_size=2
        )


def test_engine_path_through_accelerate(tmp_path):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model, loss, opt, sched = _parts(0)
    model, opt = acc.prepare(model, opt)
    _step(model, loss, opt, sched)
    save_checkpoint(
        tmp_path,
        TrainerState(1, 0, 1, 1, 1),
        model=model,
        loss=loss,
        optimizer=opt,
        scheduler=sched,
        config=TrainConfig(),
        engine=acc,
    )
    assert (tmp_path / "step-00000001/engine").is_dir()
    want = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    load_checkpoint(
        tmp_path / "step-00000001",
        model=model,
        loss=loss,
        optimizer=opt,
        scheduler=sched,
        engine=acc,
    )
    for a, b in zip(want, model.parameters(), strict=True):
        assert torch.equal(a, b)
