"""mmembed.data.wordnet, the one WordNet parser, on hand-written lines in WordNet's own format
(the real files are read in test_offline_parts.py): fields as written, the licence header
skipped, sense counts keyed by lemma, synset type, lexicographer file and lex id."""

from __future__ import annotations

from mmembed.data.wordnet import SynsetLine, iter_synset_lines, read_sense_counts

DATA = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  \n"
    "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | a member"
    ' of the genus Canis; occurs in many breeds; "the dog barked all night"  \n'
    "00001740 00 a 01 able 0 005 = 05207437 n 0000 | (usually followed by `to') having the"
    " necessary means  \n"
    "01123456 00 s 02 big(a) 0 large 1 000 | above average in size  \n"
)


def test_synset_lines_keep_fields_as_written(tmp_path):
    path = tmp_path / "data.noun"
    path.write_text(DATA, encoding="utf-8")
    lines = list(iter_synset_lines(path))
    assert [s.offset for s in lines] == ["02084071", "00001740", "01123456"]
    dog = lines[0]
    assert dog == SynsetLine(
        "02084071",
        5,
        "n",
        (("dog", 0), ("domestic_dog", 0), ("Canis_familiaris", 0)),
        'a member of the genus Canis; occurs in many breeds; "the dog barked all night"',
    )
    assert lines[2].ss_type == "s" and lines[2].words == (("big(a)", 0), ("large", 1))


def test_sense_counts(tmp_path):
    path = tmp_path / "cntlist.rev"
    path.write_text("dog%1:05:00:: 1 42\nDog%1:05:00:: 2 3\nbig%5:00:01:large:00 1 7\n")
    counts = read_sense_counts(path)
    assert counts[("dog", 1, 5, 0)] == 45  # lemmas are folded to lower case
    assert counts[("big", 5, 0, 1)] == 7
    assert counts[("cat", 1, 5, 0)] == 0
