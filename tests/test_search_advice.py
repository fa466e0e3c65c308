"""The notice `mmembed index` and `mmembed serve` print when the offline default model (trained on
emoji) meets photos: what counts as a photo, which models count as the offline default, and the
commands printing it once (and not for emoji-like graphics or another model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmembed.search import advice
from mmembed.testing.colour_embedder import draw_corpus


def _camera_jpeg(path: Path, size=(1200, 900), exif: bool = True) -> Path:
    img = Image.new("RGB", size, (120, 100, 80))
    ex = Image.Exif()
    if exif:
        ex[271], ex[272] = "Canon", "EOS 80D"  # Make, Model
    img.save(path, "JPEG", exif=ex.tobytes() if exif else b"")
    return path


def test_photo_reason_reads_headers(tmp_path: Path) -> None:
    emoji = tmp_path / "emoji.png"
    Image.new("RGBA", (136, 128)).save(emoji)
    big = tmp_path / "screenshot.png"
    Image.new("RGB", (1280, 720)).save(big)
    small_jpeg = _camera_jpeg(tmp_path / "thumb.jpg", size=(160, 120), exif=False)
    assert advice.photo_reason(emoji) is None
    assert advice.photo_reason(big) == "1280 px"
    assert advice.photo_reason(small_jpeg) == "JPEG"
    assert advice.photo_reason(_camera_jpeg(tmp_path / "cam.jpg")) == "EXIF"
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    assert advice.photo_reason(tmp_path / "broken.jpg") is None


def test_offline_default_is_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmembed.model.registry import WEIGHTS_DIR

    for name in ("mmembed-mini", "mmembed-mini-base", str(WEIGHTS_DIR / "mmembed-mini")):
        assert advice.is_offline_default(name), name
    for name in ("gme-qwen2-vl-2b", "clip-sf:ViT-L-14:/w/clip.pt", "/home/me/runs/mmembed-mini"):
        assert not advice.is_offline_default(name), name
    monkeypatch.setenv("MMEMBED_MODEL", "mmembed-mini")
    assert advice.is_offline_default(None)  # None = the project default
    monkeypatch.setenv("MMEMBED_MODEL", "/models/MM-Embed")
    assert not advice.is_offline_default(None)


def test_photo_notice_names_training_data_and_alternatives(tmp_path: Path) -> None:
    photos = [_camera_jpeg(tmp_path / f"p{i}.jpg") for i in range(3)]
    emoji = tmp_path / "e.png"
    Image.new("RGBA", (136, 128)).save(emoji)
    note = advice.photo_notice("mmembed-mini", [*photos, emoji])
    assert note is not None
    assert "3 of 4 images checked" in note and "EXIF" in note
    assert "emoji" in note and "--model" in note and "gme-qwen2-vl-2b" in note
    assert advice.photo_notice("mmembed-mini", [emoji]) is None  # what it was trained on
    assert advice.photo_notice("gme-qwen2-vl-2b", photos) is None  # a photo-capable model
    many = [emoji] * 100 + photos * 200  # a big folder: only a spread sample of headers is read
    assert f"of {advice.SAMPLE} images checked" in advice.photo_notice("mmembed-mini", many)


def test_index_and_serve_print_the_notice_once(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny saved model stands in for the offline default (loading the real one takes
    long); the commands' call sites, the once-only rule and the photo test are real."""
    from mmembed.cli import app

    monkeypatch.setattr(advice, "_shown", set())
    monkeypatch.setattr(advice, "is_offline_default", lambda spec: spec == str(tiny_model))
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    graphics = tmp_path / "graphics"
    draw_corpus(graphics)  # 48 px PNGs: emoji-like, no notice
    lib = tmp_path / "lib"
    r = cli("index", graphics, "--index", lib, "--model", tiny_model)
    assert r.exit_code == 0, r.output
    assert "rendered emoji" not in r.output

    photos = tmp_path / "photos"
    photos.mkdir()
    _camera_jpeg(photos / "cat.jpg")
    r = cli("index", photos, "--index", lib)
    assert r.exit_code == 0, r.output
    assert "1 of 5 images checked look like photos (EXIF)" in r.output
    assert "trained only on ~3,900 rendered emoji" in r.output and "--model" in r.output
    r = cli("index", "--index", lib)  # nothing new: no repeat
    assert r.exit_code == 0 and "rendered emoji" not in r.output

    import mmembed.search.server as server

    monkeypatch.setattr(server, "serve", lambda *a, **k: None)  # no uvicorn: the banner only
    r = cli("serve", "--index", lib)
    assert r.exit_code == 0, r.output
    assert "rendered emoji" in r.output and "items; open http://" in r.output

    monkeypatch.setattr(advice, "is_offline_default", lambda spec: False)  # another model
    monkeypatch.setattr(advice, "_shown", set())
    r = cli("serve", "--index", lib)
    assert r.exit_code == 0 and "rendered emoji" not in r.output
