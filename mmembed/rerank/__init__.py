"""Zero-shot (M)LLM reranking of a run's top k (docs/rerank.md): prompts per task type, a True/False
scorer over LLaVA-Next or any causal LM, and the run-level pipeline. Imports lazily."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Reranker": "mmembed.rerank.scorer",
    "answer_token_id": "mmembed.rerank.scorer",
    "load_reranker": "mmembed.rerank.load",
    "PromptSet": "mmembed.rerank.prompts",
    "load_prompts": "mmembed.rerank.prompts",
    "rerank_run": "mmembed.rerank.pipeline",
    "reorder": "mmembed.rerank.pipeline",
    "RerankResult": "mmembed.rerank.pipeline",
    "load_inputs": "mmembed.rerank.inputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mmembed.rerank' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
