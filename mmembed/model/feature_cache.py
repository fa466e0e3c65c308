"""The one cache of frozen vision-tower features: in memory by image key (training batches carry
keys instead of pixels) and, with a folder, on disk by the digest of the pixels and of the tower's
weights, so every command and process that runs the same tower on the same image computes it once.
Knows towers, pixels and keys only: no text, no data files, no training loop."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmembed.data.atomic import atomic_open

_DEFAULT: VisionFeatureCache | None = None


def use_feature_cache(folder: str | Path | None) -> VisionFeatureCache | None:
    """Give every composed backbone of this process without a cache of its own the disk cache in
    ``folder`` (None: none). What `mmembed --feature-cache DIR COMMAND` sets for one command."""
    global _DEFAULT
    _DEFAULT = VisionFeatureCache(folder=folder) if folder else None
    return _DEFAULT


def default_feature_cache() -> VisionFeatureCache | None:
    return _DEFAULT


def attach_feature_cache(model: nn.Module, cache: VisionFeatureCache | None) -> None:
    """Make ``model``'s backbone (or ``model`` itself, a backbone) read and write vision features
    through ``cache``'s folder; None detaches it. Backbones that cannot use one are refused."""
    backbone = getattr(model, "backbone", model)
    if not hasattr(type(backbone), "feature_cache"):
        raise ValueError(
            f"{type(backbone).__name__} has no vision-feature cache hook; a feature cache folder "
            "works with the composed backbone only (leave model.feature_cache_dir unset)"
        )
    backbone.feature_cache = cache


def is_frozen(tower: nn.Module) -> bool:
    """True when the tower's output is a fixed function of its pixels right now: eval mode, and no
    graph is being built through its weights (no grad mode, or no weight requires a gradient)."""
    if tower.training:
        return False
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in tower.parameters()))


def tower_digest(tower: nn.Module) -> str:
    """sha256 of the tower's class and every parameter and buffer (name, shape, dtype, bytes)."""
    h = hashlib.sha256(type(tower).__qualname__.encode())
    for name, t in sorted(tower.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def pixel_digest(pixels: torch.Tensor) -> str:
    """sha1 of one image's pixel values (3, H, W), as float32 bytes with the shape."""
    row = pixels.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha1(str(tuple(row.shape)).encode())
    h.update(row.numpy().tobytes())
    return h.hexdigest()


class VisionFeatureCache:
    """Frozen-tower vision features, computed once (no graph) and reused.

    ``features(keys, pixel_loader)``: by image key, in memory as ``dtype`` (fp16 by default: half
    the memory; float32 for bit-exact reuse), for the trainer's ``model.cache_vision_features``.
    ``tower_features(tower, pixel_values)``: with ``folder``, by pixel and tower digest on disk
    (float32 ``.npy``, so a hit equals computing them), for any command; a tower that is not
    frozen (see ``is_frozen``) is always run. Key misses go through the backbone's
    ``vision_features``, so a backbone with a folder cache attached fills both levels."""

    def __init__(
        self,
        model: nn.Module | None = None,
        dtype: torch.dtype = torch.float16,
        folder: str | Path | None = None,
    ) -> None:
        self.model = model
        self.dtype = dtype
        self.folder = Path(folder) if folder else None
        self.store: dict[str, torch.Tensor] = {}
        self.hits = 0  # by key
        self.misses = 0
        self.disk_hits = 0  # by pixels (images read back from the folder)
        self.disk_misses = 0  # images run through the tower and written
        self._digests: dict[int, tuple[tuple[int, ...], str]] = {}

    # ---------------------------------------------------------------- by key, in memory

    def features(self, keys: list[str], pixel_loader: Any) -> torch.Tensor:
        """(M, N, C) for ``keys``; ``pixel_loader(missing_keys) -> (m, 3, H, W)`` for new images."""
        if self.model is None:
            raise ValueError("VisionFeatureCache.features needs the model it caches")
        missing = list(dict.fromkeys(k for k in keys if k not in self.store))
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            backbone = getattr(self.model, "backbone", self.model)
            pixels = pixel_loader(missing)  # (m, 3, H, W)
            dev = next(backbone.parameters()).device
            dtype = next(backbone.parameters()).dtype
            with torch.no_grad():
                feats = backbone.vision_features(pixels.to(dev, dtype))  # (m, N, C)
            for k, f in zip(missing, feats, strict=True):
                self.store[k] = f.detach().to("cpu", self.dtype)
        return torch.stack([self.store[k] for k in keys])  # (M, N, C)

    # ---------------------------------------------------------------- by pixels, on disk

    def _tower_folder(self, tower: nn.Module) -> Path:
        assert self.folder is not None
        # tensor version counters change on every in-place write (optimizer steps, loading), so
        # the digest is recomputed only when a weight may have changed
        versions = tuple(t._version for t in tower.state_dict(keep_vars=True).values())
        known = self._digests.get(id(tower))
        if known is None or known[0] != versions:
            known = (versions, tower_digest(tower))
            self._digests[id(tower)] = known
        return self.folder / known[1][:16]

    def tower_features(self, tower: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """``tower(pixel_values)`` (M, N, C), each image read from the folder when it was computed
        before by the same tower weights, and written there otherwise."""
        if self.folder is None or pixel_values.shape[0] == 0 or not is_frozen(tower):
            return tower(pixel_values)  # (M, N, C)
        folder = self._tower_folder(tower)
        folder.mkdir(parents=True, exist_ok=True)
        keys = [pixel_digest(row) for row in pixel_values]
        out: list[torch.Tensor | None] = []
        for k in keys:
            f = folder / f"{k}.npy"
            out.append(torch.from_numpy(np.load(f)) if f.is_file() else None)
        miss = [i for i, t in enumerate(out) if t is None]
        self.disk_hits += len(keys) - len(miss)
        self.disk_misses += len(miss)
        if miss:
            with torch.no_grad():
                feats = tower(pixel_values[miss])  # (m, N, C)
            for i, f in zip(miss, feats, strict=True):
                t = f.detach().to("cpu", torch.float32).contiguous()  # (N, C)
                # atomic: readers never see half a file (no fsync: a cache, rebuilt if lost)
                with atomic_open(folder / f"{keys[i]}.npy", "wb", fsync=False) as fh:
                    np.save(fh, t.numpy())
                out[i] = t
        stacked = torch.stack([t for t in out if t is not None])  # (M, N, C)
        return stacked.to(pixel_values.device, pixel_values.dtype)
