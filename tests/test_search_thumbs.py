"""Thumbnails and uploaded query images: reduced-scale JPEG decoding keeps EXIF orientation,
bad files raise ImageLoadError naming them, the pixel guard runs before decoding, the cache
never serves a stale thumbnail."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from mmembed.data.images import ImageLoadError
from mmembed.search import thumbs
from mmembed.search.thumbs import ThumbnailCache, decode_upload, thumbnail_bytes


def _size(jpeg: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(jpeg)).size


def test_large_jpeg_with_exif_rotation(tmp_path: Path) -> None:
    img = Image.new("RGB", (2000, 1000), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=90)
    assert _size(thumbnail_bytes(tmp_path / "rot.jpg")) == (128, 256)
    assert _size(thumbnail_bytes(tmp_path / "rot.jpg", side=64)) == (32, 64)


def test_bad_files_and_pixel_guard(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (300, 300), (0, 90, 200)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.png").write_text("not an image")
    for name, why in [("empty.jpg", "empty"), ("cut.jpg", "decode"), ("text.png", "readable")]:
        with pytest.raises(ImageLoadError, match=why) as e:
            thumbnail_bytes(tmp_path / name)
        assert name in str(e.value)
    monkeypatch.setattr(thumbs, "MAX_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="exceeds the limit"):
        thumbnail_bytes(tmp_path / "ok.jpg")


def test_cache_follows_file_changes(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(p)
    cache = ThumbnailCache(max_items=2)
    first = cache.get(p)
    assert cache.get(p) is first
    Image.new("RGB", (20, 40), (0, 0, 255)).save(p)
    os.utime(p, ns=(1, 10**18))  # a different mtime, whatever the clock resolution
    assert _size(cache.get(p)) == (20, 40)


def test_decode_upload(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("P", (30, 30)).save(buf, format="GIF")
    assert decode_upload(buf.getvalue()).mode == "RGB"
    with pytest.raises(ImageLoadError, match="empty upload"):
        decode_upload(b"", name="x.png")
    with pytest.raises(ImageLoadError, match="q.png"):
        decode_upload(b"GIF89a-broken", name="q.png")
    with pytest.raises(ImageLoadError, match="exceeds"):
        decode_upload(buf.getvalue(), max_pixels=100)
