"""Sharded safetensors folders read without building anything: the index json, every tensor's
shape from the headers, tensors one shard at a time, one report of every name or shape mismatch,
and building modules in a target dtype. Knows nothing of any model family."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch

from mmembed.model.loading import WeightsMismatchError, mismatch_report  # noqa: F401

INDEX_NAME = "model.safetensors.index.json"


def read_index(path: Path) -> dict[str, str]:
    index = path / INDEX_NAME
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{index}: missing; a sharded checkpoint folder has its safetensors with an index json"
        ) from None
    except (ValueError, KeyError) as e:
        raise ValueError(
            f"{index}: not a safetensors index ({e}); expected a 'weight_map' object"
        ) from None
    shards = sorted(set(weight_map.values()))
    absent = [s for s in shards if not (path / s).is_file()]
    if absent:
        raise FileNotFoundError(
            f"{path}: shards named in {INDEX_NAME} are missing: {', '.join(absent)}"
        )
    return weight_map


def iter_tensors(path: Path, weight_map: dict[str, str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every weight, one shard open at a time."""
    from safetensors import safe_open

    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    for shard in sorted(by_shard):
        with safe_open(str(path / shard), framework="pt") as f:
            present = set(f.keys())
            for name in by_shard[shard]:
                if name not in present:
                    raise WeightsMismatchError(
                        f"{path / shard}: {name} is listed in {INDEX_NAME} but not in the shard"
                    )
                yield name, f.get_tensor(name)


def read_shapes(path: Path, weight_map: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the shard headers (no tensor data is read)."""
    from safetensors import safe_open

    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    shapes: dict[str, tuple[int, ...]] = {}
    for shard, names in sorted(by_shard.items()):
        with safe_open(str(path / shard), framework="pt") as f:
            present = set(f.keys())
            for name in names:
                if name in present:
                    shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
