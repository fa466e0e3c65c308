"""WordNet 3.0 database files, as Debian's ``wordnet-base`` installs them: the one parser of the
``data.<pos>`` synset lines and of the sense counts in ``cntlist.rev``. Each synset line comes
back with its fields as written (offset, lexicographer file, synset type, words with their lex
ids, the gloss); what a lemma or a definition is (dropping ``(p)`` markers or quoted examples)
is each caller's choice. Knows nothing of tasks, benchmarks or where the files are installed
beyond Debian's default folder."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WORDNET_DIR", "SynsetLine", "iter_synset_lines", "read_sense_counts"]

WORDNET_DIR = Path("/usr/share/wordnet")  # Debian's wordnet-base


@dataclass(frozen=True)
class SynsetLine:
    """One line of a ``data.<pos>`` file (WordNet's wndb(5) format)."""

    offset: str  # 8 digits, as written; unique within its file
    lex_filenum: int
    ss_type: str  # n (noun), v (verb), a (adjective), s (satellite adjective), r (adverb)
    words: tuple[tuple[str, int], ...]  # (word as written, with "_" and any "(p)" marker; lex id)
    gloss: str  # everything after "|", stripped: definition(s) and quoted examples


def iter_synset_lines(path: str | Path) -> Iterator[SynsetLine]:
    """Every synset of one ``data.<pos>`` file, in file order; the licence header (lines that
    start with a space) is skipped. Undecodable bytes are replaced, not fatal."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            f_ = head.split()  # offset lex_filenum ss_type w_cnt (word lex_id)* p_cnt ...
            n_words = int(f_[3], 16)
            words = tuple((f_[4 + 2 * i], int(f_[5 + 2 * i], 16)) for i in range(n_words))
            yield SynsetLine(f_[0], int(f_[1]), f_[2], words, gloss.strip())


def read_sense_counts(path: str | Path) -> Counter:
    """Sense-tagged frequencies from ``cntlist.rev``, keyed by
    (lemma in lower case, synset type number 1-5, lexicographer file, lex id)."""
    counts: Counter = Counter()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            key, _, tags = line.split()
            lemma, rest = key.split("%", 1)
            ss_type, lex_filenum, lex_id = rest.split(":")[:3]
            counts[(lemma.lower(), int(ss_type), int(lex_filenum), int(lex_id))] += int(tags)
    return counts
