"""Image loading in one place: EXIF orientation, palette/alpha/CMYK/16-bit to RGB, a size cap
and a decompression-bomb guard. Knows nothing of models or preprocessing for a network."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
MAX_PIXELS = 89_478_485  # Pillow's own bomb threshold; larger images are refused, not decoded
MAX_SIDE = 4096  # decoded images are downscaled so the longer side is at most this

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImageLoadError(ValueError):
    """An image that cannot be used: names the file and what is wrong."""

    def __init__(self, path: str | Path, problem: str, hint: str = "") -> None:
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        super().__init__(f"{path}: {problem}" + (f" ({hint})" if hint else ""))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparent pixels are composited on white; 16-bit and float
    greyscale are rescaled from their used range to 8 bits instead of being clipped at 255."""
    if img.mode == "RGB":
        return img
    if img.mode in _HIGH_DEPTH_MODES:
        if img.mode != "F":
            img = img.convert("I")  # (H, W) int32; the I;16 variants do not support point()
        lo, hi = img.getextrema()
        scale = 255.0 / max(1e-12, float(hi) - float(lo))
        img = img.point(lambda v: (v - lo) * scale).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "L" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def _open(source: Any, name: str, max_pixels: int, max_side: int | None) -> Image.Image:
    """Open and fully decode ``source`` (a path or a binary file object), refusing bombs."""
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; Pillow still raises DecompressionBombError
            # past twice its threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageLoadError(
                    name,
                    f"{w}x{h} pixels exceeds the limit of {max_pixels}",
                    "possible decompression bomb; raise max_pixels if the image is genuine",
                )
            if max_side is not None and img.format == "JPEG":
                # Let libjpeg decode at a reduced scale (never below max_side): far less work
                # and memory for huge photos, same result after the downscale below.
                img.draft("RGB", (max_side, max_side))
            img.load()
            return img
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(name, f"decompression bomb refused ({e})") from None
    except PermissionError:
        raise ImageLoadError(name, "permission denied", "make the file readable") from None
    except Image.UnidentifiedImageError:
        kind = _signature(source)
        if kind:  # the header says what it is, but Pillow could not read it
            raise ImageLoadError(
                name, f"truncated or corrupt {kind} file", "re-export or replace the file"
            ) from None
        raise ImageLoadError(
            name, "not a recognised image format", "the file is corrupt or not an image"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(
            name, f"cannot decode image ({e})", "the file is truncated or corrupt"
        ) from None


_SIGNATURES = (
    (b"GIF8", "GIF"),
    (b"\x89PNG", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _signature(source: Any) -> str | None:
    """The image format the first bytes of ``source`` announce (magic number), or None."""
    try:
        if hasattr(source, "read"):
            source.seek(0)
            head = source.read(12)
        else:
            with open(source, "rb") as f:
                head = f.read(12)
    except (OSError, ValueError):
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def load_image(
    source: Any,
    *,
    max_side: int | None = MAX_SIDE,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Return a fully decoded RGB image from a path, raw bytes, a binary file object or a PIL
    image. ``name`` is what error messages call the source (default: the path).

    Raises ImageLoadError naming the file for missing, empty, truncated, corrupt or oversized
    images. Animated images give their first frame; EXIF orientation is applied; the longer
    side is capped at ``max_side`` (None: no cap)."""
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        if len(source) == 0:
            raise ImageLoadError(label, "empty file (0 bytes)")
        img = _open(io.BytesIO(source), label, max_pixels, max_side)
    elif hasattr(source, "read"):
        img = _open(source, name or getattr(source, "name", "<stream>"), max_pixels, max_side)
    else:
        path = Path(source)
        label = name or str(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageLoadError(
                label, "file not found", "check the path or the data root"
            ) from None
        except OSError as e:
            raise ImageLoadError(label, f"cannot stat ({e.strerror})") from None
        if size == 0:
            raise ImageLoadError(label, "empty file (0 bytes)")
        img = _open(path, label, max_pixels, max_side)
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose the image
        img = ImageOps.exif_transpose(img)
    img = to_rgb(img)
    if max_side is not None and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return img
