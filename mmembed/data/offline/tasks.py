"""The offline benchmark's (dataset, task) pairs: for each split, its queries (with positives) and
its candidate pool, as plain content records before ids are assigned. Knows the emoji universe
and WordNet; knows nothing of files, ids or rendering."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from mmembed.data.offline.assets import Synset
from mmembed.data.offline.emojis import LANGUAGES, Edit, Emoji

SPLITS = ("train", "val", "test")
DATASETS = {"NotoEmoji": 10, "Gemojione": 11, "WordNet": 12}  # ids clear of M-BEIR's 0-9
CARD_LANGS = ("en", "fr", "es", "de")  # languages of the gemojione name cards (task 8)
MAX_KEYWORD_POSITIVES = 12  # keywords shared by more emoji than this are too vague to ask


def src(**content) -> str:
    return json.dumps(content, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class Content:
    """One candidate's content; ``(dataset, split, kind, key)`` identifies it (one did)."""

    dataset: str
    kind: str
    key: str
    text: str | None
    image: str | None
    src: str


@dataclass(frozen=True)
class PendingQuery:
    dataset: str
    task: int
    split: str
    key: str  # unique within (dataset, task, split)
    text: str | None
    image: str | None
    src: str
    positives: tuple[Content, ...]


@dataclass
class TaskSet:
    dataset: str
    task: int
    queries: dict[str, list[PendingQuery]]
    pools: dict[str, list[Content]]


def noto_path(e: Emoji) -> str:
    return f"images/noto/{e.code}.png"


def gem_path(e: Emoji) -> str:
    return f"images/gemojione/{e.code}.png"


def _choice(options: list | tuple, seed: int, *key: object):
    return random.Random("|".join(map(str, (seed, *key)))).choice(list(options))


class EmojiTasks:
    """Builds every emoji (dataset, task) pair from a split assignment of the universe."""

    def __init__(self, universe: dict[str, Emoji], split: dict[str, str], edits: list[Edit],
                 gem: set[str], seed: int) -> None:  # fmt: skip
        self.u = universe
        self.split = split  # emoji key -> split, for the selected emoji only
        self.edits = [e for e in edits if e.target in split and e.source in universe]
        self.gem = gem  # emoji keys drawn in the gemojione style
        self.seed = seed
        self.by_split: dict[str, list[Emoji]] = defaultdict(list)
        for key in sorted(split):
            self.by_split[split[key]].append(universe[key])
        self.names = {s: self._names(s) for s in SPLITS}

    # -- content stores (one Content per distinct thing per split) --------------------------

    def noto(self, e: Emoji) -> Content:
        return Content("NotoEmoji", "noto", e.key, None, noto_path(e),
                       src(emoji=e.seq, codepoints=e.code, name=e.names["en"], style="noto"))  # fmt: skip

    def _names(self, split: str) -> dict[str, Content]:
        owners: dict[str, list[str]] = defaultdict(list)
        for e in self.by_split[split]:
            for lang in sorted(e.names):
                if lang == "en" or not e.toned:  # other languages only for untoned emoji
                    owners[e.names[lang]].append(f"{e.code}:{lang}")
        return {t: Content("NotoEmoji", "name", t, t, None, src(name_of=sorted(o)))
                for t, o in owners.items()}  # fmt: skip

    def card(self, e: Emoji) -> Content:
        return Content("NotoEmoji", "card", e.key, e.names["en"], noto_path(e),
                       src(emoji=e.seq, codepoints=e.code, lang="en", style="noto"))  # fmt: skip

    def gem_image(self, e: Emoji) -> Content:
        return Content("Gemojione", "gem", e.key, None, gem_path(e),
                       src(emoji=e.seq, codepoints=e.code, name=e.names["en"], style="gemojione"))  # fmt: skip

    def gem_card(self, e: Emoji, lang: str) -> Content:
        text = e.names[lang]
        return Content("Gemojione", "gemcard", f"{e.key}|{text}", text, gem_path(e),
                       src(emoji=e.seq, codepoints=e.code, style="gemojione",
                           langs=sorted(x for x in CARD_LANGS if e.names.get(x) == text)))  # fmt: skip

    # -- tasks -----------------------------------------------------------------------------

    def _each_split(
        self, dataset: str, task: int, fn: Callable[[str], tuple[list, list]]
    ) -> TaskSet:
        queries, pools = {}, {}
        for s in SPLITS:
            qs, pool = fn(s)
            queries[s] = sorted(qs, key=lambda q: q.key)
            pools[s] = sorted(set(pool), key=lambda c: (c.kind, c.key))
        return TaskSet(dataset, task, queries, pools)

    def task0(self) -> TaskSet:
        """text -> image: an emoji's English CLDR name -> its Noto image."""

        def one(s: str):
            pool = [self.noto(e) for e in self.by_split[s]]
            qs = [PendingQuery("NotoEmoji", 0, s, e.key, e.names["en"], None,
                               src(emoji=e.seq, codepoints=e.code), (self.noto(e),))
                  for e in self.by_split[s]]  # fmt: skip
            return qs, pool

        return self._each_split("NotoEmoji", 0, one)

    def task3(self) -> TaskSet:
        """image -> text: a Noto image -> its English CLDR name."""

        def one(s: str):
            names = self.names[s]
            pool = [names[e.names["en"]] for e in self.by_split[s]]
            qs = [PendingQuery("NotoEmoji", 3, s, e.key, None, noto_path(e),
                               src(emoji=e.seq, codepoints=e.code), (names[e.names["en"]],))
                  for e in self.by_split[s]]  # fmt: skip
            return qs, pool

        return self._each_split("NotoEmoji", 3, one)

    def task2(self) -> TaskSet:
        """text -> (image, text): a CLDR keyword -> every card (image + name) annotated with it."""

        def one(s: str):
            plain = [e for e in self.by_split[s] if not e.toned]
            pool = [self.card(e) for e in plain]
            having: dict[str, list[Emoji]] = defaultdict(list)
            for e in plain:
                for k in sorted({k.lower() for k in e.keywords}):
                    having[k].append(e)
            qs = [PendingQuery("NotoEmoji", 2, s, k, k, None, src(keyword=k),
                               tuple(self.card(e) for e in es))
                  for k, es in sorted(having.items()) if len(es) <= MAX_KEYWORD_POSITIVES]  # fmt: skip
            return qs, pool

        return self._each_split("NotoEmoji", 2, one)

    def task6(self) -> TaskSet:
        """(image, text) -> text: a Noto image + "its name in French" -> that French name."""
        templates = ("its name in {L}", "what is this called in {L}?", "the {L} name of this",
                     "name this in {L}")  # fmt: skip

        def one(s: str):
            names = self.names[s]
            plain = [e for e in self.by_split[s] if not e.toned]
            pool = [names[e.names[lang]] for e in plain for lang in e.names]
            qs = []
            for e in plain:
                langs = sorted(lang for lang in e.names if lang != "en")
                if not langs:
                    continue
                lang = _choice(langs, self.seed, "t6lang", e.key)
                text = _choice(templates, self.seed, "t6text", e.key).format(L=LANGUAGES[lang])
                qs.append(PendingQuery("NotoEmoji", 6, s, e.key, text, noto_path(e),
                                       src(emoji=e.seq, codepoints=e.code, lang=lang),
                                       (names[e.names[lang]],)))  # fmt: skip
            return qs, pool

        return self._each_split("NotoEmoji", 6, one)

    def task7(self) -> TaskSet:
        """(image, text) -> image: an emoji + an edit ("as a firefighter") -> the edited emoji."""
        by_target: dict[str, list[Edit]] = defaultdict(list)
        for ed in self.edits:
            by_target[self.split[ed.target]].append(ed)

        def one(s: str):
            pool = [self.noto(e) for e in self.by_split[s]]
            qs = []
            for ed in by_target[s]:
                a, b = self.u[ed.source], self.u[ed.target]
                qs.append(PendingQuery("NotoEmoji", 7, s, f"{ed.target}|{ed.kind}|{ed.source}",
                                       ed.text, noto_path(a),
                                       src(edit=ed.kind, source=a.seq, source_name=a.names["en"],
                                           target=b.seq, target_name=b.names["en"]),
                                       (self.noto(b),)))  # fmt: skip
            return qs, pool

        return self._each_split("NotoEmoji", 7, one)

    def task4(self) -> TaskSet:
        """image -> image: a Noto image -> the same emoji drawn in the gemojione style."""

        def one(s: str):
            drawn = [e for e in self.by_split[s] if e.key in self.gem]
            qs = [PendingQuery("Gemojione", 4, s, e.key, None, noto_path(e),
                               src(emoji=e.seq, codepoints=e.code), (self.gem_image(e),))
                  for e in drawn]  # fmt: skip
            return qs, [self.gem_image(e) for e in drawn]

        return self._each_split("Gemojione", 4, one)

    def task8(self) -> TaskSet:
        """(image, text) -> (image, text): a Noto image + "its German card" -> the gemojione
        card of that emoji carrying its German name."""
        templates = ("its {L} card", "the card naming this in {L}", "same emoji, labelled in {L}",
                     "find its card in {L}")  # fmt: skip

        def one(s: str):
            drawn = [e for e in self.by_split[s]
                     if e.key in self.gem and not e.toned and all(x in e.names for x in CARD_LANGS)]  # fmt: skip
            pool = [self.gem_card(e, lang) for e in drawn for lang in CARD_LANGS]
            qs = []
            for e in drawn:
                lang = _choice(CARD_LANGS, self.seed, "t8lang", e.key)
                text = _choice(templates, self.seed, "t8text", e.key).format(L=LANGUAGES[lang])
                qs.append(PendingQuery("Gemojione", 8, s, e.key, text, noto_path(e),
                                       src(emoji=e.seq, codepoints=e.code, lang=lang),
                                       (self.gem_card(e, lang),)))  # fmt: skip
            return qs, pool

        return self._each_split("Gemojione", 8, one)

    def all(self) -> list[TaskSet]:
        return [self.task0(), self.task2(), self.task3(), self.task6(), self.task7(),
                self.task4(), self.task8()]  # fmt: skip


# --------------------------------------------------------------------------- WordNet

_WORD = re.compile(r"[a-z0-9]+")


def leaks(s: Synset) -> bool:
    """True when the definition contains one of the synset's own lemmas (a lexical give-away)."""
    words = set(_WORD.findall(s.definition.lower()))
    for lemma in s.lemmas:
        toks = _WORD.findall(lemma.lower())
        if toks and (all(t in words for t in toks) or any(len(t) > 3 and t in words for t in toks)):
            return True
    return False


def synset_text(s: Synset) -> str:
    return f"{', '.join(s.lemmas)} ({s.pos})"


def wordnet_task(chosen: dict[str, list[Synset]]) -> TaskSet:
    """text -> text: a WordNet definition -> the entry (lemmas + part of speech) it defines."""
    queries, pools = {}, {}
    for s in SPLITS:
        owners: dict[str, list[str]] = defaultdict(list)
        for syn in chosen.get(s, []):
            owners[synset_text(syn)].append(syn.key)
        entries = {t: Content("WordNet", "synset", t, t, None, src(synsets=sorted(o)))
                   for t, o in owners.items()}  # fmt: skip
        pools[s] = sorted(entries.values(), key=lambda c: c.key)
        queries[s] = sorted(
            (PendingQuery("WordNet", 1, s, syn.key, syn.definition, None,
                          src(synset=syn.key, pos=syn.pos, lemmas=list(syn.lemmas)),
                          (entries[synset_text(syn)],))
             for syn in chosen.get(s, [])), key=lambda q: q.key)  # fmt: skip
    return TaskSet("WordNet", 1, queries, pools)
