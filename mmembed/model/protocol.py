"""What the rest of the package needs from a model: ``EncoderLike``, the protocol every embedder
here (Embedder, ClipScoreFusion) meets and that encoding, indexing and evaluation are written
against. Knows no model; imports nothing heavy."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class EncoderLike(Protocol):
    """What encoding needs from an Embedder (see mmembed.model)."""

    dim: int
    fingerprint: str

    def encode_queries(self, queries: Any, **kw: Any) -> np.ndarray: ...

    def encode_candidates(self, candidates: Any, **kw: Any) -> np.ndarray: ...
