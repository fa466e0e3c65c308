"""LLaVA-Next backbone on transformers' classes: CLIP vision tower -> projector -> Mistral/Llama
LM with visual tokens in the sequence; the global 336px view only (MM-Embed, 576 tokens) or
anyres tiling; causal mask switchable. Parameter names are transformers' (and MM-Embed's):
``vision_tower.vision_model.*``, ``multi_modal_projector.linear_{1,2}``, ``image_newline``,
``language_model.*``. Knows nothing of prompts or pooling."""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlavaNextConfig, LlavaNextModel

from mmembed.model.composed import embed_with_images, position_ids_from_mask, set_causal
from mmembed.model.vision import CLIP_MEAN, CLIP_STD, to_pixels


class LlavaNextBackbone(LlavaNextModel):
    """A LlavaNextModel that returns last hidden states for an Embedder."""

    def setup(
        self,
        *,
        image_token_id: int,
        global_only: bool = True,
        bidirectional: bool | None = None,
        global_newline: bool = True,
        image_mean: Any = None,
        image_std: Any = None,
        token_remap: Any = None,
    ) -> None:
        """``global_newline``: append ``image_newline`` after the global view's grid, as
        transformers' LLaVA-Next feature packing does for a single view (MM-Embed: 577 tokens).
        ``token_remap``: [[from, to], ...] ids replaced before the embedding lookup (MM-Embed maps
        its pad id 32001 to EOS 2). ``image_mean``/``image_std``: from preprocessor_config.json."""
        self.image_token_id = image_token_id
        self.global_only = global_only
        self.global_newline = global_newline
        self.image_mean = tuple(image_mean) if image_mean is not None else CLIP_MEAN
        self.image_std = tuple(image_std) if image_std is not None else CLIP_STD
        self.token_remap = [(int(a), int(b)) for a, b in (token_remap or [])]
        self.hidden_size = int(self.config.text_config.hidden_size)
        vc = self.config.vision_config
        self._side = vc.image_size
        self._grid = vc.image_size // vc.patch_size
        self.language_model.config.use_cache = False
        if bidirectional is not None:
            set_causal(self.language_model, not bidirectional)
        self._processor = None

    # ---- images -------------------------------------------------------------------------
    @property
    def num_image_tokens(self) -> int:
        """Visual tokens per image in the global view: the grid, plus the newline when appended
        (anyres: per image, see image_token_counts)."""
        return self._grid * self._grid + (1 if self.global_newline else 0)

    def image_token_counts(self, images: list) -> list[int]:
        """Visual tokens per image: fixed for the global view, size-dependent for anyres."""
        if self.global_only:
            return [self.num_image_tokens] * len(images)
        from transformers.models.llava_next.modeling_llava_next import (
            get_anyres_image_grid_shape,
            unpad_image,
        )

        counts = []
        for img in images:
            w, h = img.size
            gh, gw = get_anyres_image_grid_shape(
                (h, w), self.config.image_grid_pinpoints, self._side
            )
            grid = torch.empty(1, gh * self._grid, gw * self._grid)  # shape only
            uh, uw = unpad_image(grid, torch.tensor([h, w])).shape[1:]
            counts.append(self._grid**2 + uh * (uw + 1))  # base view + rows with a newline each
        return counts

    def preprocess_images(self, images: list) -> dict[str, torch.Tensor]:
        if self.global_only:
            # The global view: the whole image resized to the tower's square input (no crop).
            return {
                "pixel_values": to_pixels(images, self._side, self.image_mean, self.image_std)
            }  # (M, 3, S, S)
        if self._processor is None:
            from transformers import LlavaNextImageProcessor

            self._processor = LlavaNextImageProcessor(
                size={"shortest_edge": self._side},
                crop_size={"height": self._side, "width": self._side},
                image_grid_pinpoints=self.config.image_grid_pinpoints,
                image_mean=self.image_mean,
                image_std=self.image_std,
            )
        out = self._processor(images=images, return_tensors="pt")
        return {
            "pixel_values": out["pixel_values"],
            "image_sizes": out["image_sizes"],
        }  # (M, P, 3, S, S), (M, 2)

    def vision_features(self, pixel_values: torch.Tensor, **_: Any) -> torch.Tensor:
        """Global view: vision tower hidden states of the feature layer, CLS dropped (M, 576, C)."""
        out = self.vision_tower(pixel_values, output_hidden_states=True)
        feats = out.hidden_states[self.config.vision_feature_layer]  # (M, 1+N, C)
        return feats[:, 1:] if self.config.vision_feature_select_strategy == "default" else feats

    def _visual(
        self,
        pixel_values: torch.Tensor | None,
        vision_features: torch.Tensor | None,
        image_sizes: Any,
    ) -> torch.Tensor | None:
        dtype = self.language_model.get_input_embeddings().weight.dtype
        if vision_features is not None:  # cached global-view features (M, N, C)
            feats = self.multi_modal_projector(vision_features.to(dtype))  # (M, N, D)
        elif pixel_values is None or pixel_values.shape[0] == 0:
            return None
        elif self.global_only:
            feats = self.multi_modal_projector(self.vision_features(pixel_values.to(dtype)))
        else:
            return self._anyres(pixel_values.to(dtype), image_sizes)  # (1, sum N_i, D)
        if self.global_newline:  # LLaVA-Next packing of a single view: the grid, then a newline
            nl = self.image_newline.to(feats.dtype).expand(feats.shape[0], 1, -1)  # (M, 1, D)
            feats = torch.cat([feats, nl], dim=1)  # (M, N+1, D)
        return feats

    def _anyres(self, pixel_values: torch.Tensor, image_sizes: Any) -> torch.Tensor:
        out = self.get_image_features(
            pixel_values,
            image_sizes,
            vision_feature_layer=self.config.vision_feature_layer,
            vision_feature_select_strategy=self.config.vision_feature_select_strategy,
        )
        return torch.cat(list(out.pooler_output), dim=0).unsqueeze(0)  # (1, sum N_i, D)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        visual = self._visual(pixel_values, vision_features, image_sizes)
        for src, dst in self.token_remap:
            input_ids = input_ids.masked_fill(input_ids == src, dst)
        embeds = embed_with_images(
            self.language_model.get_input_embeddings(), input_ids, self.image_token_id, visual
        )
        out = self.language_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        )
        return out.last_hidden_state  # (B, L, D)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def build(
        cls, cfg: dict[str, Any], *, pretrained: bool, image_token_id: int
    ) -> tuple[LlavaNextBackbone, dict[str, Any]]:
        """``cfg``: {"type": "llava_next", "hf_config": {...LlavaNextConfig...} | "source": folder,
        "global_only": bool, "bidirectional": bool | None, "global_newline": bool,
        "image_mean"/"image_std": [3 floats], "token_remap": [[from, to], ...]}."""
        source = cfg.get("source")
        if pretrained and source:
            module = cls(LlavaNextConfig.from_pretrained(source))
            load_llava_weights(module, source)
        else:
            hf = dict(cfg.get("hf_config") or {})
            if not hf:
                raise ValueError(
                    "llava_next backbone config needs 'hf_config' (or 'source' with pretrained weights)"
                )
            hf.pop("model_type", None)
            module = cls(LlavaNextConfig(**hf))
        module.setup(
            image_token_id=image_token_id,
            global_only=cfg.get("global_only", True),
            bidirectional=cfg.get("bidirectional"),
            global_newline=cfg.get("global_newline", True),
            image_mean=cfg.get("image_mean"),
            image_std=cfg.get("image_std"),
            token_remap=cfg.get("token_remap"),
        )
        hf = module.config.to_dict()
        for k in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"):
            hf.pop(k, None)
        resolved = {k: v for k, v in cfg.items() if k != "source"} | {"hf_config": hf}
        return module, resolved


# llava-hf LLaVA-Next checkpoints -> this backbone's names, first matching prefix wins; None drops
# the name (the LM head: an embedder has none). Layouts: transformers 4.4x (LlavaNextForConditional-
# Generation: ``language_model.model.*``, ``language_model.lm_head``, ``vision_tower.vision_model.*``),
# 4.5x (``model.language_model.*``, ``model.vision_tower.vision_model.*``, ``lm_head``) and 5.x
# (``vision_tower.*`` with the CLIP wrapper flattened; saved again as ``language_model.model.*``).
LLAVA_HF_NAMES: tuple[tuple[str, str | None], ...] = (
    ("lm_head.", None),
    ("language_model.lm_head.", None),
    ("model.language_model.", "language_model."),
    ("model.vision_tower.vision_model.", "vision_tower."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.image_newline", "image_newline"),
    ("language_model.model.", "language_model."),
    ("vision_tower.vision_model.", "vision_tower."),
)
# This backbone's names -> the transformers 4.4x layout (what llava-hf and MM-Embed published).
LLAVA_HF_SAVE_NAMES: tuple[tuple[str, str], ...] = (
    ("language_model.", "language_model.model."),
    ("vision_tower.", "vision_tower.vision_model."),
)


def rename(name: str, table: tuple[tuple[str, str | None], ...]) -> str | None:
    """``name`` with its first matching prefix in ``table`` replaced (None: dropped); unchanged
    when no prefix matches."""
    for old, new in table:
        if name.startswith(old):
            return None if new is None else new + name[len(old) :]
    return name


def normalise_llava_name(name: str) -> str | None:
    """A llava-hf weight name (4.4x, 4.5x or 5.x layout) -> this backbone's name; None for the LM
    head, which an embedder does not use."""
    return rename(name, LLAVA_HF_NAMES)


def to_llava_hf_name(name: str) -> str:
    """This backbone's name -> the transformers 4.4x llava-hf layout (inverse of the table)."""
    out = rename(name, LLAVA_HF_SAVE_NAMES)
    assert out is not None
    return out


def load_llava_weights(module: LlavaNextBackbone, source: str) -> None:
    """Load a local llava-hf folder (one safetensors file or shards + index) into ``module``,
    one file at a time, cast to the module's dtype as each tensor is copied; every missing,
    unexpected or mis-shaped weight is listed in one error. No pickles are read."""
    from pathlib import Path

    from safetensors import safe_open

    from mmembed.model.loading import WeightsMismatchError, mismatch_report

    root = Path(source)
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{root}: no .safetensors files (pickled .bin checkpoints are not read)"
        )
    own = module.state_dict()
    where: dict[str, tuple[Path, str]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for name in h.keys():  # noqa: SIM118 (safe_open is not iterable)
                new = normalise_llava_name(name)
                if new is not None:
                    where[new] = (f, name)
                    shapes[new] = tuple(h.get_slice(name).get_shape())
    report = mismatch_report(
        {k: tuple(v.shape) for k, v in own.items()},
        shapes,
        title=f"{root}: the weights do not match the LLaVA-Next model",
        hint="names are read through llava_next.LLAVA_HF_NAMES (4.4x, 4.5x, 5.x layouts)",
        ignorable=IGNORABLE_SUFFIXES,
        ours="model",
    )
    if report:
        raise WeightsMismatchError(report)
    with torch.no_grad():
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                for new, (src, name) in where.items():
                    if src == f and new in own:
                        own[new].copy_(h.get_tensor(name))


# Non-persistent buffers some exports carry; rebuilt by the model and safe to ignore.
IGNORABLE_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")
