"""Advice for `mmembed index` and `mmembed serve`: when the offline default model (trained on
rendered emoji) meets photos, one notice saying what it was trained on and which model to pass
instead. Looks at image headers only (size, format, EXIF; nothing is decoded). Knows nothing of
terminals or HTTP: callers print the text it returns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# Specs of models built from the offline mini towers (the trained default and its presets).
OFFLINE_MODELS = ("mmembed-mini", "mmembed-mini-base", "mmembed-mini-latent", "mmembed-mini-sf")
# Emoji renders are at most ~160 px (Noto 136x128, gemojione 64 px) and carry no EXIF; a camera
# or phone photo is a JPEG/HEIC with EXIF and well over this size.
PHOTO_MIN_SIDE = 512
PHOTO_FORMATS = ("JPEG", "MPO", "HEIF", "HEIC")
SAMPLE = 48  # image headers read at most (spread over the list)

_shown: set[tuple[str, str]] = set()  # (where, model): each notice once per process


def is_offline_default(model_spec: str | None) -> bool:
    """True for the offline mini models, by preset name or by the shipped weights folder."""
    if not model_spec:
        from mmembed.model import default_model_name

        model_spec = default_model_name()
    from mmembed.model.registry import WEIGHTS_DIR

    name = Path(str(model_spec)).name if "/" in str(model_spec) else str(model_spec)
    if name not in OFFLINE_MODELS:
        return False
    return "/" not in str(model_spec) or Path(model_spec).resolve().parent == WEIGHTS_DIR.resolve()


def photo_reason(path: str | Path) -> str | None:
    """Why an image looks like a photo rather than an emoji-sized graphic ("EXIF", "JPEG",
    "1024 px"), or None. Reads the header only; unreadable files are None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if len(im.getexif()):
                return "EXIF"
            if im.format in PHOTO_FORMATS:
                return im.format
            side = max(im.size)
            return f"{side} px" if side >= PHOTO_MIN_SIDE else None
    except Exception:  # unreadable or unsupported: not this module's business
        return None


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def photo_notice(model_spec: str | None, images: Iterable[str | Path]) -> str | None:
    """The notice for ``images`` encoded by ``model_spec`` (None = the project default), or None
    when the model is not the offline default or no sampled image looks like a photo."""
    if not is_offline_default(model_spec):
        return None
    sample = _spread(sorted(str(p) for p in images), SAMPLE)
    reasons = [r for r in map(photo_reason, sample) if r]
    if not reasons:
        return None
    kinds = ", ".join(sorted({"larger than emoji" if r.endswith(" px") else r for r in reasons}))
    name = Path(str(model_spec)).name if model_spec else "the default model"
    return (
        f"note: {len(reasons)} of {len(sample)} images checked look like photos ({kinds}), but "
        f"{name} is the small offline default: it was trained only on ~3,900 rendered emoji and "
        "their names, so it does not find things in photos reliably (a cat photo for 'a cat'). "
        "For photos pass a real image-text model with --model: on a laptop CPU "
        "`--model clip-sf:ViT-B-32` (OpenAI CLIP) or UniIR's CLIP_SF "
        "(`--model clip-sf:auto:/path/to/clip_sf_large.pth`), on a GPU "
        "`--model gme-qwen2-vl-2b` (or an MM-Embed folder). They need a one-time download; "
        "docs/zoo.md lists each model's size, speed and scores."
    )


def library_notice(library: Any, *, where: str, model_spec: str | None = None) -> str | None:
    """``photo_notice`` for a search Library's images, at most once per process per
    (``where``, model). ``model_spec`` defaults to the model the library was built with."""
    spec = model_spec or getattr(library, "model_spec", None)
    key = (where, str(spec))
    if key in _shown:
        return None
    images = [e.image for e in library.entries.values() if getattr(e, "image", None)]
    text = photo_notice(spec, images)
    if text:
        _shown.add(key)
    return text
