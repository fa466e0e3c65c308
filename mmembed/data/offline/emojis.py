"""The emoji universe of the offline benchmark: which emoji exist (fully qualified, drawable by the
installed Noto font, named by CLDR), their names in several languages, their split unit, and the
composed edits (skin tone, gender, role, hair) that turn one emoji into another. No rendering."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mmembed.data.offline.assets import (
    Assets,
    cldr_annotations,
    emoji_data,
    fully_qualified_status,
    strip_vs,
)

ZWJ = "\u200d"
TONES = {
    "\U0001f3fb": "light skin tone",
    "\U0001f3fc": "medium-light skin tone",
    "\U0001f3fd": "medium skin tone",
    "\U0001f3fe": "medium-dark skin tone",
    "\U0001f3ff": "dark skin tone",
}
PEOPLE = {"\U0001f9d1": "person", "\U0001f468": "man", "\U0001f469": "woman"}
GENDER_SIGNS = {"\u2640": "woman", "\u2642": "man"}
HAIR = {
    "\U0001f9b0": "with red hair",
    "\U0001f9b1": "with curly hair",
    "\U0001f9b3": "with white hair",
    "\U0001f9b2": "bald",
}
LANGUAGES = {"en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian",
             "pt": "Portuguese", "nl": "Dutch"}  # fmt: skip
MAX_EMOJI_VERSION = 15.1  # Noto Color Emoji 2.042 (Debian bookworm) draws up to Emoji 15.1


@dataclass(frozen=True)
class Emoji:
    seq: str  # fully-qualified string
    key: str  # seq without variation selectors (CLDR's key)
    code: str  # lower-case hex codepoints of key joined by '-', used in file names
    group: str  # split unit: the emoji with tones, people and gender signs stripped
    tone: str | None  # the one skin-tone modifier it carries, None if none or mixed
    names: dict[str, str] = field(compare=False)  # language -> CLDR name
    keywords: tuple[str, ...] = field(compare=False, default=())  # English CLDR keywords
    version: float = field(compare=False, default=0.0)  # Emoji version that introduced it

    @property
    def toned(self) -> bool:
        return any(t in self.key for t in TONES)


@dataclass(frozen=True)
class Edit:
    """A composed query: the ``source`` emoji's image plus ``text`` describe ``target``."""

    kind: str  # tone | gender | role | hair
    source: str  # emoji key
    target: str  # emoji key
    text: str


def code_of(key: str) -> str:
    return "-".join(f"{ord(c):x}" for c in key)


def group_of(key: str) -> str:
    """The split unit: tones removed; person/gender parts of ZWJ sequences removed, so that
    'woman firefighter: dark skin tone' and 'firefighter' share a unit."""
    bare = "".join(c for c in key if c not in TONES)
    parts = bare.split(ZWJ)
    rest = [p for p in parts if p not in PEOPLE and p not in GENDER_SIGNS]
    return ZWJ.join(rest) if rest and len(parts) > 1 else bare


def load_universe(assets: Assets) -> dict[str, Emoji]:
    """Every fully-qualified emoji (Emoji <= 15.1) with an English CLDR name, by key."""
    data = emoji_data()
    status = fully_qualified_status()
    names = {lang: cldr_annotations(assets, lang) for lang in LANGUAGES}
    out: dict[str, Emoji] = {}
    for seq in sorted(data):
        info = data[seq]
        if info.get("status") != status or float(info.get("E", 99)) > MAX_EMOJI_VERSION:
            continue
        key = strip_vs(seq)
        if key in TONES or key in HAIR:
            continue  # bare modifiers / hair components are not pictures of anything
        by_lang = {lang: names[lang].get(key, (None, ()))[0] for lang in LANGUAGES}
        if not by_lang["en"]:
            continue
        tones = {c for c in key if c in TONES}
        out[key] = Emoji(
            seq=seq,
            key=key,
            code=code_of(key),
            group=group_of(key),
            tone=next(iter(tones)) if len(tones) == 1 else None,
            names={lang: n for lang, n in by_lang.items() if n},
            keywords=names["en"].get(key, (None, ()))[1],
            version=float(info.get("E", 0.0)),
        )
    return out


def split_of(unit: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """Deterministic split of a unit: a seeded hash mapped into train/val/test fractions."""
    h = int.from_bytes(hashlib.sha256(f"{seed}|{unit}".encode()).digest()[:8], "big") / 2**64
    if h < fractions[0]:
        return "train"
    return "val" if h < fractions[0] + fractions[1] else "test"


def rank_of(unit: str, seed: int) -> str:
    """A seeded sort key (for deterministic subsampling)."""
    return hashlib.sha256(f"rank|{seed}|{unit}".encode()).hexdigest()


def _without_tones(key: str) -> str:
    return "".join(c for c in key if c not in TONES)


def role_phrase(name: str) -> str:
    """The edit text that adds a role: 'firefighter' -> 'as a firefighter', 'artist' -> 'as an
    artist', 'person feeding baby' -> 'feeding baby', 'mx claus' -> 'as Mx Claus'."""
    if name.startswith("person "):
        return name.removeprefix("person ")
    if name == "mx claus":
        return "as Mx Claus"
    return f"as {'an' if name[0] in 'aeiou' else 'a'} {name}"


def edits(universe: dict[str, Emoji]) -> list[Edit]:
    """Every composed edit whose source and target both exist, sorted.

    - tone:   X (no tone)                      + "with medium skin tone" -> X:medium skin tone
    - gender: neutral role (👮, 🧑‍🚒) [+ tone] + "as a woman"            -> 👮‍♀️, 👩‍🚒 (same tone)
    - role:   👩 / 👨 / 🧑 [+ tone]            + "as a firefighter"      -> 👩‍🚒 (same tone, gender)
    - hair:   👩 / 👨 / 🧑 [+ tone]            + "with red hair"         -> 👩‍🦰 (same tone, gender)
    """
    found: set[Edit] = set()
    for key, emo in universe.items():
        parts = key.split(ZWJ)
        # tone: the untoned form plus the tone's name
        if emo.tone is not None:
            src = _without_tones(key)
            if src in universe:
                found.add(Edit("tone", src, key, f"with {TONES[emo.tone]}"))
        # gender sign suffix: 👮🏽‍♀ <- 👮🏽
        if len(parts) >= 2 and parts[-1] in GENDER_SIGNS:
            src = ZWJ.join(parts[:-1])
            if src in universe:
                found.add(Edit("gender", src, key, f"as a {GENDER_SIGNS[parts[-1]]}"))
        head = _without_tones(parts[0])
        if len(parts) == 2 and head in PEOPLE:
            tone = parts[0][len(head) :]
            role = parts[1]
            # gender on a person-based role: 🧑🏽‍🚒 -> 👩🏽‍🚒
            if head != "\U0001f9d1":
                src = "\U0001f9d1" + tone + ZWJ + role
                if src in universe:
                    found.add(Edit("gender", src, key, f"as a {PEOPLE[head]}"))
            # role or hair added to a plain person: 👩🏽 -> 👩🏽‍🚒
            if parts[0] in universe:
                if role in HAIR:
                    found.add(Edit("hair", parts[0], key, HAIR[role]))
                else:
                    neutral = universe.get("\U0001f9d1" + ZWJ + role)
                    if neutral is not None:
                        found.add(Edit("role", parts[0], key, role_phrase(neutral.names["en"])))
    return sorted(found, key=lambda e: (e.target, e.kind, e.source))
