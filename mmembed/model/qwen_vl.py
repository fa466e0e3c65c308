"""Qwen-VL backbone on transformers' Qwen2-VL / Qwen2.5-VL / Qwen3-VL model classes: dynamic
resolution (each image resized to multiples of patch x merge within min/max pixel bounds, one
visual token per merged patch group), M-RoPE or sequential positions, causal mask switchable.
Parameter names are transformers 5's (``visual.*``, ``language_model.*``); released folders in
the 4.x (``model.*``, ``visual.*``) and 5.x (``model.language_model.*``, ``model.visual.*``)
layouts load through one name table. Knows nothing of prompts or pooling."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmembed.model.composed import position_ids_from_mask, set_causal

# family -> (config class, model class) in transformers
FAMILIES: dict[str, tuple[str, str]] = {
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLModel"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLModel"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLModel"),
}
POSITIONS = ("mrope", "sequential")
QWEN2_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP statistics (Qwen2/2.5-VL)
QWEN2_STD = (0.26862954, 0.26130258, 0.27577711)


def smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """(height, width) rounded to multiples of ``factor`` with the pixel count kept within
    [min_pixels, max_pixels], aspect ratio as close as rounding allows (Qwen2-VL's rule)."""
    if max(height, width) / max(1, min(height, width)) > 200:
        raise ValueError(f"image aspect ratio {height}x{width} is beyond 200:1")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def model_class(family: str) -> tuple[type, type]:
    import transformers

    try:
        cfg_name, model_name = FAMILIES[family]
    except KeyError:
        raise ValueError(
            f"unknown Qwen-VL family {family!r}; expected one of {sorted(FAMILIES)}"
        ) from None
    if not hasattr(transformers, model_name):
        raise ImportError(
            f"{family} needs a transformers release with {model_name} "
            f"(installed: {transformers.__version__}); pip install -U transformers"
        )
    return getattr(transformers, cfg_name), getattr(transformers, model_name)


class QwenVLMixin:
    """What an Embedder needs from a Qwen-VL model: image preprocessing, visual-token counts and
    a forward to last hidden states. Mixed into the transformers model class of the family."""

    def setup(
        self,
        *,
        image_token_id: int,
        resize_stages: list[list[int]],
        image_mean: tuple[float, ...],
        image_std: tuple[float, ...],
        positions: str = "mrope",
        bidirectional: bool | None = None,
        fixed_size: tuple[int, int] | None = None,
    ) -> None:
        if positions not in POSITIONS:
            raise ValueError(f"unknown positions {positions!r}; expected one of {POSITIONS}")
        if not resize_stages:
            raise ValueError("resize_stages needs at least one [min_pixels, max_pixels] pair")
        self.image_token_id = image_token_id
        self.positions = positions
        self.resize_stages = [(int(lo), int(hi)) for lo, hi in resize_stages]
        # (width, height) every image is first squashed to, aspect ratio ignored (VLM2Vec's
        # "high" image resolution, 1344x1344); None: images keep their size
        self.fixed_size = (int(fixed_size[0]), int(fixed_size[1])) if fixed_size else None
        vc = self.config.vision_config
        self.patch_size = int(vc.patch_size)
        self.merge_size = int(vc.spatial_merge_size)
        self.temporal_patch_size = int(getattr(vc, "temporal_patch_size", 2))
        self.factor = self.patch_size * self.merge_size
        self.hidden_size = int(self.config.text_config.hidden_size)
        self.language_model.config.use_cache = False
        if bidirectional is not None:
            set_causal(self.language_model, not bidirectional)
        self._processor = None
        self._mean, self._std = tuple(image_mean), tuple(image_std)

    # ---- images -------------------------------------------------------------------------
    @property
    def num_image_tokens(self) -> int:
        """Visual tokens of an image at the last stage's minimum size (a sort key for batching;
        the real count depends on each image's size: ``image_token_counts``)."""
        return max(1, self.resize_stages[-1][0] // (self.factor * self.factor))

    def resized(self, image: Any) -> Any:
        """The image after each resize stage: smart_resize to multiples of patch x merge within
        the stage's pixel bounds, then a bicubic PIL resize (skipped when the size holds)."""
        from PIL import Image

        img = image.convert("RGB")
        if self.fixed_size is not None and img.size != self.fixed_size:
            img = img.resize(self.fixed_size, resample=Image.BICUBIC)
        for lo, hi in self.resize_stages:
            h, w = smart_resize(img.height, img.width, self.factor, lo, hi)
            if (w, h) != img.size:
                img = img.resize((w, h), resample=Image.BICUBIC)
        return img

    def image_token_counts(self, images: list) -> list[int]:
        counts = []
        for img in images:
            w0, h0 = self.fixed_size or (img.width, img.height)
            h, w = smart_resize_chain(h0, w0, self.factor, self.resize_stages)
            counts.append((h // self.factor) * (w // self.factor))
        return counts

    def preprocess_images(self, images: list) -> dict[str, torch.Tensor]:
        """Images -> flattened patches (sum of t*h*w patches, C*T*P*P) and their grids (M, 3)."""
        if self._processor is None:
            try:  # transformers >= 5.x: the PIL backend by name
                from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
                    Qwen2VLImageProcessorPil as processor_cls,
                )
            except ImportError:  # older releases: the slow (PIL/numpy) processor
                from transformers import Qwen2VLImageProcessor as processor_cls

            self._processor = processor_cls(
                do_resize=False,
                patch_size=self.patch_size,
                merge_size=self.merge_size,
                temporal_patch_size=self.temporal_patch_size,
                image_mean=list(self._mean),
                image_std=list(self._std),
            )
        out = self._processor(images=[self.resized(i) for i in images], return_tensors="pt")
        return {
            "pixel_values": out["pixel_values"],  # (sum P_i, C*T*P*P)
            "image_grid_thw": out["image_grid_thw"],  # (M, 3)
        }

    def vision_features(self, *_: Any, **__: Any) -> torch.Tensor:
        raise NotImplementedError(
            "cached vision features are not supported for Qwen-VL backbones (each image has its "
            "own token count); set model.cache_vision_features: false"
        )

    # ---- model --------------------------------------------------------------------------
    def position_ids(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
    ) -> torch.Tensor:
        """(3, B, L) rotary positions: M-RoPE (an image spans its grid; text continues after its
        largest side) or sequential (0.. over the real tokens in all three sections)."""
        image_mask = input_ids == self.image_token_id  # (B, L)
        if self.positions == "mrope" and image_grid_thw is not None and bool(image_mask.any()):
            pos, _ = self.get_rope_index(
                input_ids,
                mm_token_type_ids=image_mask.int(),
                image_grid_thw=image_grid_thw,
                attention_mask=attention_mask,
            )
            return pos  # (3, B, L)
        return position_ids_from_mask(attention_mask).unsqueeze(0).expand(3, -1, -1)  # (3, B, L)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        if pixel_values is not None and pixel_values.shape[0] == 0:
            pixel_values = image_grid_thw = None
        out = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=self.position_ids(input_ids, attention_mask, image_grid_thw),
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            mm_token_type_ids=(input_ids == self.image_token_id).int(),
            use_cache=False,
        )
        return out.last_hidden_state  # (B, L, D)


def smart_resize_chain(
    height: int, width: int, factor: int, stages: list[tuple[int, int]]
) -> tuple[int, int]:
    for lo, hi in stages:
        height, width = smart_resize(height, width, factor, lo, hi)
    return height, width


_CLASSES: dict[str, type] = {}


def backbone_class(family: str) -> type:
    """The family's transformers model class with the mixin (one class per family)."""
    if family not in _CLASSES:
        _, base = model_class(family)
        _CLASSES[family] = type(f"{base.__name__}Backbone", (QwenVLMixin, base), {})
    return _CLASSES[family]


def normalise_qwen_name(name: str) -> str | None:
    """A released weight name -> this backbone's name; None for the LM head (unused).

    4.x ``*ForConditionalGeneration``: ``model.X`` (the text model), ``visual.X``;
    5.x and Qwen3-VL-Embedding: ``model.language_model.X``, ``model.visual.X``; a bare model:
    ``language_model.X``, ``visual.X``."""
    if name.startswith("lm_head."):
        return None
    if name.startswith(("model.language_model.", "model.visual.")):
        return name[len("model.") :]
    if name.startswith("model."):
        return "language_model." + name[len("model.") :]
    return name


def read_preprocessor(folder: Path) -> dict[str, Any]:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def qwen_weight_map(folder: Path) -> dict[str, str]:
    """Released weight name -> the safetensors file holding it: the index json when there is one,
    else every ``*.safetensors`` file's header (no tensor data is read)."""
    from safetensors import safe_open

    from mmembed.model.shards import INDEX_NAME, read_index

    if (folder / INDEX_NAME).is_file():
        return read_index(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{folder}: no .safetensors files (pickled .bin checkpoints are not read)"
        )
    weight_map: dict[str, str] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            weight_map.update(dict.fromkeys(h.keys(), f.name))
    return weight_map


def load_qwen_weights(module: nn.Module, folder: Path) -> None:
    """Fill ``module`` from a local released folder (one safetensors file or shards), one file
    open at a time, each tensor cast into the module's own (already allocated) dtype: a bf16
    module never sees an fp32 copy of the model. Names and shapes are checked from the file
    headers first; every missing, unexpected or mis-shaped weight is listed in one error.
    Nothing is unpickled."""
    from mmembed.model.loading import WeightsMismatchError
    from mmembed.model.shards import iter_tensors, mismatch_report, read_shapes

    weight_map = {
        name: shard
        for name, shard in qwen_weight_map(folder).items()
        if normalise_qwen_name(name) is not None and not name.endswith("rotary_emb.inv_freq")
    }
    found = {normalise_qwen_name(k): v for k, v in read_shapes(folder, weight_map).items()}
    own = module.state_dict()
    report = mismatch_report(
        {k: tuple(v.shape) for k, v in own.items()},
        found,
        title=f"{folder}: the weights do not match the model",
        hint="check that the config matches the checkpoint",
    )
    if report:
        raise WeightsMismatchError(report)
    with torch.no_grad():
        for name, tensor in iter_tensors(folder, weight_map):
            own[normalise_qwen_name(name)].copy_(tensor)  # cast tensor by tensor


def resolve_folder(source: str) -> Path:
    """A local folder, or a hub id resolved from the local hub cache (or the hub when online)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                source,
                allow_patterns=[
                    "*.json",
                    "*.safetensors",
                    "*.txt",
                    "*.model",
                    "*.jinja",
                    "adapter_model.bin",  # VLM2Vec's adapters are released as .bin
                ],
            )
        )
    except Exception as e:  # noqa: BLE001 - offline, unknown id, no cache: one clear message
        raise FileNotFoundError(
            f"{source!r} is not a local folder and could not be fetched from the hub ({e}); "
            "download it elsewhere and pass the folder: PRESET:/path/to/folder"
        ) from None


def build_qwen_vl(
    cfg: dict[str, Any], *, pretrained: bool, image_token_id: int
) -> tuple[nn.Module, dict[str, Any]]:
    """``cfg``: {"type": "qwen_vl", "family": "qwen2_vl" | "qwen2_5_vl" | "qwen3_vl",
    "hf_config": {...} | "source": folder or hub id, "positions": "mrope" | "sequential",
    "bidirectional": bool | None, "resize_stages": [[min_pixels, max_pixels], ...],
    "image_mean", "image_std"}."""
    family = cfg.get("family", "qwen2_vl")
    config_cls, _ = model_class(family)
    cls = backbone_class(family)
    source = cfg.get("source")
    pre: dict[str, Any] = {}
    if pretrained and source:
        from transformers.initialization import no_init_weights

        folder = resolve_folder(str(source))
        with no_init_weights():  # every tensor is overwritten from the folder
            module = cls(config_cls.from_pretrained(str(folder)))
        load_qwen_weights(module, folder)
        pre = read_preprocessor(folder)
        if cfg.get("adapter"):  # a released LoRA/DoRA adapter over this base (VLM2Vec)
            from mmembed.model.adapter_merge import merge_adapter

            merge_adapter(module, resolve_folder(str(cfg["adapter"])), normalise_qwen_name)
    else:
        hf = dict(cfg.get("hf_config") or {})
        if not hf:
            raise ValueError(
                "qwen_vl backbone config needs 'hf_config' (or 'source' with pretrained weights)"
            )
        hf.pop("model_type", None)
        module = cls(config_cls(**hf))
    default_stage = [
        int(pre.get("min_pixels", 4 * 28 * 28)),
        int(pre.get("max_pixels", 16384 * 28 * 28)),
    ]
    mean = cfg.get("image_mean") or pre.get("image_mean") or QWEN2_MEAN
    std = cfg.get("image_std") or pre.get("image_std") or QWEN2_STD
    stages = cfg.get("resize_stages") or [default_stage]
    module.setup(
        image_token_id=image_token_id,
        resize_stages=stages,
        image_mean=tuple(mean),
        image_std=tuple(std),
        positions=cfg.get("positions", "mrope"),
        bidirectional=cfg.get("bidirectional"),
        fixed_size=cfg.get("fixed_size"),
    )
    if int(getattr(module.config, "image_token_id", image_token_id)) != image_token_id:
        raise ValueError(
            f"the tokenizer's image token id {image_token_id} is not the model's "
            f"image_token_id {module.config.image_token_id}; use the checkpoint's own tokenizer"
        )
    hf = module.config.to_dict()
    for k in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"):
        hf.pop(k, None)
    resolved = {k: v for k, v in cfg.items() if k not in ("source", "adapter")} | {
        "family": family,
        "hf_config": hf,
        "resize_stages": [list(s) for s in module.resize_stages],
        "image_mean": list(mean),
        "image_std": list(std),
    }
    return module, resolved
