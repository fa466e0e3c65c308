"""The composed backbone: a vision tower + a 2-layer GELU projector + any transformers text model
fed through ``inputs_embeds``, visual tokens placed inside the sequence where the image token
repeats. Also the causal/bidirectional switch for text models. Knows nothing of prompts or pooling."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmembed.model.feature_cache import VisionFeatureCache, default_feature_cache
from mmembed.model.locate import resolve_source
from mmembed.model.vision import VisionTower, build_vision_tower, tower_config


def set_causal(model: nn.Module, causal: bool) -> None:
    """Switch a transformers decoder LM between causal and bidirectional attention.

    transformers 5 builds a bidirectional mask when ``config.is_causal`` is False, and SDPA /
    flash kernels read each attention module's ``is_causal``: both are set. Encoder models
    (BERT style) are bidirectional by construction and refuse ``causal=True``."""
    attn = [m for m in model.modules() if hasattr(m, "is_causal") and isinstance(m, nn.Module)]
    native_causal = getattr(model, "_mmembed_native_causal", None)
    if native_causal is None:
        native_causal = any(bool(m.is_causal) for m in attn)
        model._mmembed_native_causal = native_causal
    if causal and not native_causal:
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise ValueError(
            f"{kind} is an encoder model with bidirectional attention only; causal=True is not supported"
        )
    if not native_causal:
        return
    for m in [model, *model.modules()]:
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            cfg.is_causal = causal
    for m in attn:
        m.is_causal = causal


def embed_with_images(
    embed: nn.Embedding,
    input_ids: torch.Tensor,
    image_token_id: int,
    visual: torch.Tensor | None,
) -> torch.Tensor:
    """Token embeddings with visual tokens written where ``input_ids == image_token_id``.

    Ids outside the embedding matrix (an added image or pad token, e.g. MM-Embed's 32000/32001 on
    a 32000-row matrix) are looked up as id 0; image positions are then overwritten and pad
    positions are masked by the caller. ``visual`` is (M, N, D), row-major over the batch."""
    image_mask = input_ids == image_token_id  # (B, L)
    return scatter_visual(token_embeddings(embed, input_ids, image_mask), image_mask, visual)


def token_embeddings(
    embed: nn.Embedding, input_ids: torch.Tensor, image_mask: torch.Tensor
) -> torch.Tensor:
    """(B, L) ids -> (B, L, D); image positions and ids outside the matrix look up id 0."""
    safe = input_ids.masked_fill(
        image_mask | (input_ids >= embed.num_embeddings) | (input_ids < 0), 0
    )
    return embed(safe)  # (B, L, D)


def scatter_visual(
    seq: torch.Tensor, image_mask: torch.Tensor, visual: torch.Tensor | None
) -> torch.Tensor:
    """``seq`` (B, L, D) with the rows of ``visual`` (M, N, D), row-major over the batch,
    written where ``image_mask`` (B, L) is set; the counts must match."""
    n_slots = int(image_mask.sum())
    if n_slots == 0:
        return seq
    if visual is None:
        raise ValueError(
            f"the batch has {n_slots} image-token positions but no pixel_values or vision_features"
        )
    flat = visual.reshape(-1, visual.shape[-1]).to(seq.dtype)  # (M*N, D)
    if flat.shape[0] != n_slots:
        raise ValueError(
            f"visual tokens ({tuple(visual.shape[:2])} -> {flat.shape[0]}) do not match the "
            f"{n_slots} image-token positions in input_ids"
        )
    return seq.masked_scatter(image_mask.unsqueeze(-1), flat)  # (B, L, D)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0-based positions of real tokens whatever the padding side: (B, L) -> (B, L)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class Projector(nn.Module):
    """LLaVA-style 2-layer MLP with GELU: (M, N, C) -> (M, N, D)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or out_dim
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


def build_text_model(cfg: dict[str, Any], *, pretrained: bool) -> nn.Module:
    """A bare transformers text model (no LM head): from ``source`` (a local folder) when
    ``pretrained``, else from ``hf_config`` (architecture only)."""
    from transformers import AutoConfig, AutoModel

    source = cfg.get("source")
    if pretrained and source:
        model = AutoModel.from_pretrained(str(resolve_source(source)))
    else:
        hf = dict(cfg.get("hf_config") or {})
        if not hf:
            raise ValueError(
                "text model config needs 'hf_config' (or 'source' when loading pretrained weights)"
            )
        model_type = hf.pop("model_type")
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **hf))
    model.config.use_cache = False
    return model


FUSIONS = ("early", "score")


class ComposedBackbone(nn.Module):
    """vision_tower -> multi_modal_projector -> language_model(inputs_embeds) -> (B, L, D).

    ``fusion="early"`` (the MLLM way): visual tokens go into the text model's sequence, so text
    and image attend to each other. ``fusion="score"`` (the CLIP score-fusion baseline over the
    same towers): the text model sees the text tokens only, and the image positions of the
    output hold the projected visual tokens, which never meet the text; the Embedder pools each
    modality apart and sums the normalised vectors (see ``fusion.py``)."""

    def __init__(
        self,
        language_model: nn.Module,
        vision_tower: VisionTower | None,
        *,
        projector_hidden: int | None = None,
        bidirectional: bool | None = None,
        image_token_id: int = -100,
        fusion: str = "early",
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; expected one of {FUSIONS}")
        self.fusion = fusion
        self.language_model = language_model
        self.hidden_size = int(language_model.config.hidden_size)
        self.vision_tower = vision_tower
        self.multi_modal_projector = (
            Projector(vision_tower.out_dim, self.hidden_size, projector_hidden)
            if vision_tower is not None
            else None
        )
        self.image_token_id = image_token_id
        if bidirectional is not None:
            set_causal(language_model, not bidirectional)

    @property
    def num_image_tokens(self) -> int:
        return self.vision_tower.num_tokens if self.vision_tower is not None else 0

    def preprocess_images(self, images: list) -> dict[str, torch.Tensor]:
        if self.vision_tower is None:
            raise ValueError("this model has no vision tower: it encodes text only")
        return {"pixel_values": self.vision_tower.preprocess(images)}  # (M, 3, S, S)

    # a VisionFeatureCache whose folder keeps frozen-tower features on disk (attach_feature_cache);
    # None: the process default (`mmembed --feature-cache DIR`), if any
    feature_cache: VisionFeatureCache | None = None

    def vision_features(self, pixel_values: torch.Tensor, **_: Any) -> torch.Tensor:
        """Vision tower output before the projector (cacheable when the tower is frozen)."""
        cache = self.feature_cache or default_feature_cache()
        if cache is not None:
            return cache.tower_features(self.vision_tower, pixel_values)  # (M, N, C)
        return self.vision_tower(pixel_values)  # (M, N, C)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        visual = None
        if vision_features is None and pixel_values is not None and pixel_values.shape[0] > 0:
            vision_features = self.vision_features(pixel_values.to(self._dtype()))  # (M, N, C)
        if vision_features is not None:
            visual = self.multi_modal_projector(vision_features.to(self._dtype()))  # (M, N, D)
        if self.fusion == "score":
            return self._forward_apart(input_ids, attention_mask, visual)
        embeds = embed_with_images(
            self.language_model.get_input_embeddings(), input_ids, self.image_token_id, visual
        )  # (B, L, D)
        out = self.language_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        )
        return out.last_hidden_state  # (B, L, D)

    def _forward_apart(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, visual: torch.Tensor | None
    ) -> torch.Tensor:
        """Score fusion: the text model over the text tokens alone (image positions masked out of
        attention and positions), then the projected visual tokens written at the image
        positions of its output."""
        image_mask = input_ids == self.image_token_id  # (B, L)
        text_attn = attention_mask * (~image_mask).to(attention_mask.dtype)  # (B, L)
        empty = text_attn.sum(-1) == 0  # an image-only item from a tokeniser with no specials
        if empty.any():  # give its row one position so attention is defined; it is not pooled
            text_attn = text_attn.clone()
            text_attn[empty, 0] = 1
        out = self.language_model(
            inputs_embeds=token_embeddings(
                self.language_model.get_input_embeddings(), input_ids, image_mask
            ),
            attention_mask=text_attn,
            position_ids=position_ids_from_mask(text_attn),
        )
        return scatter_visual(out.last_hidden_state, image_mask, visual)  # (B, L, D)

    def _dtype(self) -> torch.dtype:
        return self.language_model.get_input_embeddings().weight.dtype

    @classmethod
    def build(
        cls, cfg: dict[str, Any], *, pretrained: bool, image_token_id: int
    ) -> tuple[ComposedBackbone, dict[str, Any]]:
        """From a config dict; returns the module and the resolved config that rebuilds it
        without any pretrained source (architecture only)."""
        text_cfg = dict(cfg["text"])
        lm = build_text_model(text_cfg, pretrained=pretrained)
        vision_cfg = cfg.get("vision")
        tower = build_vision_tower(vision_cfg, pretrained=pretrained) if vision_cfg else None
        seed = cfg.get("projector_seed")
        with torch.random.fork_rng(devices=[]):  # a seeded projector must not move the caller's RNG
            if seed is not None:
                torch.manual_seed(int(seed))
            module = cls(
                lm,
                tower,
                projector_hidden=cfg.get("projector_hidden"),
                bidirectional=cfg.get("bidirectional"),
                image_token_id=image_token_id,
                fusion=cfg.get("fusion", "early"),
            )
        hf = lm.config.to_dict()
        resolved = {
            **cfg,
            "text": {"hf_config": _clean_hf_config(hf)},
            "vision": tower_config(tower, vision_cfg) if tower is not None else None,
        }
        return module, resolved


def _clean_hf_config(hf: dict[str, Any]) -> dict[str, Any]:
    drop = {"_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype"}
    return {k: v for k, v in hf.items() if k not in drop}
