"""Stage ``align`` (``stage: align`` in a training config; LLaVA's stage-1 analogue, see
docs/mmembed_mini.md): on any composed backbone, only the projector (and the pooler when
``model.train_modules`` names it) learns, while the language model and the vision tower stay
frozen and in eval mode, so an image's projected tokens learn to read, to the unchanged text
model, like that image's captions. The objective is the trainer's InfoNCE between image-only
queries and caption candidates (image–caption pairs: mmembed.data.offline.pairs). Knows model
parameter names only: no data, no loss maths, no optimiser."""

from __future__ import annotations

import logging

from torch import nn

from mmembed.train.config import ConfigError, ModelConfig
from mmembed.train.setup import SetupReport, _matches

log = logging.getLogger(__name__)

PROJECTOR = "multi_modal_projector"
# what may learn in stage align: the projector always, the pooler when the config names it
ALIGNABLE = (PROJECTOR, "pooler")


def check_align_model(model: nn.Module) -> None:
    """Refuse models without a projector feeding a language model (stage align needs both)."""
    backbone = getattr(model, "backbone", model)
    if (
        getattr(backbone, PROJECTOR, None) is None
        or getattr(backbone, "language_model", None) is None
    ):
        raise ConfigError(
            f"stage align needs a composed backbone with a vision tower ({type(backbone).__name__} "
            "has no multi_modal_projector or language_model); use a composed preset"
        )


def prepare_align(model: nn.Module, cfg: ModelConfig) -> SetupReport:
    """Freeze everything but the projector (and the pooler if ``cfg.train_modules`` lists it).

    LoRA must be off (the language model stays bit-identical) and the vision tower frozen."""
    if cfg.lora.enabled:
        raise ConfigError(
            "stage align keeps the language model frozen: set model.lora.enabled: false"
        )
    if not cfg.freeze_vision:
        raise ConfigError(
            "stage align keeps the vision tower frozen: set model.freeze_vision: true"
        )
    unknown = [m for m in cfg.train_modules if m not in ALIGNABLE]
    if unknown or PROJECTOR not in cfg.train_modules:
        raise ConfigError(
            f"stage align trains {PROJECTOR} and optionally pooler; model.train_modules is "
            f"{cfg.train_modules}"
        )
    check_align_model(model)
    for name, p in model.named_parameters():
        p.requires_grad_(_matches(name, cfg.train_modules))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report = SetupReport(trainable, total, 0, ["everything but " + ", ".join(cfg.train_modules)])
    log.info("stage align: %s", report)
    return report


def align_train_mode(model: nn.Module) -> None:
    """Train mode for the trained parts only: the frozen language model and vision tower run in
    eval mode (no dropout), so a caption's embedding is a fixed target."""
    model.train()
    backbone = getattr(model, "backbone", model)
    for name in ("language_model", "vision_tower"):
        part = getattr(backbone, name, None)
        if part is not None:
            part.eval()
