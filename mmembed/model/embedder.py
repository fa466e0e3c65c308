"""The Embedder: tokeniser + backbone + pooler + L2 normalisation, with collate (prompts,
tokens, image preprocessing), encode_queries / encode_candidates, safetensors save/load and a
stable fingerprint. Knows nothing of losses, indexes, devices beyond one, or processes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmembed.data.images import ImageLoadError, load_image
from mmembed.data.records import Candidate, Item, Query
from mmembed.model.loading import (  # WeightsMismatchError: what from_pretrained raises
    WeightsMismatchError,  # noqa: F401
    load_state_checked,
    resolve_device_dtype,
    state_fingerprint,
    tokenizer_identity,
)
from mmembed.model.poolers import build_pooler
from mmembed.model.prompts import IMAGE_TOKEN, PromptConfig, format_prompt

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
FORMAT = "mmembed-embedder/1"


@dataclass
class EmbedderConfig:
    """Everything that defines an Embedder's architecture and input formatting."""

    name: str = "custom"
    backbone: dict[str, Any] = field(
        default_factory=dict
    )  # {"type": "composed" | "llava_next", ...}
    pooler: dict[str, Any] = field(default_factory=lambda: {"type": "mean"})
    prompt: dict[str, Any] = field(default_factory=dict)  # PromptConfig fields
    tokenizer: str | None = None  # source folder / "package:NAME" when building from parts
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbedderConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def build_backbone(
    cfg: dict[str, Any], *, pretrained: bool, image_token_id: int
) -> tuple[nn.Module, dict[str, Any]]:
    """Backbone registry: type name -> builder returning (module, resolved config)."""
    kind = cfg.get("type", "composed")
    if kind != "composed" and cfg.get("fusion", "early") != "early":
        raise ValueError(f"fusion {cfg['fusion']!r} is for the composed backbone, not {kind!r}")
    if kind == "composed":
        from mmembed.model.composed import ComposedBackbone

        return ComposedBackbone.build(cfg, pretrained=pretrained, image_token_id=image_token_id)
    if kind == "llava_next":
        from mmembed.model.llava_next import LlavaNextBackbone

        return LlavaNextBackbone.build(cfg, pretrained=pretrained, image_token_id=image_token_id)
    if kind == "qwen_vl":
        from mmembed.model.qwen_vl import build_qwen_vl

        return build_qwen_vl(cfg, pretrained=pretrained, image_token_id=image_token_id)
    raise ValueError(
        f"unknown backbone type {kind!r}; expected 'composed', 'llava_next' or 'qwen_vl'"
    )


def prepare_tokenizer(tokenizer: Any, image_token: str = IMAGE_TOKEN) -> int:
    """Make sure the tokeniser has the image token and a pad token; returns the image token id."""
    if image_token not in tokenizer.get_vocab():
        tokenizer.add_tokens([image_token], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return int(tokenizer.convert_tokens_to_ids(image_token))


class Embedder(nn.Module):
    """items -> (B, dim) L2-normalised embeddings. See COMMON contract / docs/models.md."""

    def __init__(
        self, config: EmbedderConfig, backbone: nn.Module, pooler: nn.Module, tokenizer: Any
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.pooler = pooler
        self.tokenizer = tokenizer
        self.prompt = PromptConfig(**config.prompt)
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(self.prompt.image_token))
        self._fp: tuple[Any, str] | None = None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def build(
        cls, config: EmbedderConfig, *, tokenizer: Any = None, pretrained: bool = True
    ) -> Embedder:
        """Build from a config: pretrained parts from their sources when ``pretrained``."""
        if tokenizer is None:
            from transformers import AutoTokenizer

            from mmembed.model.locate import resolve_source

            if not config.tokenizer:
                raise ValueError(
                    "EmbedderConfig.tokenizer is empty: pass a tokenizer or a tokenizer source"
                )
            tokenizer = AutoTokenizer.from_pretrained(resolve_source(config.tokenizer))
        image_token_id = prepare_tokenizer(tokenizer, PromptConfig(**config.prompt).image_token)
        backbone, resolved = build_backbone(
            config.backbone, pretrained=pretrained, image_token_id=image_token_id
        )
        pooler = build_pooler(backbone.hidden_size, config.pooler)
        if getattr(backbone, "fusion", "early") == "score":
            from mmembed.model.fusion import TOKENWISE_POOLERS

            kind = dict(config.pooler).get("type", "mean")
            if kind not in TOKENWISE_POOLERS:
                raise ValueError(
                    f"score fusion pools text and image positions apart, which needs a pooler "
                    f"that works token by token ({', '.join(TOKENWISE_POOLERS)}), not {kind!r}"
                )
        cfg = EmbedderConfig(**{**config.to_dict(), "backbone": resolved, "tokenizer": None})
        return cls(cfg, backbone, pooler, tokenizer).eval()

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: Any = None, dtype: Any = None
    ) -> Embedder:
        """Load a folder written by ``save_pretrained`` (safetensors only; nothing is unpickled)."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        path = Path(path)
        cfg_path = path / CONFIG_NAME
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"{path}: no {CONFIG_NAME}; is this a folder written by Embedder.save_pretrained?"
            )
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
        if raw.get("format") != FORMAT:
            raise ValueError(f"{cfg_path}: format {raw.get('format')!r} is not {FORMAT!r}")
        from transformers.initialization import no_init_weights

        tokenizer = AutoTokenizer.from_pretrained(str(path / TOKENIZER_DIR))
        with no_init_weights():  # every tensor is overwritten from the file below
            emb = cls.build(EmbedderConfig.from_dict(raw), tokenizer=tokenizer, pretrained=False)
        load_state_checked(
            emb, load_file(str(path / WEIGHTS_NAME)), source=str(path / WEIGHTS_NAME)
        )
        return emb.to_auto(device, dtype)

    def save_pretrained(self, path: str | Path) -> None:
        """config.json + model.safetensors + tokenizer/ (written to a temp folder, then renamed)."""
        import os
        import shutil

        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp-save")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(
            state,
            str(tmp / WEIGHTS_NAME),
            metadata={"format": "pt", "fingerprint": self.fingerprint},
        )
        (tmp / CONFIG_NAME).write_text(
            json.dumps(self.config.to_dict(), indent=2, sort_keys=True), encoding="utf-8"
        )
        self.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        if path.exists():
            old = path.with_name(path.name + ".old-save")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)

    def to_auto(self, device: Any = None, dtype: Any = None) -> Embedder:
        """Move to ``device``/``dtype``; None picks cuda when available (bf16 when supported)
        else cpu (fp32)."""
        device, dtype = resolve_device_dtype(device, dtype)
        return self.to(device=device, dtype=dtype)

    # ---- properties ---------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.pooler.out_dim)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def fingerprint(self) -> str:
        """sha256 of the config, the tokeniser (not its per-call truncation/padding state) and
        every tensor (floats hashed as fp32, so an fp16 copy of fp32-exact weights hashes the
        same). Cached until a tensor changes."""
        state = self.state_dict()
        key = tuple((k, v.data_ptr(), v._version, v.dtype) for k, v in state.items())
        if self._fp is not None and self._fp[0] == key:
            return self._fp[1]
        cfg = {k: v for k, v in self.config.to_dict().items() if k not in ("name", "tokenizer")}
        tok = tokenizer_identity(self.tokenizer)
        digest = state_fingerprint(state, json.dumps(cfg, sort_keys=True, default=str) + tok)
        self._fp = (key, digest)
        return digest

    @property
    def fusion(self) -> str:
        """How text and image meet: early (visual tokens inside the text model) or score
        (the towers apart, their normalised vectors summed)."""
        return str(getattr(self.backbone, "fusion", "early"))

    @property
    def num_image_tokens(self) -> int:
        return int(self.backbone.num_image_tokens)

    # ---- batching -----------------------------------------------------------------------
    def collate(
        self,
        items: Sequence[Item],
        *,
        instructions: Sequence[str | None] | None = None,
        is_query: bool = True,
        executor: Executor | None = None,
        labels: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Prompts -> token ids with each image token expanded to the backbone's visual-token
        count; masks; preprocessed images. CPU tensors:
        input_ids, attention_mask, pool_mask (attention minus instruction tokns) (B, L) and
        pixel_values (M, 3, H, W) for the M items with images, in batch order."""
        n = len(items)
        if instructions is None:
            instructions = [None] * n
        if len(instructions) != n:
            raise ValueError(f"{len(instructions)} instructions for {n} items")
        prompts, instr_chars, skips = [], [], []
        for it, ins in zip(items, instructions, strict=True):
            p, k = format_prompt(
                it.text, it.image is not None, instruction=ins, is_query=is_query, cfg=self.prompt
            )
            prompts.append(p)
            instr_chars.append(k)
            skips.append(self._reference_skip(p))
        enc = self.tokenizer(
            prompts,
            add_special_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            truncation=False,
        )
        with_image = [i for i, it in enumerate(items) if it.image is not None]
        images = []
        if with_image:
            images = self._load_images(
                [items[i].image for i in with_image],
                [labels[i] if labels else None for i in with_image],
                executor,
            )
        counts = [0] * n
        per_image = getattr(self.backbone, "image_token_counts", None)
        for i, c in zip(
            with_image,
            per_image(images) if per_image else [self.num_image_tokens] * len(images),
            strict=True,
        ):
            counts[i] = c
        rows, instr_lens = [], []
        for i in range(n):
            ids, k = self._finish_ids(
                enc["input_ids"][i],
                enc["offset_mapping"][i],
                enc["special_tokens_mask"][i],
                instr_chars[i],
                counts[i],
                skips[i],
            )
            rows.append(ids)
            instr_lens.append(k)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((n, width), pad, dtype=torch.long)  # (B, L)
        attention = torch.zeros((n, width), dtype=torch.long)  # (B, L)
        pool = torch.zeros((n, width), dtype=torch.long)  # (B, L)
        left = self.prompt.padding_side == "left"
        for i, ids in enumerate(rows):
            start = width - len(ids) if left else 0
            input_ids[i, start : start + len(ids)] = torch.tensor(ids)
            attention[i, start : start + len(ids)] = 1
            pool[i, start + instr_lens[i] : start + len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention, "pool_mask": pool}
        if self.fusion == "score":  # which items have a text part to fuse (fusion.py)
            batch["has_text"] = torch.tensor(
                [
                    bool((it.text or "").strip()) or bool(is_query and ins)
                    for it, ins in zip(items, instructions, strict=True)
                ]
            )  # (B,)
        if images:
            batch.update(self.backbone.preprocess_images(images))
        return batch

    def _reference_skip(self, prompt: str) -> int | None:
        """Leading positions left out of pooling by MM-Embed's rule (prompt.instruction_mask
        "reference"), else None (the instruction's tokens are found by character offsets)."""
        if self.prompt.instruction_mask != "reference":
            return None
        if not self.prompt.exclude_instruction:
            return 0
        from mmembed.model.mmembed_release import reference_pool_skip

        return reference_pool_skip(self.tokenizer, prompt, append_eos=self.prompt.append_eos)

    def _finish_ids(
        self,
        ids: list[int],
        offsets: list,
        special: list[int],
        instr_chars: int,
        n_visual: int,
        skip: int | None = None,
    ) -> tuple[list[int], int]:
        """Truncate to max_length (text tokens), append EOS, expand the image token; returns the
        ids and the number of leading instruction tokens (leading specials included)."""
        n_instr = 0
        if instr_chars > 0:
            for j, ((s, _e), sp) in enumerate(zip(offsets, special, strict=True)):
                if not sp and s < instr_chars:
                    n_instr = j + 1
        tok = self.tokenizer
        eos = tok.eos_token_id if self.prompt.append_eos else None
        limit = self.prompt.max_length - (
            1 if eos is not None and (not ids or ids[-1] != eos) else 0
        )
        if len(ids) > limit:
            tail = [ids[-1]] if special[-1] else []
            ids = ids[: limit - len(tail)] + tail
        if eos is not None and ids[-1] != eos:
            ids = [*ids, eos]
        if self.image_token_id in ids:
            j = ids.index(self.image_token_id)
            m = n_visual
            ids = (
                ids[:j]
                + [self.image_token_id] * m
                + [t for t in ids[j + 1 :] if t != self.image_token_id]
            )
            if n_instr > j:
                n_instr += m - 1
        return ids, min(n_instr if skip is None else skip, len(ids))

    def _load_images(self, sources: list, labels: list, executor: Executor | None) -> list:
        def one(args: tuple) -> Any:
            src, label = args
            try:
                return load_image(src)
            except ImageLoadError as e:
                where = f" (record {label})" if label else ""
                raise ImageLoadError(e.path, e.problem + where) from None

        pairs = list(zip(sources, labels, strict=True))
        return list(executor.map(one, pairs)) if executor is not None else [one(p) for p in pairs]

    # ---- model --------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch from ``collate`` (may carry ``vision_features`` instead of ``pixel_values``)
        -> (B, dim) float32, L2-normalised, differentiable."""
        hidden = self.backbone(
            **{k: v for k, v in batch.items() if k not in ("pool_mask", "has_text")}
        )  # (B, L, D)
        attn = batch["attention_mask"].to(hidden.device)
        pool = batch.get("pool_mask", attn).to(hidden.device)
        if self.fusion == "score":
            from mmembed.model.fusion import score_fusion_pool

            image = batch["input_ids"].to(hidden.device) == self.image_token_id  # (B, L)
            has_text = batch["has_text"]  # (B,), set by collate for score fusion
            return score_fusion_pool(self.pooler, hidden, attn, pool, image, has_text)
        pooled = self.pooler(hidden, attn, pool)  # (B, dim)
        return F.normalize(pooled.float(), dim=-1)

    def encode_queries(
        self,
        queries: Sequence[Query | Item],
        *,
        instructions: str | Sequence[str | None] | None = None,
        image_root: str | Path | None = None,
        batch_size: int = 32,
        show_progress: bool = True,
        convert_to_tensor: bool = False,
        num_workers: int = 2,
    ) -> np.ndarray | torch.Tensor:
        """Queries (or Items) -> (N, dim) float32, L2-normalised; MM-Embed query prompts."""
        from mmembed.model.batch_encode import encode_records

        return encode_records(
            self,
            queries,
            is_query=True,
            instructions=instructions,
            image_root=image_root,
            batch_size=batch_size,
            show_progress=show_progress,
            convert_to_tensor=convert_to_tensor,
            num_workers=num_workers,
        )

    def encode_candidates(
        self,
        candidates: Sequence[Candidate | Item],
        *,
        image_root: str | Path | None = None,
        batch_size: int = 32,
        show_progress: bool = True,
        convert_to_tensor: bool = False,
        num_workers: int = 2,
    ) -> np.ndarray | torch.Tensor:
        """Candidates (or Items) -> (N, dim) float32, L2-normalised; candidate prompts."""
        from mmembed.model.batch_encode import encode_records

        return encode_records(
            self,
            candidates,
            is_query=False,
            instructions=None,
            image_root=image_root,
            batch_size=batch_size,
            show_progress=show_progress,
            convert_to_tensor=convert_to_tensor,
            num_workers=num_workers,
        )

    def gradient_checkpointing_enable(self) -> None:
        lm = getattr(self.backbone, "language_model", None)
        if lm is not None and hasattr(lm, "gradient_checkpointing_enable"):
            lm.gradient_checkpointing_enable()
