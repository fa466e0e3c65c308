"""Loading a reranker model from a path: a LLaVA-Next checkpoint folder (model + processor), any
causal LM folder (model + tokenizer), or a GGUF file, on the device and dtype the embedders would
pick (model/loading.py). Knows nothing of prompts beyond passing them on, nor of runs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mmembed.rerank.prompts import PromptSet
from mmembed.rerank.scorer import Reranker

log = logging.getLogger(__name__)

# model_type in config.json -> (transformers model class name, processor class name)
MULTIMODAL: dict[str, tuple[str, str]] = {
    "llava_next": ("LlavaNextForConditionalGeneration", "AutoProcessor"),
}


def _gguf_in(folder: Path) -> Path | None:
    files = sorted(folder.glob("*.gguf"))
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise ValueError(f"{folder}: several GGUF files ({names}); pass the one to use as --model")
    return files[0] if files else None


_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$")


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` (dots allowed, as in ``llava-hf/llava-v1.6-mistral-7b-hf``) or a bare
    ``name`` without a dot (``gpt2``); not a path starting with ``.``, ``/`` or ``~``, not a
    ``.gguf`` file. Only asked of names that are not an existing path."""
    if not _HUB_ID.match(name) or name.endswith(".gguf"):
        return False
    return "/" in name or "." not in name


def load_reranker(
    path: str | Path,
    *,
    device: str | None = None,
    dtype: str | None = None,
    prompts: PromptSet | None = None,
    chat: str | None = None,
) -> Reranker:
    """A Reranker from a local checkpoint folder, a ``.gguf`` file, or (with network) a hub name."""
    import transformers

    from mmembed.model.loading import resolve_device_dtype

    # the embedders' choice: cuda when present, bf16 there when supported (else fp16), fp32 on cpu
    device, torch_dtype = resolve_device_dtype(device, dtype.lower() if dtype else None)
    p = Path(path)
    gguf = p if p.is_file() and p.suffix == ".gguf" else None
    if gguf is None and p.is_dir() and not (p / "config.json").exists():
        gguf = _gguf_in(p)
        if gguf is None:
            raise FileNotFoundError(
                f"{p}: no config.json and no .gguf file; point --model at a checkpoint folder"
            )
    if gguf is None and not p.exists() and not looks_like_hub_id(str(path)):
        raise FileNotFoundError(f"{path}: no such model file or folder")

    if gguf is not None:
        log.info("loading GGUF causal LM %s (dequantised to %s)", gguf, torch_dtype)
        kw = {"gguf_file": gguf.name}
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), dtype=torch_dtype, **kw
        )
        return Reranker(model.to(device), tokenizer=tok, prompts=prompts, chat=chat, name=gguf.name)

    try:
        config = transformers.AutoConfig.from_pretrained(str(path))
    except OSError as e:
        if p.exists():
            raise FileNotFoundError(
                f"{path}: a local folder without a usable config.json ({e.__class__.__name__}); "
                "point --model at a checkpoint folder or a .gguf file"
            ) from e
        raise FileNotFoundError(
            f"{path}: not a local file or folder, and it could not be fetched as a hub model "
            f"(offline, or no such model: {e.__class__.__name__}); with network, download it "
            f"(hf download {path} --local-dir DIR) and pass DIR"
        ) from e
    entry = MULTIMODAL.get(getattr(config, "model_type", ""))
    if entry is not None:
        model_cls, proc_cls = (getattr(transformers, n) for n in entry)
        log.info("loading %s + %s from %s", entry[0], entry[1], path)
        processor = proc_cls.from_pretrained(str(path))
        model = model_cls.from_pretrained(str(path), dtype=torch_dtype)
        return Reranker(
            model.to(device), processor=processor, prompts=prompts, chat=chat, name=str(path)
        )
    log.info("loading causal LM %s", path)
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
    return Reranker(model.to(device), tokenizer=tok, prompts=prompts, chat=chat, name=str(path))
