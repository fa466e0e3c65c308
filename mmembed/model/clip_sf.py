"""The CLIP score-fusion baseline (UniIR CLIP_SF) over open_clip: text and image embedded by
the two towers; a composed item is their sum, L2-normalised (UniIR's rule; summing normalised
tower outputs is an option). Texts are cleaned as UniIR cleans them. Any open_clip architecture
(built-in name or a model_cfg dict). Same encode API as the Embedder. Knows nothing of prompts
beyond prefixing the instruction to the query text."""

from __future__ import annotations

import json
import logging
import warnings
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
from mmembed.model.loading import (
    WeightsMismatchError,
    load_state_checked,
    resolve_device_dtype,
    state_fingerprint,
)

log = logging.getLogger(__name__)

FORMAT = "mmembed-clip-sf/1"

# How a composed item's two tower outputs combine (the result is always L2-normalised):
# "sum" is UniIR's encode_multimodal_input (raw outputs added, normalised at retrieval);
# "normalized_sum" normalises each tower first (mmembed before issue 13).
FUSIONS = ("sum", "normalized_sum")
# "uniir": UniIR's text clean-up (uniir_text); "plain": the text as given.
TEXT_FORMATS = ("uniir", "plain")


def uniir_text(text: str | None) -> str:
    """Text as UniIR's datasets feed it to CLIP: carriage returns removed, outer whitespace and
    then outer double quotes stripped, first character upper-cased, and a final period added
    unless it already ends in '.', '?' or '!'. Empty stays empty (and then counts as no text)."""
    s = (text or "").replace("\r", "").strip().strip('"')
    if not s:
        return s
    s = s[0].upper() + s[1:]
    return s if s[-1] in ".?!" else s + "."


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
    """open_clip towers with score fusion; ``dim`` = the model's embed_dim. ``fusion`` and
    ``text_format``: see FUSIONS and TEXT_FORMATS (UniIR's by default); ``preprocess``: extra
    open_clip.image_transform fields (mean, std, interpolation, resize_mode) of a pretrained tag."""

    def __init__(
        self,
        model_cfg: dict[str, Any],
        *,
        name: str = "clip-sf",
        fusion: str = "sum",
        text_format: str = "uniir",
        preprocess: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
        if text_format not in TEXT_FORMATS:
            raise ValueError(
                f"text_format {text_format!r}: choose one of {', '.join(TEXT_FORMATS)}"
            )
        oc = _open_clip()
        self.model_cfg = model_cfg
        self.name = name
        self.fusion = fusion
        self.text_format = text_format
        self.preprocess_cfg = dict(preprocess or {})
        self.model = oc.CLIP(**model_cfg)
        vision = model_cfg.get("vision_cfg", {})
        self.image_size = int(vision.get("image_size", 224))
        pre = {k: tuple(v) if isinstance(v, list) else v for k, v in self.preprocess_cfg.items()}
        self.preprocess = oc.image_transform(self.image_size, is_train=False, **pre)
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
        return {
            "format": FORMAT,
            "name": self.name,
            "model_cfg": self.model_cfg,
            "fusion": self.fusion,
            "text_format": self.text_format,
            "preprocess": self.preprocess_cfg,
        }

    def text_of(self, text: str | None, instruction: str | None, is_query: bool) -> str:
        """The string the text tower sees ('' = no text): UniIR joins a query's instruction and
        text with a space and cleans both (uniir_text); "plain" only strips the join."""
        ins = instruction if is_query else None
        if self.text_format == "plain":
            return f"{ins.strip()} {text or ''}".strip() if ins else (text or "")
        if ins:
            return uniir_text(f"{uniir_text(ins)} {text or ''}")
        return uniir_text(text)

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
        texts = [
            self.text_of(it.text, ins, is_query)
            for it, ins in zip(items, instructions, strict=True)
        ]
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
        tower = (lambda x: F.normalize(x, dim=-1)) if self.fusion == "normalized_sum" else None
        out = torch.zeros(B, self.dim, device=has_text.device)  # (B, dim)
        if has_text.any():
            t = self.model.encode_text(batch["text_tokens"][has_text]).float()  # (Bt, dim)
            out[has_text] += tower(t) if tower else t
        if has_image.any():
            v = self.model.encode_image(batch["pixel_values"]).float()  # (M, dim)
            out[has_image] += tower(v) if tower else v
        return F.normalize(out, dim=-1)  # score fusion: the sum, L2-normalised

    def encode_queries(
        self,
        queries: Sequence[Query | Item],
        *,
        instructions: str | Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> np.ndarray | torch.Tensor:
        from mmembed.model.batch_encode import encode_records

        return encode_records(self, queries, is_query=True, instructions=instructions, **kwargs)

    def encode_candidates(
        self, candidates: Sequence[Candidate | Item], **kwargs: Any
    ) -> np.ndarray | torch.Tensor:
        from mmembed.model.batch_encode import encode_records

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

        path = Path(path)
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        model = cls(
            raw["model_cfg"],
            name=raw.get("name", path.name),
            # folders saved before these fields existed were built with these rules
            fusion=raw.get("fusion", "normalized_sum"),
            text_format=raw.get("text_format", "plain"),
            preprocess=raw.get("preprocess"),
        )
        load_state_checked(model, load_file(str(path / "model.safetensors")), source=str(path))
        return model.to_auto(device, dtype)

    def to_auto(self, device: Any = None, dtype: Any = None) -> ClipScoreFusion:
        dev, dt = resolve_device_dtype(device, dtype)
        return self.to(device=dev, dtype=dt).eval()


def save_uniir_checkpoint(model: ClipScoreFusion, path: str | Path) -> None:
    """Write the weights in UniIR's checkpoint layout (``{"model": {clip_model.*: fp32}}``), which
    UniIR's CLIPScoreFusion loads for the same OpenAI CLIP architecture."""
    from mmembed.model.clip_sf_checkpoint import to_uniir_state

    state = {
        k: v.detach().cpu().float().contiguous().clone() for k, v in model.state_dict().items()
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": to_uniir_state(state)}, str(path))


def _read_weights_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from mmembed.model.clip_sf_checkpoint import read_torch_checkpoint

    return read_torch_checkpoint(path)


def _from_file(
    arch: str | dict[str, Any], path: Path, **kwargs: Any
) -> tuple[ClipScoreFusion, dict[str, torch.Tensor]]:
    """The model and its state (our names) for a local weights file: a UniIR CLIP_SF checkpoint
    or a plain open_clip / OpenAI-layout state dict. ``arch="auto"`` reads the architecture from
    the tensors' shapes."""
    from mmembed.model import clip_sf_checkpoint as ck

    obj = _read_weights_file(path)
    uniir = ck.is_uniir_checkpoint(obj)
    if uniir:
        state = ck.from_uniir_state(obj["model"])
    else:
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        if not isinstance(state, dict):
            raise ValueError(f"{path}: not a state dict nor a UniIR checkpoint")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {(k if k.startswith("model.") else "model." + k): v for k, v in state.items()}
    if arch == "auto" or uniir:
        bare = {k.removeprefix("model."): v for k, v in state.items()}
        cfg = ck.openai_clip_config(bare, source=str(path))
        if arch != "auto":
            diffs = ck.config_differences(cfg, model_config(arch))
            if diffs:
                raise ValueError(
                    f"{path}: this UniIR checkpoint is not the architecture {_label(arch)}: "
                    f"{'; '.join(diffs)}; use clip-sf:auto:{path} to read it from the checkpoint"
                )
    else:
        cfg = model_config(arch)
    name = f"clip-sf:{'uniir' if uniir else _label(arch)}:{path.name}"
    return ClipScoreFusion(cfg, name=name, **kwargs), state


def _label(arch: str | dict[str, Any]) -> str:
    return arch if isinstance(arch, str) else "custom"


def load_clip_sf(
    arch: str | dict[str, Any],
    *,
    weights: str | Path | None = None,
    device: Any = None,
    dtype: Any = None,
    fusion: str = "sum",
    text_format: str = "uniir",
    cache_dir: str | None = None,
) -> ClipScoreFusion:
    """CLIP score fusion for an open_clip architecture (a name, a model_cfg dict, or "auto" with
    a weights file). ``weights``:

    - None: open_clip's pretrained tag for ``arch`` (OpenAI's where there is one, as UniIR
      used), from the local cache or downloaded; offline and uncached, one line says what to do;
    - an open_clip pretrained tag (``"laion2b_s34b_b79k"``);
    - a local file: a UniIR CLIP_SF checkpoint as UniIR saves it (``clip_sf_large.pth``), or a
      plain open_clip / OpenAI-layout state dict (.pt/.pth/.bin, read with weights_only) or
      .safetensors;
    - ``"random"``: untrained weights, with a loud warning (embeddings are meaningless)."""
    from mmembed.model import clip_sf_checkpoint as ck

    oc = _open_clip()
    label = _label(arch)
    spec = None if weights is None else str(weights)
    kw: dict[str, Any] = {"fusion": fusion, "text_format": text_format}
    if spec == ck.RANDOM:
        if arch == "auto":
            raise ValueError("clip-sf:auto needs a weights file to read the architecture from")
        model = ClipScoreFusion(model_config(arch), name=f"clip-sf:{label}:random", **kw)
        msg = (
            f"clip-sf:{label}: RANDOM, untrained weights -- its embeddings are meaningless; "
            "pass a weights file or an open_clip pretrained tag for real use"
        )
        log.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
        return model.to_auto(device, dtype)
    if spec is not None and Path(spec).expanduser().is_file():
        path = Path(spec).expanduser()
        model, state = _from_file(arch, path, **kw)
        try:
            load_state_checked(model, state, source=str(path))
        except WeightsMismatchError as e:
            if model.name.startswith("clip-sf:uniir:"):
                raise WeightsMismatchError(
                    f"{e}\n  (UniIR names were mapped clip_model.* -> model.* first)"
                ) from None
            raise
        return model.to_auto(device, dtype)
    looks_like_path = spec is not None and (
        "/" in spec or "\\" in spec or Path(spec).suffix in (".pt", ".pth", ".bin", ".safetensors")
    )
    if looks_like_path:
        raise FileNotFoundError(f"{spec}: weights file not found")
    if not isinstance(arch, str) or arch == "auto":
        raise ValueError(
            f"clip-sf:{label}: pass a weights file (a custom or 'auto' architecture has no "
            "open_clip pretrained tag), or 'random' for untrained weights"
        )
    tag = spec or ck.default_pretrained_tag(oc, arch)
    if tag is None:
        raise ValueError(
            f"clip-sf:{arch}: open_clip has no pretrained weights for this architecture; pass a "
            f"weights file as clip-sf:{arch}:/path/to/weights.pt, or clip-sf:{arch}:random for "
            "untrained weights"
        )
    path, tag_cfg = ck.fetch_pretrained(oc, arch, tag, cache_dir)
    cfg = model_config(arch)
    if tag_cfg.get("quick_gelu"):
        cfg["quick_gelu"] = True  # the tag was trained with QuickGELU (OpenAI's weights)
    model = ClipScoreFusion(
        cfg, name=f"clip-sf:{arch}:{tag}", preprocess=ck.preprocess_config(tag_cfg), **kw
    )
    state = _read_weights_file(path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {"model." + k.removeprefix("module."): v for k, v in state.items()}
    load_state_checked(model, state, source=f"{path} (open_clip {arch}:{tag})")
    return model.to_auto(device, dtype)
