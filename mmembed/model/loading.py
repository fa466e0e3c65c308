"""Loading helpers every model kind shares: the device/dtype choice, a load_state_dict that
reports every mismatched weight at once, and fingerprints of weights and tokenisers. Knows nothing
of architectures, prompts or pooling."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

# Tokeniser fields that transformers rewrites on every call (truncation and padding are set per
# batch), so they describe the last call, not the tokeniser: never part of a fingerprint.
_TOKENIZER_RUNTIME_STATE = ("truncation", "padding")


def tokenizer_identity(tokenizer: Any) -> str:
    """The tokeniser's vocabulary, normalisation and pre/post-processing as a stable string;
    the runtime truncation/padding state left out, so encoding text does not change it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return repr(sorted(tokenizer.get_vocab().items()))
    spec = json.loads(backend.to_str())
    for key in _TOKENIZER_RUNTIME_STATE:
        spec.pop(key, None)
    return json.dumps(spec, sort_keys=True)


def state_fingerprint(state: dict[str, torch.Tensor], header: str) -> str:
    """sha256 over ``header`` and every tensor (name, shape, bytes; floats as fp32)."""
    h = hashlib.sha256(header.encode())
    for name in sorted(state):
        t = state[name].detach()
        if t.is_floating_point():
            t = t.float()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def resolve_device_dtype(device: Any = None, dtype: Any = None) -> tuple[torch.device, torch.dtype]:
    """cuda when available else cpu; bf16 on cuda when supported (else fp16), fp32 on cpu."""
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if dtype is None:
        if dev.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
    elif isinstance(dtype, str):
        names = {
            "fp32": torch.float32,
            "float32": torch.float32,
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp16": torch.float16,
            "float16": torch.float16,
        }
        try:
            dtype = names[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(names)}") from None
    return dev, dtype


class WeightsMismatchError(ValueError):
    """Missing or unexpected weights when loading a checkpoint, all listed in one message."""


def load_state_checked(module: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """load_state_dict that reports every missing / unexpected / mis-shaped tensor at once."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or shapes:
        parts = [f"{source}: the weights do not match the model"]
        if missing:
            parts.append(f"missing ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            parts.append(f"unexpected ({len(unexpected)}): " + ", ".join(unexpected))
        if shapes:
            parts.append(f"wrong shape ({len(shapes)}): " + "; ".join(shapes))
        parts.append("check that the config matches the checkpoint")
        raise WeightsMismatchError("\n  ".join(parts))
    module.load_state_dict(state, strict=True)
