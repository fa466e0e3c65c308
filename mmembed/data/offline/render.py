"""Draws emoji to fixed-size RGB PNGs on white: Noto Color Emoji through Pillow (a CBDT bitmap font,
drawable only at its 109 px strike) and gemojione's 64 px PNGs. Bytes depend only on the inputs
and Pillow's build (no timestamps or metadata). Knows nothing of tasks or splits."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mmembed.data.images import to_rgb

RENDER_SIZE = 96  # every image of the benchmark is RENDER_SIZE x RENDER_SIZE
NOTO_STRIKE = 109  # the only size the CBDT font renders at
_CANVAS = 160  # drawing canvas; a Noto glyph is at most 136 x 128 at the 109 px strike
_BOX = 136  # glyphs are centred on a square of this side before the resize


class RenderError(ValueError):
    """An emoji the font cannot draw as one glyph (blank, or drawn as several glyphs)."""


@cache
def _font(font_path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path, NOTO_STRIKE)


def render_noto(seq: str, font_path: str | Path, size: int = RENDER_SIZE) -> Image.Image:
    """One emoji drawn by the Noto font, centred, on white, ``size`` x ``size`` RGB."""
    font = _font(str(font_path))
    if font.getlength(seq) > _BOX + 1:
        raise RenderError(f"{seq!r} is drawn as several glyphs (the font lacks this sequence)")
    canvas = Image.new("RGBA", (_CANVAS, _CANVAS), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((0, 0), seq, font=font, embedded_color=True)
    bbox = canvas.getbbox()
    if bbox is None:
        raise RenderError(f"{seq!r} is blank in this font")
    glyph = canvas.crop(bbox)  # (w, h) <= (136, 128)
    if max(glyph.size) > _BOX:
        glyph.thumbnail((_BOX, _BOX), Image.Resampling.LANCZOS)
    square = Image.new("RGBA", (_BOX, _BOX), (255, 255, 255, 0))
    square.paste(glyph, ((_BOX - glyph.width) // 2, (_BOX - glyph.height) // 2))
    return to_rgb(square.resize((size, size), Image.Resampling.LANCZOS))


def render_png(path: str | Path, size: int = RENDER_SIZE) -> Image.Image:
    """A packaged PNG (gemojione) resized to ``size`` x ``size`` RGB on white."""
    with Image.open(path) as im:
        im.load()
        rgba = im.convert("RGBA")
    return to_rgb(rgba.resize((size, size), Image.Resampling.LANCZOS))


def save_png(img: Image.Image, path: Path) -> str:
    """Save without metadata; returns the sha256 of the pixels (for duplicate detection)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", compress_level=6)
    return hashlib.sha256(img.tobytes()).hexdigest()


# A job: (style, source, output path). style "noto": source is the emoji string;
# style "png": source is a PNG path.
Job = tuple[str, str, str]


def _run_job(job: Job, font_path: str, size: int) -> tuple[str, str | None, str | None]:
    style, source, out = job
    try:
        img = render_noto(source, font_path, size) if style == "noto" else render_png(source, size)
    except (RenderError, OSError) as e:
        return out, None, str(e)
    return out, save_png(img, Path(out)), None


def _run_chunk(
    jobs: list[Job], font_path: str, size: int
) -> list[tuple[str, str | None, str | None]]:
    return [_run_job(j, font_path, size) for j in jobs]


def render_all(
    jobs: Iterable[Job],
    font_path: str | Path,
    *,
    size: int = RENDER_SIZE,
    workers: int = 1,
    progress=None,
) -> dict[str, tuple[str | None, str | None]]:
    """Run render jobs (in ``workers`` processes when > 1). Returns out path -> (pixel sha256 or
    None, error or None). Output bytes do not depend on ``workers``."""
    jobs = sorted(jobs)
    results: dict[str, tuple[str | None, str | None]] = {}
    chunk = 64
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        for c in chunks:
            for out, digest, err in _run_chunk(c, str(font_path), size):
                results[out] = (digest, err)
            if progress:
                progress(len(c))
        return results
    workers = min(workers, os.cpu_count() or 1, len(chunks))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_run_chunk, c, str(font_path), size) for c in chunks]
        for fut, c in zip(futures, chunks, strict=True):
            for out, digest, err in fut.result():
                results[out] = (digest, err)
            if progress:
                progress(len(c))
    return results
