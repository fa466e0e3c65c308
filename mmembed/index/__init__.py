"""FAISS indexes over embeddings and resumable corpus encoding to fp16 shards.
Importing this package loads numpy only; faiss and torch load when first used."""

from mmembed.index.faiss_index import Index, IndexMismatchError

__all__ = ["Index", "IndexMismatchError"]
