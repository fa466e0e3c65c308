"""Finds and reads the packaged assets the offline benchmark is built from (Noto Color Emoji,
CLDR annotations, gemojione PNGs, WordNet, the `emoji` package) and records their versions.
Knows nothing of tasks, splits or M-BEIR files; a missing asset is one line naming what to install."""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# Environment variables that point at an asset outside the Debian default locations.
ENV = {
    "font": "MMEMBED_NOTO_FONT",
    "cldr": "MMEMBED_CLDR_DIR",
    "gemojione": "MMEMBED_GEMOJIONE_DIR",
    "wordnet": "MMEMBED_WORDNET_DIR",
}
DEFAULTS = {
    "font": "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "cldr": "/usr/share/unicode/cldr/common",
    "gemojione": "/usr/share/rubygems-integration/all/gems/gemojione-*",
    "wordnet": "/usr/share/wordnet",
}
APT = {
    "font": "fonts-noto-color-emoji",
    "cldr": "unicode-cldr-core",
    "gemojione": "ruby-gemojione",
    "wordnet": "wordnet-base",
}
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


class AssetMissingError(RuntimeError):
    """An asset package is not installed; the message is one line saying what to install."""


@dataclass(frozen=True)
class Assets:
    font: Path  # NotoColorEmoji.ttf (CBDT bitmaps, one strike at 109 px)
    cldr: Path  # CLDR 'common' folder holding annotations/ and annotationsDerived/
    gemojione: Path  # gemojione gem folder holding config/index.json and assets/png/
    wordnet: Path  # folder holding data.noun, data.verb, data.adj, data.adv


def _missing(kind: str, path: str) -> AssetMissingError:
    return AssetMissingError(
        f"offline benchmark asset not found: {path}; install it with "
        f"`sudo apt-get install {APT[kind]}` (or set {ENV[kind]} to its location)"
    )


def _resolve(kind: str, must_contain: str | None) -> Path:
    raw = os.environ.get(ENV[kind]) or DEFAULTS[kind]
    hits = sorted(glob.glob(raw)) if any(c in raw for c in "*?[") else [raw]
    path = Path(hits[-1]) if hits else Path(raw)  # newest version folder when globbed
    probe = path / must_contain if must_contain else path
    if not probe.exists():
        raise _missing(kind, str(probe))
    return path


def find_assets() -> Assets:
    """Locate every asset, or raise AssetMissingError naming the first missing one."""
    _require_emoji()
    assets = Assets(
        font=_resolve("font", None),
        cldr=_resolve("cldr", "annotations/en.xml"),
        gemojione=_resolve("gemojione", "config/index.json"),
        wordnet=_resolve("wordnet", "data.noun"),
    )
    for name in WORDNET_FILES:
        if not (assets.wordnet / name).exists():
            raise _missing("wordnet", str(assets.wordnet / name))
    return assets


def _require_emoji():
    try:
        import emoji
    except ModuleNotFoundError:
        raise AssetMissingError(
            "the Python package `emoji` is missing; install it with `pip install 'mmembed[offline]'`"
        ) from None
    return emoji


def _dpkg_version(package: str) -> str:
    exe = shutil.which("dpkg-query")
    if exe is None:
        return "unknown (no dpkg-query)"
    out = subprocess.run(
        [exe, "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "not installed"


def asset_versions() -> dict[str, str]:
    """Versions of everything that decides the output bytes (packages and Pillow's codecs)."""
    from PIL import __version__ as pillow_version
    from PIL import features

    versions = {pkg: _dpkg_version(pkg) for pkg in sorted([*APT.values(), "fonts-dejavu-core"])}
    versions["emoji (PyPI)"] = importlib.metadata.version("emoji")
    versions["pillow (PyPI)"] = pillow_version
    versions["pillow freetype2"] = str(features.version("freetype2"))
    versions["pillow raqm"] = str(features.version("raqm"))
    versions["pillow zlib"] = str(features.version("zlib"))
    return versions


# --------------------------------------------------------------------------- readers


def strip_vs(text: str) -> str:
    """Remove variation selector 16 (CLDR keys omit it)."""
    return text.replace("\ufe0f", "")


@cache
def _cldr_file(path: Path) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    out: dict[str, tuple[str | None, tuple[str, ...]]] = {}
    if not path.exists():
        return out
    root = ET.parse(path).getroot()
    for node in root.iter("annotation"):
        cp = node.get("cp")
        text = (node.text or "").strip()
        if not cp or not text or node.get("draft") == "unconfirmed":
            continue
        name, keywords = out.get(cp, (None, ()))
        if node.get("type") == "tts":
            name = text
        else:
            keywords = tuple(k.strip() for k in text.split("|") if k.strip())
        out[cp] = (name, keywords)
    return out


def cldr_annotations(assets: Assets, lang: str) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """CLDR (name, keywords) by emoji (variation selectors removed), base + derived files."""
    merged = dict(_cldr_file(assets.cldr / "annotationsDerived" / f"{lang}.xml"))
    merged.update(_cldr_file(assets.cldr / "annotations" / f"{lang}.xml"))
    return merged


def emoji_data() -> dict[str, dict]:
    """The `emoji` package's table: fully-qualified string -> {'en', 'status', 'E', ...}."""
    return _require_emoji().EMOJI_DATA


def fully_qualified_status() -> int:
    return int(_require_emoji().STATUS["fully_qualified"])


def _gemojione_entries(assets: Assets):
    """(emoji without variation selectors, code as in the PNG names, index entry) per entry of
    gemojione's index whose code parses, in sorted index order."""
    with open(assets.gemojione / "config" / "index.json", encoding="utf-8") as f:
        index = json.load(f)
    for key in sorted(index):
        entry = index[key]
        code = entry.get("unicode") or ""
        try:
            seq = "".join(chr(int(h, 16)) for h in code.split("-"))
        except ValueError:
            continue
        yield strip_vs(seq), code, entry


def gemojione_index(assets: Assets) -> dict[str, Path]:
    """Emoji (variation selectors removed) -> gemojione PNG path, for entries whose PNG exists."""
    out: dict[str, Path] = {}
    for key, code, _ in _gemojione_entries(assets):
        png = assets.gemojione / "assets" / "png" / f"{code}.png"
        if png.exists():
            out.setdefault(key, png)
    return out


def gemojione_categories(assets: Assets) -> dict[str, str]:
    """Emoji (variation selectors removed) -> the category gemojione files it under ('nature',
    'food', 'people', ...); its 'modifier' and 'extras' entries are not emoji categories."""
    out: dict[str, str] = {}
    for key, _, entry in _gemojione_entries(assets):
        cat = entry.get("category")
        if cat and cat not in ("modifier", "extras"):
            out.setdefault(key, cat)
    return out


@dataclass(frozen=True)
class Synset:
    key: str  # "n08123456": part of speech + offset, unique in WordNet 3.0
    pos: str  # noun | verb | adjective | adverb
    lemmas: tuple[str, ...]
    definition: str  # the gloss without its quoted examples


_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def read_wordnet(assets: Assets) -> list[Synset]:
    """Every synset of the WordNet data files, sorted by key."""
    from mmembed.data.wordnet import iter_synset_lines

    out: list[Synset] = []
    for name in WORDNET_FILES:
        for syn in iter_synset_lines(assets.wordnet / name):
            lemmas: list[str] = []
            for word, _ in syn.words:
                word = word.split("(")[0] if syn.ss_type in "as" else word  # drop "(p)" markers
                word = word.replace("_", " ")
                if word not in lemmas:
                    lemmas.append(word)
            definition = syn.gloss.split('; "')[0].strip().rstrip(";").strip()
            key = f"{syn.ss_type}{syn.offset}"
            out.append(Synset(key, _POS[syn.ss_type], tuple(lemmas), definition))
    out.sort(key=lambda s: s.key)
    return out
