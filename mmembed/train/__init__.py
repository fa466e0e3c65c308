"""mmembed.train: contrastive training of embedders (InfoNCE with masked positives, GradCache,
cross-process gather, LoRA setup, deterministic data plan, checkpoints with exact resume) and
modality-aware hard-negative mining. Importing this package loads neither torch nor transformers."""

from __future__ import annotations

from typing import Any

_LAZY = {
    "TrainConfig": "mmembed.train.config",
    "load_config": "mmembed.train.config",
    "ConfigError": "mmembed.train.config",
    "train": "mmembed.train.trainer",
    "InfoNCELoss": "mmembed.train.loss",
    "info_nce": "mmembed.train.loss",
    "PairMeta": "mmembed.train.loss",
    "grad_cache_step": "mmembed.train.gradcache",
    "DistInfo": "mmembed.train.distributed",
    "gather_with_grad": "mmembed.train.distributed",
    "BatchPlan": "mmembed.train.sampler",
    "load_sources": "mmembed.train.sources",
    "prepare_model": "mmembed.train.setup",
    "merge_lora": "mmembed.train.setup",
    "MiningConfig": "mmembed.train.mine",
    "select_negatives": "mmembed.train.mine",
    "mine_hard_negatives": "mmembed.train.mine",
    "mine_files": "mmembed.train.mine_files",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmembed.train' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
