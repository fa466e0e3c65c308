"""Model setup for training: LoRA adapters through peft on the text model (targets from the
config), projector and pooler fully trained, vision tower frozen (kept in eval mode) or trained,
gradient checkpointing and LoRA merging for export (the frozen-feature cache is
mmembed.model.feature_cache). Knows nothing about data order, losses or processes; the model is any
Embedder-like nn.Module."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from mmembed.train.config import ModelConfig

log = logging.getLogger(__name__)


def _roots(patterns: list[str]) -> list[str]:
    """Module paths a pattern names: itself from the model root, or under ``backbone.``."""
    return [r for p in patterns for r in (p.strip("."), f"backbone.{p.strip('.')}")]


def _matches(name: str, patterns: list[str]) -> bool:
    """True when a dotted parameter/module name lies under one of ``patterns`` (a module path
    from the model root or from its backbone: ``pooler``, ``multi_modal_projector``)."""
    return any(name == r or name.startswith(r + ".") for r in _roots(patterns))


@dataclass
class SetupReport:
    trainable: int
    total: int
    lora_modules: int
    frozen_prefixes: list[str]

    def __str__(self) -> str:
        share = 100.0 * self.trainable / max(1, self.total)
        return (
            f"trainable parameters: {self.trainable:,} of {self.total:,} ({share:.2f}%), "
            f"LoRA on {self.lora_modules} modules"
        )


def language_model(model: nn.Module) -> nn.Module:
    backbone = getattr(model, "backbone", model)
    lm = getattr(backbone, "language_model", None)
    if lm is None:
        raise ValueError(
            f"{type(model).__name__} has no backbone.language_model to put LoRA adapters on"
        )
    return lm


def add_lora(model: nn.Module, cfg: ModelConfig) -> int:
    """Inject LoRA adapters into the text model's modules named in ``cfg.lora.targets``."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # pragma: no cover - peft is a core dependency
        raise ImportError("LoRA needs peft: pip install peft") from e
    lm = language_model(model)
    names = {n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, nn.Linear)}
    targets = [t for t in cfg.lora.targets if t in names]
    if not targets:
        raise ValueError(
            f"model.lora.targets {cfg.lora.targets} match no Linear module of the text "
            f"model; its Linear modules are named {sorted(names)}"
        )
    lcfg = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        bias="none",
    )
    inject_adapter_in_model(lcfg, lm)
    return sum(
        1 for m in lm.modules() if hasattr(m, "lora_A") and len(getattr(m, "lora_A", {})) > 0
    )


def prepare_model(model: nn.Module, cfg: ModelConfig) -> SetupReport:
    """Apply LoRA, freezing and gradient checkpointing in place; returns what is trainable.

    With LoRA: only adapters plus ``train_modules`` train. Without: everything trains except
    ``freeze_modules`` and, when ``freeze_vision``, the vision tower. ``train_modules`` always train."""
    n_lora = add_lora(model, cfg) if cfg.lora.enabled else 0
    frozen = list(cfg.freeze_modules) + (list(cfg.vision_modules) if cfg.freeze_vision else [])
    for name, p in model.named_parameters():
        train = "lora_" in name if cfg.lora.enabled else not _matches(name, frozen)
        if _matches(name, cfg.train_modules) and not (
            cfg.freeze_vision and _matches(name, cfg.vision_modules)
        ):
            train = True
        p.requires_grad_(train)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report = SetupReport(trainable, total, n_lora, frozen)
    log.info("%s", report)
    return report


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing on every transformers model inside (works with
    frozen inputs). transformers 5 names it ``activation_checkpointing_enable``; older releases
    ``gradient_checkpointing_enable``."""
    done = 0
    for m in model.modules():
        if not getattr(m, "supports_gradient_checkpointing", False):
            continue
        kwargs = {"use_reentrant": False}
        if hasattr(m, "activation_checkpointing_enable"):
            m.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif hasattr(m, "gradient_checkpointing_enable"):
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            continue
        done += 1
    if not done:
        log.warning(
            "gradient_checkpointing: no transformers module in the model supports it; ignored"
        )


def set_train_mode(model: nn.Module, cfg: ModelConfig) -> None:
    """model.train(), but frozen vision towers stay in eval mode (batch norm statistics and
    dropout of a frozen tower must not change, and cached features must stay valid)."""
    model.train()
    if cfg.freeze_vision:
        roots = set(_roots(cfg.vision_modules))
        for name, m in model.named_modules():
            if name in roots:
                m.eval()  # and all its children


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base Linear and put the plain Linear back, so the model
    saves and loads as an ordinary Embedder."""
    replaced = 0
    for name, module in list(model.named_modules()):
        if (
            hasattr(module, "lora_A")
            and hasattr(module, "get_base_layer")
            and hasattr(module, "merge")
        ):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            replaced += 1
    if replaced:
        log.info("merged %d LoRA adapters", replaced)
    return model
