"""Parts of the offline benchmark builder: the emoji universe and its edits, split units,
WordNet reading, rendering, missing-asset messages, and (slow) the full build."""

from __future__ import annotations

import sys
import time

import pytest

from mmembed.data.offline.assets import AssetMissingError, find_assets, read_wordnet
from mmembed.data.offline.emojis import Edit, edits, group_of, load_universe, role_phrase
from mmembed.data.offline.render import RENDER_SIZE, RenderError, render_noto, render_png
from mmembed.data.offline.tasks import leaks, synset_text

ZWJ = "\u200d"
WOMAN, PERSON, FIRE = "\U0001f469", "\U0001f9d1", "\U0001f692"
MEDIUM_DARK, POLICE, FEMALE = "\U0001f3fe", "\U0001f46e", "\u2640"


@pytest.fixture(scope="module")
def universe():
    return load_universe(find_assets())


def test_edits_compose_real_sequences(universe):
    found = set(edits(universe))
    assert Edit("role", WOMAN, WOMAN + ZWJ + FIRE, "as a firefighter") in found
    assert (
        Edit("role", WOMAN + MEDIUM_DARK, WOMAN + MEDIUM_DARK + ZWJ + FIRE, "as a firefighter")
        in found
    )
    assert Edit("tone", PERSON, PERSON + MEDIUM_DARK, "with medium-dark skin tone") in found
    assert Edit("gender", POLICE, POLICE + ZWJ + FEMALE, "as a woman") in found
    assert Edit("gender", PERSON + ZWJ + FIRE, WOMAN + ZWJ + FIRE, "as a woman") in found
    assert Edit("hair", WOMAN, WOMAN + ZWJ + "\U0001f9b0", "with red hair") in found
    assert Edit("role", WOMAN, WOMAN + ZWJ + "\U0001f3a8", "as an artist") in found
    assert role_phrase("person with white cane") == "with white cane"
    for e in found:  # the source is never the answer, and both exist
        assert e.source != e.target and e.source in universe and e.target in universe


def test_universe_names_and_units(universe):
    assert len(universe) > 3000
    woman_ff = universe[WOMAN + MEDIUM_DARK + ZWJ + FIRE]
    assert woman_ff.names["en"] == "woman firefighter: medium-dark skin tone"
    assert woman_ff.names["fr"] and woman_ff.names["de"]
    assert woman_ff.tone == MEDIUM_DARK
    # one split unit for the fire engine, every firefighter and every tone of them
    assert group_of(woman_ff.key) == group_of(PERSON + ZWJ + FIRE) == FIRE
    assert group_of("\U0001f44d\U0001f3fb") == "\U0001f44d"  # thumbs up: light skin tone
    assert "cat" in universe["\U0001f408"].keywords or "cat" in universe["\U0001f431"].keywords


def test_wordnet_reading_and_leak_filter():
    synsets = read_wordnet(find_assets())
    assert len(synsets) == 117_659  # WordNet 3.0
    by_key = {s.key: s for s in synsets}
    dog = by_key["n02084071"]
    assert dog.lemmas[:2] == ("dog", "domestic dog") and "Canis" in dog.definition
    assert '"' not in dog.definition  # examples stripped
    assert synset_text(dog).endswith("(noun)")
    assert leaks(dog)  # "a member of the genus Canis ..." contains the lemma "Canis"
    assert not leaks(by_key["n02121620"])  # cat: "feline mammal usually having thick soft fur..."


def test_render_is_fixed_size_and_deterministic(tmp_path):
    font = find_assets().font
    a = render_noto(WOMAN + ZWJ + FIRE, font)
    b = render_noto(WOMAN + ZWJ + FIRE, font)
    assert a.size == (RENDER_SIZE, RENDER_SIZE) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    assert a.getpixel((0, 0)) == (255, 255, 255)  # on white
    assert a.tobytes() != render_noto(WOMAN, font).tobytes()
    with pytest.raises(RenderError):
        render_noto("\U0001fae9", font)  # Emoji 16: not in this font
    gem = find_assets().gemojione / "assets" / "png" / "1F4AF.png"
    assert render_png(gem).size == (RENDER_SIZE, RENDER_SIZE)


def test_missing_assets_name_what_to_install(monkeypatch):
    monkeypatch.setenv("MMEMBED_NOTO_FONT", "/nonexistent/NotoColorEmoji.ttf")
    with pytest.raises(AssetMissingError, match="apt-get install fonts-noto-color-emoji"):
        find_assets()
    monkeypatch.delenv("MMEMBED_NOTO_FONT")
    monkeypatch.setenv("MMEMBED_WORDNET_DIR", "/nonexistent/wordnet")
    with pytest.raises(AssetMissingError, match="apt-get install wordnet-base"):
        find_assets()
    monkeypatch.delenv("MMEMBED_WORDNET_DIR")
    monkeypatch.setitem(sys.modules, "emoji", None)  # as if not installed
    with pytest.raises(AssetMissingError, match=r"mmembed\[offline\]") as info:
        find_assets()
    assert "\n" not in str(info.value)


def test_cli_reports_missing_asset_in_one_line(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from mmembed.cli import app

    monkeypatch.setenv("MMEMBED_CLDR_DIR", str(tmp_path / "nothing"))
    result = CliRunner().invoke(app, ["data", "build-offline", "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 2
    assert "apt-get install unicode-cldr-core" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_full_build(tmp_path):
    from mmembed.data.offline import build
    from mmembed.data.validate import validate_tree

    start = time.perf_counter()
    manifest = build(tmp_path / "offline", show_progress=False)
    seconds = time.perf_counter() - start
    print(
        f"full offline build: {seconds:.0f} s, {manifest['files']} files, {manifest['bytes'] / 1e6:.1f} MB"
    )
    assert seconds < 300
    for row in manifest["tasks"]:
        assert row["splits"]["test"]["pool"] >= 450, row  # several hundred to a few thousand
        assert row["splits"]["test"]["queries"] >= 350, row
    assert manifest["global_pool"]["test"] > 10_000
    # of identical drawings the older emoji stays: France, not Clipperton Island
    assert "noto:1f1e8-1f1f5=1f1eb-1f1f7" in manifest["dropped"]["duplicate_pixels"]
    report = validate_tree(tmp_path / "offline", check_images=True)
    assert report.ok and report.n_errors == 0


def test_public_build_is_the_function():
    import mmembed.data.offline as offline
    import mmembed.data.offline.builder  # noqa: F401  (must not shadow offline.build)

    assert callable(offline.build) and offline.build.__module__ == "mmembed.data.offline"
