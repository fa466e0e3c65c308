"""The CLIP score-fusion baseline (UniIR CLIP_SF) over open_clip: text and image embedded by
the two towers, each L2-normalised; a composed item is the normalised sum. Any open_clip
architecture (built-in name or a model_cfg dict); weights from a local file. Same encode API as
the Embedder. Knows nothing of prompts beyond prefixing the instruction to the query text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmembed.data.images import ImageLoadError, load_image
from mmembed.data.records import Candidate, Item, Query
from mmembed.model.embedder import resolve_device_dtype, state_fingerprint

FORMAT = "mmembed-clip-sf/1"


def _open_clip() -> Any:
    try:
        import open_clip
    except ImportError as e:
        raise ImportError(
            "the CLIP score-fusion baseline needs open_clip: pip install open_clip_torch"
        ) from e
    return open_clip


def model_config(arch: str | dict[str, Any]) -> dict[str, Any]:
    """An open_clip model_cfg: a built-in architecture name or the dict itself."""
    if isinstance(arch, dict):
        return dict(arch)
    cfg = _open_clip().get_model_config(arch)
    if cfg is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    return dict(cfg)


class ClipScoreFusion(nn.Module):
    """open_clip towers with score fusion; ``dim`` = the model's embed_dim."""

    def __init__(self, model_cfg: dict[str, Any], *, name: str = "clip-sf") -> None:
        super().__init__()
        oc = _open_clip()
        self.model_cfg = model_cfg
        self.name = name
        self.model = oc.CLIP(**model_cfg)
        vision = model_cfg.get("vision_cfg", {})
        self.image_size = int(vision.get("image_size", 224))
        self.preprocess = oc.image_transform(self.image_size, is_train=False)
        ctx = int(model_cfg.get("text_cfg", {}).get("context_length", 77))
        self.tokenizer = oc.SimpleTokenizer(context_length=ctx)
        self.num_image_tokens = 1
        self._fp: tuple[Any, str] | None = None

    @property
    def dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def config(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "model_cfg": self.model_cfg}

    @property
    def fingerprint(self) -> str:
        state = self.state_dict()
        key = tuple((k, v.data_ptr(), v._version, v.dtype) for k, v in state.items())
        if self._fp is None or self._fp[0] != key:
            cfg = {k: v for k, v in self.config.items() if k != "name"}
            self._fp = (key, state_fingerprint(state, json.dumps(cfg, sort_keys=True)))
        return self._fp[1]

    def collate(
        self,
        items: Sequence[Item],
        *,
        instructions: Sequence[str | None] | None = None,
        is_query: bool = True,
        executor: Executor | None = None,
        labels: Sequence[str | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """text_tokens (B, T), has_text (B,), has_image (B,), pixel_values (M, 3, S, S)."""
        n = len(items)
        instructions = list(instructions) if instructions is not None else [None] * n
        texts = []
        for it, ins in zip(items, instructions, strict=True):
            text = it.text or ""
            texts.append(f"{ins.strip()} {text}".strip() if (ins and is_query) else text)
        has_text = torch.tensor([bool(t) for t in texts])
        has_image = torch.tensor([it.image is not None for it in items])
        batch = {"text_tokens": self.tokenizer(texts), "has_text": has_text, "has_image": has_image}
        idx = [i for i, it in enumerate(items) if it.image is not None]

        def one(i: int) -> torch.Tensor:
            try:
                return self.preprocess(load_image(items[i].image))
            except ImageLoadError as e:
                label = labels[i] if labels else None
                raise ImageLoadError(
                    e.path, e.problem + (f" (record {label})" if label else "")
                ) from None

        if idx:
            pixels = list(executor.map(one, idx)) if executor is not None else [one(i) for i in idx]
            batch["pixel_values"] = torch.stack(pixels)  # (M, 3, S, S)
        return batch

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        has_text, has_image = batch["has_text"].bool(), batch["has_image"].bool()
        B = has_text.shape[0]
        out = torch.zeros(B, self.dim, device=has_text.device)  # (B, dim)
        if has_text.any():
            t = self.model.encode_text(batch["text_tokens"][has_text])  # (Bt, dim)
            out[has_text] += F.normalize(t.float(), dim=-1)
        if has_image.any():
            v = self.model.encode_image(batch["pixel_values"])  # (M, dim)
            out[has_image] += F.normalize(v.float(), dim=-1)
        return F.normalize(out, dim=-1)  # score fusion: normalised sum

    def encode_queries(
        self,
        queries: Sequence[Query | Item],
        *,
        instructions: str | Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> np.ndarray | torch.Tensor:
        from mmembed.model.encode import encode_records

        return encode_records(self, queries, is_query=True, instructions=instructions, **kwargs)

    def encode_candidates(
        self, candidates: Sequence[Candidate | Item], **kwargs: Any
    ) -> np.ndarray | torch.Tensor:
        from mmembed.model.encode import encode_records

        return encode_records(self, candidates, is_query=False, instructions=None, **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
        (path / "config.json").write_text(
            json.dumps(self.config, indent=2, sort_keys=True), encoding="utf-8"
        )

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: Any = None, dtype: Any = None
    ) -> ClipScoreFusion:
        from safetensors.torch import load_file

        from mmembed.model.embedder import load_state_checked

        path = Path(path)
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        model = cls(raw["model_cfg"], name=raw.get("name", path.name))
        load_state_checked(model, load_file(str(path / "model.safetensors")), source=str(path))
        return model.to_auto(device, dtype)

    def to_auto(self, device: Any = None, dtype: Any = None) -> ClipScoreFusion:
        dev, dt = resolve_device_dtype(device, dtype)
        return self.to(device=dev, dtype=dt).eval()


def load_clip_sf(
    arch: str | dict[str, Any],
    *,
    weights: str | Path | None = None,
    device: Any = None,
    dtype: Any = None,
) -> ClipScoreFusion:
    """CLIP score fusion for an open_clip architecture; ``weights``: a local .safetensors or
    open_clip checkpoint (.pt/.bin, read with weights_only=True). None leaves random weights
    (for tests); there is no hub download."""
    name = arch if isinstance(arch, str) else "custom"
    model = ClipScoreFusion(model_config(arch), name=f"clip-sf:{name}")
    if weights is not None:
        weights = Path(weights)
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {(k if k.startswith("model.") else "model." + k): v for k, v in state.items()}
        from mmembed.model.embedder import load_state_checked

        load_state_checked(model, state, source=str(weights))
    return model.to_auto(device, dtype)
