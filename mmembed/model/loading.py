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
    report = mismatch_report(
        {k: tuple(v.shape) for k, v in own.items()},
        {k: tuple(v.shape) for k, v in state.items()},
        title=f"{source}: the weights do not match the model",
        hint="check that the config matches the checkpoint",
        ours="model",
    )
    if report:
        raise WeightsMismatchError(report)
    module.load_state_dict(state, strict=True)


def mismatch_report(
    own: dict[str, tuple[int, ...]],
    found: dict[str, tuple[int, ...]],
    *,
    title: str,
    hint: str,
    ignorable: tuple[str, ...] = (),
    ours: str = "config",
) -> str | None:
    """None when ``found`` (checkpoint name -> shape) has exactly ``own``'s names and shapes;
    else one message listing every missing, unexpected and mis-shaped tensor. Names ending in
    ``ignorable`` are never unexpected; ``ours`` names the side of ``own`` in the message."""
    missing = sorted(set(own) - set(found))
    unexpected = sorted(n for n in set(found) - set(own) if not n.endswith(ignorable))
    wrong = sorted(
        f"{n}: checkpoint {tuple(found[n])} vs {ours} {tuple(own[n])}"
        for n in set(own) & set(found)
        if tuple(found[n]) != tuple(own[n])
    )
    if not (missing or unexpected or wrong):
        return None
    parts = [title]
    if missing:
        parts.append(f"missing ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        parts.append(f"unexpected ({len(unexpected)}): " + ", ".join(unexpected))
    if wrong:
        parts.append(f"wrong shape ({len(wrong)}): " + "; ".join(wrong))
    parts.append(hint)
    return "\n  ".join(parts)
