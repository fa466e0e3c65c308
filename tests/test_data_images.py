"""Image loading: EXIF orientation, every awkward mode to RGB, the size cap, and clear errors for
bombs, truncated, corrupt, empty, missing and unreadable files; where an image path points
(records.image_file)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from data_fixtures import noise, png_header_only
from PIL import Image

from mmembed.data import images
from mmembed.data.images import ImageLoadError, load_image


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    img.paste((0, 0, 255), (10, 0, 20, 10))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = load_image(_bytes(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (10, 20)
    r, g, b = out.getpixel((5, 2))  # the red half is now on top
    assert r > 200 and b < 50
    r, g, b = out.getpixel((5, 17))
    assert b > 200 and r < 50


def test_palette_with_transparency_composites_on_white():
    p = Image.new("P", (4, 4), 0)
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 1), 1)
    out = load_image(_bytes(p, "PNG", transparency=0))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)  # index 0 is transparent
    assert out.getpixel((1, 1)) == (0, 255, 0)


def test_la_and_rgba_alpha():
    la = Image.new("LA", (4, 4), (100, 0))
    la.putpixel((0, 0), (100, 255))
    out = load_image(_bytes(la, "PNG"))
    assert out.getpixel((0, 0)) == (100, 100, 100) and out.getpixel((1, 1)) == (255, 255, 255)
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 128))
    r, g, b = load_image(rgba).getpixel((0, 0))  # half-transparent blue over white
    assert abs(r - 127) <= 1 and abs(g - 127) <= 1 and b == 255


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = load_image(_bytes(cmyk, "JPEG"))
    assert out.mode == "RGB"
    r, g, b = out.getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15


def test_16bit_greyscale_is_rescaled_not_clipped():
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    src = Image.fromarray(ramp)
    assert src.mode == "I;16"
    out = load_image(_bytes(src, "PNG"))
    arr = np.asarray(out)[:, :, 0]
    assert out.mode == "RGB" and arr.min() == 0 and arr.max() == 255
    assert len(np.unique(arr)) > 200  # the ramp survives (clipping would give mostly 255)
    assert np.all(np.diff(arr.reshape(-1).astype(int)) >= 0)  # still monotone


def test_size_cap_keeps_aspect():
    out = load_image(Image.new("RGB", (5000, 100), "white"))
    assert out.size == (4096, 82)
    assert load_image(noise(300, 150), max_side=64).size == (64, 32)
    assert load_image(noise(300, 150), max_side=None).size == (300, 150)


def test_large_jpeg_is_decoded_at_reduced_scale_then_capped():
    big = _bytes(noise(1200, 600), "JPEG")
    out = load_image(big, max_side=256)
    assert out.size == (256, 128)


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageLoadError, match="exceeds the limit.*decompression bomb"):
        load_image(png_header_only(10_000, 10_000))  # 1e8 pixels > the 89.5M limit
    with pytest.raises(ImageLoadError, match="decompression bomb refused"):
        load_image(png_header_only(100_000, 100_000))  # Pillow's own hard limit
    with pytest.raises(ImageLoadError, match="exceeds the limit of 1000"):
        load_image(_bytes(noise(50, 50), "PNG"), max_pixels=1000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    data = _bytes(noise(), fmt)
    path = tmp_path / f"t.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated") as e:
        load_image(path)
    assert str(path) in str(e.value)


def test_zero_byte_missing_and_corrupt_files(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty\.png: empty file \(0 bytes\)"):
        load_image(empty)
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "nope.jpg")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageLoadError, match="junk.png: not a recognised image format"):
        load_image(junk)
    with pytest.raises(ImageLoadError, match="<bytes>: empty file"):
        load_image(b"")


def test_unreadable_file_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    path.write_bytes(_bytes(noise(8, 8), "PNG"))
    real_open = images.Image.open

    def deny(fp, *a, **kw):
        if str(fp) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(fp, *a, **kw)

    monkeypatch.setattr(images.Image, "open", deny)
    with pytest.raises(ImageLoadError, match="locked.png: permission denied"):
        load_image(path)


def test_animated_gif_gives_first_frame_and_all_sources_agree(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    from_path = load_image(path)
    r, g, b = from_path.getpixel((3, 3))
    assert r > 200 and g < 50
    data = path.read_bytes()
    for src in (data, io.BytesIO(data)):
        assert np.array_equal(np.asarray(load_image(src)), np.asarray(from_path))


def test_image_file_joins_to_the_root_absolute_and_normalised(tmp_path, monkeypatch):
    from mmembed.data.records import image_file

    root = tmp_path / "data"
    assert image_file(None, root) is None
    assert image_file("images/x.png", root) == str(root / "images" / "x.png")
    assert image_file("images/../x.png", str(root)) == str(root / "x.png")
    assert image_file("/elsewhere/./y.png", root) == "/elsewhere/y.png"  # absolute: kept
    monkeypatch.chdir(tmp_path)
    assert image_file("z.png", None) == str(tmp_path / "z.png")  # no root: the working folder
    assert image_file("z.png", "data") == str(root / "z.png")  # a relative root is made absolute
