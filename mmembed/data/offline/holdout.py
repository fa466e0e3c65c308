"""Held-out sources of the offline benchmark (``build-offline --hold-out``): whole sources that no
training stage sees, so that the test split can measure transfer to them beside the in-domain
test queries (docs/offline_benchmark.md, "Held-out sources").

A spec names one source:

- ``style:gemojione``: the gemojione art style (tasks 4 and 8 draw it; nothing else does);
- ``lang:CODE``: a language of the CLDR names (``fr``, ``es``, ``de``, ``it``, ``pt``, ``nl``);
- ``category:NAME``: an emoji category as gemojione files it (``nature``, ``food``, ``people``,
  ...), for every emoji gemojione files under it (skin-tone and ZWJ variants follow their base).

Held-out queries and candidates are removed from the train and val splits only, after ids are
assigned, so the test split is byte-identical to the build without ``--hold-out`` and a model
trained on either build is scored on the same test queries. A training query goes with its
positives: one held-out positive removes the query, and a text that is the name in several
languages counts for each. ``hold_out.json`` in the build lists the specs, what was removed per
split, and the test qids each spec touches (there a shared text does not count). Knows the
content records of tasks.py; knows nothing of files or ids beyond the qids it is handed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mmembed.data.offline.emojis import LANGUAGES, TONES, ZWJ, Emoji, code_of
from mmembed.data.offline.tasks import Content, PendingQuery, TaskSet

FILE = "hold_out.json"
KINDS = ("style", "lang", "category")
STYLES = ("gemojione",)
TRAINING_SPLITS = ("train", "val")


class HoldOutError(ValueError):
    """A ``--hold-out`` spec that names no source this benchmark has."""


@dataclass(frozen=True, order=True)
class HoldOut:
    kind: str  # style | lang | category
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_hold_out(spec: str, categories: Iterable[str]) -> HoldOut:
    """``'lang:de'`` -> HoldOut('lang', 'de'); raises HoldOutError naming the valid values."""
    kind, sep, value = spec.strip().partition(":")
    kind, value = kind.strip().lower(), value.strip().lower()
    if not sep or kind not in KINDS or not value:
        raise HoldOutError(
            f"--hold-out {spec!r}: expected KIND:VALUE with KIND one of {', '.join(KINDS)} "
            "(e.g. style:gemojione, lang:de, category:nature)"
        )
    valid = {
        "style": STYLES,
        "lang": tuple(lang for lang in LANGUAGES if lang != "en"),
        "category": tuple(sorted(categories)),
    }[kind]
    if value not in valid:
        why = " (English is the language of every task's queries)" if value == "en" else ""
        raise HoldOutError(
            f"--hold-out {spec!r}: no {kind} {value!r}{why}; choose one of {', '.join(valid)}"
        )
    return HoldOut(kind, value)


def emoji_categories(universe: Mapping[str, Emoji], gem_categories: Mapping[str, str]) -> dict:
    """emoji file code -> gemojione category, for every emoji of the universe gemojione files
    (itself, its untoned form, or the untoned first part of its ZWJ sequence; a plain person
    part defers to the rest, so 'woman firefighter' follows 'firefighter' -> 'people')."""
    out = {}
    for key, e in universe.items():
        bare = "".join(c for c in key if c not in TONES)
        for k in (key, bare, bare.split(ZWJ)[0]):
            if k in gem_categories:
                out[e.code] = gem_categories[k]
                break
    return out


class Judge:
    """Decides whether a content or query touches a held-out source (from its ``src`` fields)."""

    def __init__(self, specs: Iterable[HoldOut], categories: Mapping[str, str]) -> None:
        self.specs = sorted(set(specs))
        self.categories = categories  # emoji file code -> category

    def touches(self, src: str, shared: bool = True) -> list[HoldOut]:
        """The specs a record with this ``src`` JSON touches. ``shared=False`` leaves out the
        languages of a text that is the name in several languages at once (e.g. 'taxi')."""
        info = json.loads(src) if src else {}
        codes, name_langs = set(), set()
        if "codepoints" in info:
            codes.add(info["codepoints"])
        for k in ("source", "target"):  # composed edits name emoji by their sequence
            if k in info:
                codes.add(code_of(info[k].replace("\ufe0f", "")))
        for owner in info.get("name_of", []):  # "code:lang" of every emoji a name names
            code, _, lang = owner.partition(":")
            codes.add(code)
            name_langs.add(lang)
        langs = {info["lang"]} if "lang" in info else set()
        for group in (name_langs, set(info.get("langs", []))):
            if shared or len(group) == 1:
                langs |= group
        hit = {
            "style": {info.get("style")},
            "lang": langs,
            "category": {self.categories.get(c) for c in codes},
        }
        return [s for s in self.specs if s.value in hit[s.kind]]

    def content(self, c: Content) -> bool:
        return bool(self.touches(c.src))

    def query(self, q: PendingQuery, shared: bool = True) -> list[HoldOut]:
        """Specs the query touches through itself or any of its positives."""
        found = set(self.touches(q.src, shared))
        for p in q.positives:
            found.update(self.touches(p.src, shared))
        return sorted(found)


def apply(tasks: list[TaskSet], judge: Judge) -> tuple[list[TaskSet], dict]:
    """The tasks without held-out training records, and what was removed per training split
    (queries and candidates). The test split is passed through unchanged."""
    removed = {s: {"queries": 0, "candidates": 0} for s in TRAINING_SPLITS}
    out = []
    for ts in tasks:
        queries, pools = dict(ts.queries), dict(ts.pools)
        for s in TRAINING_SPLITS:
            pools[s] = [c for c in ts.pools[s] if not judge.content(c)]
            queries[s] = [q for q in ts.queries[s] if not judge.query(q)]
            removed[s]["candidates"] += len(ts.pools[s]) - len(pools[s])
            removed[s]["queries"] += len(ts.queries[s]) - len(queries[s])
        out.append(TaskSet(ts.dataset, ts.task, queries, pools))
    return out, removed


def transfer_queries(tasks: list[TaskSet], judge: Judge, qid_of) -> dict[str, list[str]]:
    """spec -> sorted test qids whose query or positives touch it (``qid_of(query)`` gives a
    pending query's qid): the transfer subsets the evaluation reports. Stricter than removal: a
    text that names an emoji in several languages does not make a query about one of them."""
    out: dict[str, list[str]] = {str(s): [] for s in judge.specs}
    for ts in tasks:
        for q in ts.queries["test"]:
            for spec in judge.query(q, shared=False):
                out[str(spec)].append(qid_of(q))
    return {k: sorted(v, key=lambda d: tuple(map(int, d.split(":")))) for k, v in out.items()}
