"""FAISS indexes over embeddings and resumable corpus encoding to fp16 shards.
Importing this package loads nothing heavy; numpy and faiss load when first used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmembed.index.faiss_index import Index, IndexMismatchError

__all__ = ["Index", "IndexMismatchError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mmembed.index import faiss_index

        return getattr(faiss_index, name)
    raise AttributeError(f"module 'mmembed.index' has no attribute {name!r}")
