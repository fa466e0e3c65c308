"""Image loading in one place: EXIF orientation, palette/alpha/CMYK/16-bit to RGB, a size cap
and a decompression-bomb guard. Knows nothing of models or preprocessing for a network."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
MAX_PIXELS = 89_478_485  # Pillow's own bomb threshold; larger images are refused, not decoded
MAX_SIDE = 4096  # decoded images are downscaled so the longer side is at most this


class ImageLoadError(ValueError):
    """An image that cannot be used: names the file and what is wrong."""

    def __init__(self, path: str | Path, problem: str, hint: str = "") -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" + (f" ({hint})" if hint else ""))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparent pixels are composited on white; 16-bit is rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale the used range to 8 bits instead of clipping at 255.
        lo, hi = img.getextrema()
        scale = 255.0 / max(1, hi - lo)
        img = img.point(lambda v: (v - lo) * scale).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("LA", "PA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def load_image(
    source: Any, *, max_side: int | None = MAX_SIDE, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Open a path (or take a PIL image) and return a fully decoded RGB image.

    Raises ImageLoadError naming the file for missing, empty, truncated, corrupt or oversized
    images. Animated images give their first frame."""
    if isinstance(source, Image.Image):
        img = source
        path = "<image>"
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageLoadError(path, "file not found", "check the path or the data root") from None
        except OSError as e:
            raise ImageLoadError(path, f"cannot stat ({e.strerror})") from None
        if size == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(path)
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageLoadError(path, f"{w}x{h} pixels exceeds the limit of {max_pixels}",
                                         "possible decompression bomb; raise max_pixels if it is genuine")
                img.load()
        except ImageLoadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageLoadError(path, f"decompression bomb refused ({e})") from None
        except PermissionError:
            raise ImageLoadError(path, "permission denied", "make the file readable") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageLoadError(path, f"cannot decode image ({e})", "the file is truncated or corrupt") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        pass
    img = to_rgb(img)
    if max_side is not None and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return img
