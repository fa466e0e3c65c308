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
        self, *, image_token_id: int, global_only: bool = True, bidirectional: bool | None = None
    ) -> None:
        self.image_token_id = image_token_id
        self.global_only = global_only
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
        """Visual tokens per image in the global view (anyres: per image, see image_token_counts)."""
        return self._grid * self._grid

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
            counts.append(
                self.num_image_tokens + uh * (uw + 1)
            )  # base view + rows with a newline each
        return counts

    def preprocess_images(self, images: list) -> dict[str, torch.Tensor]:
        if self.global_only:
            # The global view: the whole image resized to the tower's square input (no crop).
            return {
                "pixel_values": to_pixels(images, self._side, CLIP_MEAN, CLIP_STD)
            }  # (M, 3, S, S)
        if self._processor is None:
            from transformers import LlavaNextImageProcessor

            self._processor = LlavaNextImageProcessor(
                size={"shortest_edge": self._side},
                crop_size={"height": self._side, "width": self._side},
                image_grid_pinpoints=self.config.image_grid_pinpoints,
                image_mean=CLIP_MEAN,
                image_std=CLIP_STD,
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
        if vision_features is not None:
            return self.multi_modal_projector(vision_features.to(dtype))  # (M, N, D)
        if pixel_values is None or pixel_values.shape[0] == 0:
            return None
        if self.global_only:
            return self.multi_modal_projector(
                self.vision_features(pixel_values.to(dtype))
            )  # (M, N, D)
        out = self.get_image_features(
            pixel_values.to(dtype),
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
        "global_only": bool, "bidirectional": bool | None}."""
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
        )
        hf = module.config.to_dict()
        for k in ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"):
            hf.pop(k, None)
        resolved = {k: v for k, v in cfg.items() if k != "source"} | {"hf_config": hf}
        return module, resolved


def normalise_llava_name(name: str) -> str | None:
    """A llava-hf weight name (legacy ``language_model.model.*`` or v5 ``model.*``) -> this
    backbone's name; None for the LM head, which an embedder does not use."""
    if name.startswith("model."):
        name = name[len("model.") :]
    if name.startswith(("lm_head.", "language_model.lm_head.")):
        return None
    if name.startswith("language_model.model."):
        name = "language_model." + name[len("language_model.model.") :]
    return name


def load_llava_weights(module: LlavaNextBackbone, source: str) -> None:
    """Load a local llava-hf folder (one safetensors file or shards + index) into ``module``,
    listing every missing or unexpected weight at once. No pickles are read."""
    from pathlib import Path

    from safetensors.torch import load_file

    from mmembed.model.embedder import load_state_checked

    root = Path(source)
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{root}: no .safetensors files (pickled .bin checkpoints are not read)"
        )
    state = {}
    for f in files:
        for name, tensor in load_file(str(f)).items():
            new = normalise_llava_name(name)
            if new is not None:
                state[new] = tensor
    own = module.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    load_state_checked(module, state, source=str(root))
