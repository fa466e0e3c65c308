"""The writer -> reader round trip over every file kind, on the small valid M-BEIR tree of
tests/data_fixtures.py."""

from __future__ import annotations

import json

from data_fixtures import SPLITS, make_tree

from mmembed.data import mbeir
from mmembed.data.instructions import read_instructions
from mmembed.data.records import Candidate, Modality, src_json

# --------------------------------------------------------------------------- round trip


def test_round_trip_gives_identical_records(tmp_path):
    t = make_tree(tmp_path)
    lay = t.layout
    assert lay.query_sets() == sorted(t.queries, key=lambda k: (SPLITS.index(k[2]), k[0], k[1]))
    for (name, task, split), qs in t.queries.items():
        assert list(mbeir.read_queries(lay.query_file(name, task, split))) == qs
        qrels = mbeir.read_qrels(lay.qrels_file(name, task, split))
        assert qrels == {q.qid: set(q.pos_dids) for q in qs}
    for (name, task), pool in t.pools.items():
        assert list(mbeir.read_pool(lay.pool_file(name, task))) == pool
    for split, pool in t.globals.items():
        assert list(mbeir.read_pool(lay.global_pool_file(split))) == pool
    table = read_instructions(lay.instructions_file)
    assert table.rows == t.table.rows
    assert table.choose(9, "text", "image", fixed=1) == "Retrieve a picture matching this."
    drawn = {table.choose(9, "text", "image", seed=0, key=k) for k in range(40)}
    assert drawn == set(t.table.rows[0].prompts)  # a seeded draw reaches every prompt
    assert table.choose(9, "text", "image", seed=3, key="q1") == table.choose(
        9, "text", "image", seed=3, key="q1"
    )


def test_round_trip_keeps_unicode_and_nulls(tmp_path):
    path = tmp_path / "p.jsonl"
    cands = [
        Candidate("1:0", "café ☕ naïve — 東京", None, Modality.TEXT, src_json({"k": "ü"})),
        Candidate("1:1", None, "img/ü.png", Modality.IMAGE, None),
        Candidate("1:2", 'line\nbreak "quoted"', "a.png", Modality.IMAGE_TEXT, "{}"),
    ]
    assert mbeir.write_pool(path, cands) == 3
    assert list(mbeir.read_pool(path)) == cands
    assert [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]  # no temp file left behind


def test_written_files_use_the_reference_field_names(tmp_path):
    t = make_tree(tmp_path)
    q = json.loads(t.layout.query_file("webqa", 1, "train").read_text().splitlines()[0])
    assert list(q) == [
        "qid",
        "query_txt",
        "query_img_path",
        "query_modality",
        "query_src_content",
        "pos_cand_list",
        "neg_cand_list",
        "task_id",
    ]
    c = json.loads(t.layout.pool_file("mscoco", 0).read_text().splitlines()[0])
    assert set(c) == {"txt", "img_path", "modality", "did", "src_content"}
    line = t.layout.qrels_file("cirr", 7, "test").read_text().splitlines()[0]
    assert line == "8:4 0 8:5 1 7"


def test_split_specific_local_pool_is_preferred(tmp_path):
    lay = mbeir.Layout(tmp_path)
    assert lay.local_pool_for("mscoco", 0, "test") == lay.pool_file("mscoco", 0)
    specific = tmp_path / "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl"
    mbeir.write_pool(specific, [])
    assert lay.local_pool_for("mscoco", 0, "test") == specific
    assert lay.local_pool_for("mscoco", 0, "val") == lay.pool_file("mscoco", 0)
    assert specific in lay.pool_files()
