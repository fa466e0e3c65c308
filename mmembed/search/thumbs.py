"""Thumbnails (small JPEGs of indexed images) and decoding of uploaded query images, with the
same guards as the corpus loader. Knows nothing of indexes, models or HTTP."""

from __future__ import annotations

import base64
import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from mmembed.data.images import MAX_PIXELS, ImageLoadError, load_image

THUMB_SIDE = 256
_JPEG_QUALITY = 82
# Thumbnails decoded at once: a server's request threads (40 by default) could otherwise decode
# 40 huge PNGs together (~250 MB each at 9000x9000). Cache hits never wait.
_DECODE_SLOTS = threading.BoundedSemaphore(2)


class ThumbnailCache:
    """A bounded LRU of encoded thumbnails keyed by (path, size, mtime_ns, side).

    A file that changes on disk gets a new key, so a stale thumbnail is never served."""

    def __init__(self, max_items: int = 512, side: int = THUMB_SIDE) -> None:
        self.max_items = max_items
        self.side = side
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str | Path) -> bytes:
        """JPEG bytes of ``path``'s thumbnail; raises ImageLoadError for unusable files."""
        try:
            st = os.stat(path)
        except OSError as e:
            raise ImageLoadError(path, f"cannot stat ({e.strerror})") from None
        key = (str(path), st.st_size, st.st_mtime_ns, self.side)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        with _DECODE_SLOTS:
            data = thumbnail_bytes(path, side=self.side)
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return data


def thumbnail_bytes(source: str | Path | Image.Image, *, side: int = THUMB_SIDE) -> bytes:
    """A JPEG no larger than ``side`` x ``side`` (aspect kept) of an image path or PIL image.

    JPEGs are decoded at a reduced scale (libjpeg's DCT scaling: a 12-megapixel photo costs a
    fraction of a full decode); the pixel-count guard runs before any decoding."""
    img = source if isinstance(source, Image.Image) else _open_reduced(Path(source), side)
    try:
        img = load_image(img, max_side=None).copy()
    except OSError as e:  # a lazily opened file that turns out truncated
        raise ImageLoadError(
            source, f"cannot decode image ({e})", "the file is truncated or corrupt"
        ) from None
    img.thumbnail((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=_JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def _open_reduced(path: Path, side: int) -> Image.Image:
    """Open ``path`` lazily; a JPEG is set to decode at the smallest scale >= ``side``."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        img = Image.open(path)
        w, h = img.size
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(path, f"not a readable image ({e})") from None
    if w * h > MAX_PIXELS:
        raise ImageLoadError(path, f"{w}x{h} pixels exceeds the limit of {MAX_PIXELS}")
    if img.format == "JPEG":
        img.draft("RGB", (side, side))
    return img


def data_uri(jpeg: bytes) -> str:
    """``data:image/jpeg;base64,...`` for embedding a thumbnail in a self-contained page."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def decode_upload(
    data: bytes, *, name: str = "<upload>", max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Uploaded bytes -> RGB PIL image (longer side capped as for any query image). Empty,
    corrupt, truncated and oversized (decompression-bomb) images raise ImageLoadError naming
    ``name``; the pixel count is checked before decoding. CPU-heavy for large images: a server
    calls it off its event loop."""
    if not data:
        raise ImageLoadError(name, "empty upload (0 bytes)", "choose an image file")
    try:
        return load_image(bytes(data), name=name, max_pixels=max_pixels)
    except ImageLoadError as e:
        hint = "upload a JPEG, PNG, WebP, GIF, BMP or TIFF file"
        if "pixels exceeds" in e.problem:
            hint = "downscale the image before searching with it"
        raise ImageLoadError(name, e.problem, hint) from None
