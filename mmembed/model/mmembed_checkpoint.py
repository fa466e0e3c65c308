"""Loading a checkpoint in the published MM-Embed layout (LLaVA-Next config json naming the
NV-Embed retriever + sharded safetensors + index json; weight names in docs/models.md) into an
Embedder, shard by shard in the target dtype, without trust_remote_code and without unpickling.
The folder must be local; only the retriever's config.json may come from the hub cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmembed.model import mmembed_release as _release
from mmembed.model.embedder import Embedder, EmbedderConfig
from mmembed.model.loading import WeightsMismatchError, resolve_device_dtype
from mmembed.model.shards import (  # noqa: F401 - re-exported for scripts
    INDEX_NAME,
    default_dtype,
    iter_tensors,
    mismatch_report,
    read_index,
    read_shapes,
)

# Non-persistent buffers some exports carry; they are rebuilt by the model and safe to ignore.
IGNORABLE_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")


def to_embedder_name(name: str) -> str:
    """Published weight name -> Embedder state-dict name (mmembed_release.RELEASE_NAMES);
    unknown prefixes pass through prefixed with ``?`` so they are reported as unexpected."""
    return _release.to_embedder_name(name) or "?" + name


def to_checkpoint_name(name: str) -> str:
    """Embedder state-dict name -> published weight name."""
    out = _release.to_release_name(name)
    if out is None:
        raise KeyError(f"{name}: no published name (not a backbone or pooler weight)")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def mmembed_config(path: Path, *, retriever: str | Path | None = None) -> EmbedderConfig:
    """An EmbedderConfig for a release folder, every value from where the reference reads it
    (mmembed_release.release_config). ``retriever`` overrides config.json's ``retriever``."""
    raw = _read_json(path / "config.json")
    if not raw:
        raise FileNotFoundError(f"{path / 'config.json'}: missing; an MM-Embed folder has one")
    ref = str(retriever) if retriever is not None else raw.get("retriever")
    if not ref:
        raise ValueError(
            f"{path / 'config.json'}: no 'retriever' entry naming the NV-Embed model whose "
            "config builds the language model; pass retriever=... to load_mmembed"
        )
    retr, _where = _release.resolve_retriever(ref, path)
    fields = _release.release_config(path, raw, retr, _read_json(path / "preprocessor_config.json"))
    return EmbedderConfig(**fields)


def check_release_names(emb: Embedder, shapes: dict[str, tuple[int, ...]], *, source: str) -> None:
    """Every Embedder weight must be in ``shapes`` (published names) with the same shape, and
    every published name must map to an Embedder weight; all problems in one error."""
    own = {to_checkpoint_name(k): tuple(v.shape) for k, v in emb.state_dict().items()}
    report = mismatch_report(
        own,
        shapes,
        title=f"{source}: the checkpoint does not match the MM-Embed layout",
        hint="weight names must follow the MM-Embed layout (vision_tower.vision_model., "
        "multi_modal_projector., image_newline, language_model., latent_attention_model.)",
        ignorable=IGNORABLE_SUFFIXES,
    )
    if report:
        raise WeightsMismatchError(report)


def load_mmembed_tokenizer(path: Path) -> Any:
    """The folder's tokenizer.json taken as written (transformers 5's LlamaTokenizer rebuilds the
    pre-tokenizer and would split words differently from the reference's 4.43 fast tokenizer)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (path / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def load_mmembed(
    path: str | Path,
    *,
    tokenizer: Any = None,
    device: Any = None,
    dtype: Any = None,
    retriever: str | Path | None = None,
) -> Embedder:
    """An Embedder from a local MM-Embed-layout folder. The model is built in the target dtype
    and filled one shard at a time (an 8B folder in bf16 never holds an fp32 copy). Every
    missing, unexpected or mis-shaped weight is listed in one WeightsMismatchError. The tokenizer
    comes from the folder unless given; ``retriever`` overrides config.json's entry."""
    from transformers.initialization import no_init_weights

    path = Path(path)
    weight_map = read_index(path)
    cfg = mmembed_config(path, retriever=retriever)
    if tokenizer is None:
        tokenizer = load_mmembed_tokenizer(path)
    dev, dt = resolve_device_dtype(device, dtype)
    with no_init_weights(), default_dtype(dt):
        emb = Embedder.build(cfg, tokenizer=tokenizer, pretrained=False)
    image_index = cfg.backbone["hf_config"].get("image_token_index")
    if image_index is not None and int(image_index) != emb.image_token_id:
        raise ValueError(
            f"{path}: config.json's image_token_index {image_index} is not the tokenizer's "
            f"<image> id {emb.image_token_id}"
        )
    check_release_names(emb, read_shapes(path, weight_map), source=str(path))
    params = emb.state_dict()
    with torch.no_grad():
        for name, tensor in iter_tensors(path, weight_map):
            key = to_embedder_name(name)
            if key in params:
                params[key].copy_(tensor)  # cast to the target dtype tensor by tensor
    emb._fp = None
    return emb.to(device=dev).eval()
