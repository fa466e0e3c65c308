"""mmembed.model: multimodal embedders (composed and LLaVA-Next backbones, NV-Embed poolers,
MM-Embed prompts and checkpoints, CLIP score fusion). Heavy imports happen on first use:
importing this package loads neither torch nor transformers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmembed.model.embedder import Embedder, EmbedderConfig
    from mmembed.model.registry import load_embedder

_LAZY = {
    "Embedder": "mmembed.model.embedder",
    "EmbedderConfig": "mmembed.model.embedder",
    "load_embedder": "mmembed.model.registry",
    "preset_names": "mmembed.model.registry",
    "default_model_name": "mmembed.model.registry",
    "format_prompt": "mmembed.model.prompts",
}

__all__ = [  # noqa: RUF022 - explicit for type checkers
    "Embedder",
    "EmbedderConfig",
    "default_model_name",
    "format_prompt",
    "load_embedder",
    "preset_names",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmembed.model' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
