"""Validation of M-BEIR trees: every planted problem is reported with its file, line and a
message that says what is wrong; strict mode stops at the first; the CLI exits non-zero."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from data_fixtures import edit_line, make_tree
from typer.testing import CliRunner

from mmembed.data import mbeir
from mmembed.data.cli import app
from mmembed.data.validate import validate_tree

POOL0 = "cand_pool/local/mbeir_mscoco_task0_cand_pool.jsonl"
POOL1 = "cand_pool/local/mbeir_webqa_task1_cand_pool.jsonl"
GTEST = "cand_pool/global/mbeir_union_test_cand_pool.jsonl"
Q0 = "query/test/mbeir_mscoco_task0_test.jsonl"
Q1 = "query/train/mbeir_webqa_task1_train.jsonl"
Q7 = "query/test/mbeir_cirr_task7_test.jsonl"
R0 = "qrels/test/mbeir_mscoco_task0_test_qrels.txt"
INSTR = "instructions/query_instructions.tsv"


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def _set(key, value):
    def fn(obj):
        obj[key] = value
        return obj

    return fn


def _drop(key):
    def fn(obj):
        del obj[key]
        return obj

    return fn


# (id, mutation of the tree root, expected file, expected line or None, message pattern)
CASES = [
    (
        "malformed-json",
        lambda r: edit_line(r / POOL0, 2, lambda o: '{"did": "9:1", '),
        POOL0,
        2,
        "malformed JSON",
    ),
    (
        "not-an-object",
        lambda r: edit_line(r / POOL0, 2, lambda o: "[1, 2]"),
        POOL0,
        2,
        "expected a JSON object",
    ),
    (
        "not-utf8",
        lambda r: (r / POOL1).write_bytes(
            (r / POOL1).read_bytes().replace(b"passage 3", b"passage \xff")
        ),
        POOL1,
        4,
        "not UTF-8",
    ),
    (
        "missing-field",
        lambda r: edit_line(r / Q0, 1, _drop("task_id")),
        Q0,
        1,
        "task_id: missing field",
    ),
    (
        "mistyped-field",
        lambda r: edit_line(r / Q0, 2, _set("pos_cand_list", "9:5")),
        Q0,
        2,
        "pos_cand_list: expected a list",
    ),
    (
        "mistyped-did",
        lambda r: edit_line(r / POOL0, 3, _set("did", 17)),
        POOL0,
        3,
        "did: expected a string",
    ),
    (
        "malformed-id",
        lambda r: edit_line(r / POOL0, 3, _set("did", "nine")),
        POOL0,
        3,
        "malformed id 'nine'",
    ),
    (
        "unknown-modality",
        lambda r: edit_line(r / POOL0, 4, _set("modality", "video")),
        POOL0,
        4,
        "unknown modality 'video'",
    ),
    (
        "modality-without-text",
        lambda r: edit_line(r / POOL0, 4, _set("modality", "image,text")),
        POOL0,
        4,
        "txt: modality 'image,text' needs text",
    ),
    (
        "query-modality-vs-task",
        lambda r: edit_line(r / Q0, 1, _set("query_modality", "image")),
        Q0,
        1,
        "query_img_path: modality 'image' needs an image",
    ),
    (
        "missing-image",
        lambda r: edit_line(r / POOL0, 5, _set("img_path", "images/nope.png")),
        POOL0,
        5,
        "image file not found",
    ),
    (
        "empty-image",
        lambda r: (r / "images/mscoco/5.png").write_bytes(b""),
        POOL0,
        6,
        "image file is empty",
    ),
    (
        "missing-query-image",
        lambda r: edit_line(r / Q7, 2, _set("query_img_path", "images/x.png")),
        Q7,
        2,
        "query_img_path: image file not found",
    ),
    (
        "duplicate-did",
        lambda r: edit_line(r / POOL0, 3, _set("did", "9:0")),
        POOL0,
        3,
        "duplicate did '9:0' (first on line 1)",
    ),
    (
        "duplicate-did-global",
        lambda r: _append(
            r / GTEST,
            json.dumps(
                {
                    "did": "2:3",
                    "txt": "again",
                    "img_path": None,
                    "modality": "text",
                    "src_content": None,
                }
            )
            + "\n",
        ),
        GTEST,
        26,
        "duplicate did '2:3' (first on line 16)",
    ),
    (
        "duplicate-qid",
        lambda r: edit_line(r / Q0, 2, _set("qid", "9:4")),
        Q0,
        2,
        "duplicate qid '9:4'",
    ),
    (
        "unknown-task",
        lambda r: edit_line(r / Q0, 1, _set("task_id", 5)),
        Q0,
        1,
        "unknown task id 5",
    ),
    (
        "task-vs-file",
        lambda r: edit_line(r / Q0, 1, _set("task_id", 1)),
        Q0,
        1,
        "task_id: task 1 but the file name says task 0",
    ),
    (
        "pos-unknown-did",
        lambda r: edit_line(r / Q0, 2, _set("pos_cand_list", ["9:5", "9:77"])),
        Q0,
        2,
        "pos_cand_list: did '9:77' is in neither the local pool",
    ),
    (
        "neg-unknown-did",
        lambda r: edit_line(r / Q1, 1, _set("neg_cand_list", ["2:99"])),
        Q1,
        1,
        "neg_cand_list: did '2:99' is in neither",
    ),
    (
        "pos-is-neg",
        lambda r: edit_line(r / Q1, 1, _set("neg_cand_list", ["2:0"])),
        Q1,
        1,
        "'2:0' is also a positive",
    ),
    (
        "empty-positives",
        lambda r: edit_line(r / Q1, 2, _set("pos_cand_list", [])),
        Q1,
        2,
        "pos_cand_list: is empty",
    ),
    (
        "qid-dataset-vs-file",
        lambda r: edit_line(r / Q0, 1, _set("qid", "3:4")),
        Q0,
        1,
        "qid: dataset 3 but mscoco has dataset id 9",
    ),
    (
        "qrels-unknown-did",
        lambda r: _append(r / R0, "9:4 0 9:555 1 0\n"),
        R0,
        3,
        "did '9:555' is in no candidate pool",
    ),
    (
        "qrels-unknown-qid",
        lambda r: _append(r / R0, "9:77 0 9:1 1 0\n"),
        R0,
        3,
        "qid '9:77' is not in",
    ),
    (
        "qrels-unknown-task",
        lambda r: _append(r / R0, "9:4 0 9:1 1 5\n"),
        R0,
        3,
        "unknown task id '5'",
    ),
    (
        "qrels-wrong-task",
        lambda r: _append(r / R0, "9:4 0 9:4 1 3\n"),
        R0,
        3,
        "task 3 but the file name says task 0",
    ),
    ("qrels-columns", lambda r: _append(r / R0, "9:4 9:1\n"), R0, 3, "expected 5 columns"),
    (
        "qrels-extra-positive",
        lambda r: _append(r / R0, "9:4 0 9:1 1 0\n"),
        R0,
        3,
        "9:4 -> 9:1 is not in that query's pos_cand_list",
    ),
    (
        "qrels-missing-positive",
        lambda r: (r / R0).write_text("9:4 0 9:4 1 0\n"),
        Q0,
        2,
        "positive '9:5' is missing from mbeir_mscoco_task0_test_qrels.txt",
    ),
    (
        "no-local-pool",
        lambda r: (r / "cand_pool/local/mbeir_cirr_task7_cand_pool.jsonl").unlink(),
        Q7,
        None,
        "no local candidate pool",
    ),
    ("no-qrels", lambda r: (r / R0).unlink(), Q0, None, "no qrels file"),
    (
        "orphan-qrels",
        lambda r: (r / "qrels/test/mbeir_edis_task2_test_qrels.txt").write_text(""),
        "qrels/test/mbeir_edis_task2_test_qrels.txt",
        None,
        "without a matching query file",
    ),
    (
        "test-positive-not-local",
        lambda r: (
            _append(
                r / GTEST,
                json.dumps(
                    {
                        "did": "9:50",
                        "txt": None,
                        "img_path": "images/mscoco/0.png",
                        "modality": "image",
                    }
                )
                + "\n",
            )
            or edit_line(r / Q0, 1, _set("pos_cand_list", ["9:50"]))
        ),
        Q0,
        1,
        "positive '9:50' is missing from the local pool",
    ),
    (
        "instr-missing-row",
        lambda r: (r / INSTR).write_text(
            "\n".join(x for x in (r / INSTR).read_text().splitlines() if "WebQA" not in x) + "\n"
        ),
        Q1,
        1,
        "no instruction for (dataset_id, query, candidate) = (2, 'text', 'text')",
    ),
    (
        "instr-duplicate-key",
        lambda r: _append(r / INSTR, "text\ttext\tWebQA\t2\tAgain.\n"),
        INSTR,
        6,
        "duplicate key (2, 'text', 'text') (first on line 4)",
    ),
    (
        "instr-bad-modality",
        lambda r: _append(r / INSTR, "audio\ttext\tWebQA\t2\tListen.\n"),
        INSTR,
        6,
        "unknown modality 'audio'",
    ),
    (
        "instr-wrong-dataset-id",
        lambda r: _append(r / INSTR, "image\timage\tMSCOCO\t4\tSame.\n"),
        INSTR,
        6,
        "dataset_id: 4 but M-BEIR's MSCOCO is dataset 9",
    ),
    (
        "instr-bad-header",
        lambda r: (r / INSTR).write_text("a\tb\n"),
        INSTR,
        1,
        "header has no 'query_modality' column",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_planted_error_is_reported_with_file_and_line(tmp_path, case):
    _, mutate, rel, line, pattern = case
    make_tree(tmp_path)
    mutate(tmp_path)
    report = validate_tree(tmp_path)
    hits = [
        e
        for e in report.errors.errors
        if e.path == str(tmp_path / rel)
        and e.line == line
        and re.search(re.escape(pattern), str(e))
    ]
    assert hits, f"expected {rel}:{line} {pattern!r}; got:\n" + "\n".join(
        map(str, report.errors.errors)
    )
    assert not report.ok
    summary = {f.path: f.errors for f in report.files}
    if str(tmp_path / rel) in summary:  # the per-file table counts it against that file
        assert summary[str(tmp_path / rel)] >= 1
    # every message says where and what, and most say what to do
    for e in report.errors.errors:
        assert str(e).startswith(e.path) and e.problem


def test_clean_tree_has_no_errors_and_a_summary_per_file(tmp_path):
    make_tree(tmp_path)
    report = validate_tree(tmp_path)
    assert report.ok and report.n_errors == 0 and not report.warnings
    kinds = [f.kind for f in report.files]
    assert kinds.count("local pool") == 4 and kinds.count("instructions") == 1
    assert (
        sum(k.startswith("queries") for k in kinds)
        == 12
        == sum(k.startswith("qrels") for k in kinds)
    )
    pool = next(f for f in report.files if f.path.endswith("mbeir_cirr_task7_cand_pool.jsonl"))
    assert pool.records == 7 and pool.errors == 0


def test_report_and_skip_collects_errors_in_every_file(tmp_path):
    make_tree(tmp_path)
    edit_line(tmp_path / POOL0, 2, lambda o: "{broken")
    edit_line(tmp_path / Q1, 1, _set("neg_cand_list", ["2:99"]))
    _append(tmp_path / R0, "9:4 0 9:1 1 0\n")
    report = validate_tree(tmp_path)
    assert {Path(e.path).name for e in report.errors.errors} >= {
        Path(POOL0).name,
        Path(Q1).name,
        Path(R0).name,
    }
    by_file = {Path(f.path).name: f.errors for f in report.files}
    assert by_file[Path(POOL0).name] >= 1 and by_file[Path(R0).name] == 1
    # a bad pool line does not cascade: the dids of other lines are still known
    assert not any("9:0" in str(e) and "neither" in str(e) for e in report.errors.errors)


def test_strict_mode_stops_at_the_first_error(tmp_path):
    make_tree(tmp_path)
    edit_line(tmp_path / POOL0, 2, lambda o: "{broken")
    edit_line(tmp_path / POOL0, 4, lambda o: "{broken too")
    edit_line(tmp_path / Q1, 1, _set("neg_cand_list", ["2:99"]))
    report = validate_tree(tmp_path, strict=True)
    assert report.stopped is not None and report.n_errors == 1
    assert report.stopped.path == str(tmp_path / POOL0) and report.stopped.line == 2
    assert len(report.errors) == 0  # nothing after the first was read


def test_no_images_skips_image_checks_and_max_errors_caps_messages(tmp_path):
    make_tree(tmp_path)
    for i in range(6):
        (tmp_path / f"images/mscoco/{i}.png").unlink()
    report = validate_tree(tmp_path)
    assert len(report.errors) == 6 + 6  # six pool lines and the six image queries of task 3
    assert validate_tree(tmp_path, check_images=False).ok
    capped = validate_tree(tmp_path, max_errors=3)
    assert len(capped.errors) == 12 and len(capped.errors.errors) == 3


def test_split_specific_pool_and_test_only_local_pools(tmp_path):
    """The offline benchmark's layout: local pools hold test candidates only; train and val
    positives live in their split's global pool. Real M-BEIR's MSCOCO has a test pool file."""
    t = make_tree(tmp_path)
    lay = t.layout
    test_dids = {
        d for (n, k, s), qs in t.queries.items() if s == "test" for q in qs for d in q.pos_dids
    }
    for (name, task), pool in t.pools.items():
        mbeir.write_pool(lay.pool_file(name, task), [c for c in pool if c.did in test_dids])
    assert validate_tree(tmp_path).ok
    # a split-specific pool replaces the task pool for its split only
    specific = tmp_path / "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl"
    mbeir.write_pool(specific, [c for c in t.pools[("mscoco", 0)] if c.did == "9:4"])
    report = validate_tree(tmp_path)
    assert [(Path(e.path).name, e.line) for e in report.errors.errors] == [(Path(Q0).name, 2)]
    assert "mbeir_mscoco_task0_test_cand_pool.jsonl" in str(report.errors.errors[0])


WIDE = {"COLUMNS": "250"}


def _error_lines(output: str) -> int:
    return sum(line.startswith("error ") for line in output.splitlines())


def test_cli_reports_each_planted_error_with_file_and_line(tmp_path):
    make_tree(tmp_path)
    edit_line(tmp_path / POOL0, 2, lambda o: "{broken")
    edit_line(tmp_path / Q0, 1, _set("query_modality", "video"))
    edit_line(tmp_path / Q1, 2, _set("pos_cand_list", ["2:42"]))
    _append(tmp_path / R0, "9:5 0 9:3 1 0\n")
    runner = CliRunner()
    res = runner.invoke(app, ["validate", str(tmp_path)], env=WIDE)
    assert res.exit_code == 1, res.output
    for rel, line, what in (
        (POOL0, 2, "malformed JSON"),
        (Q0, 1, "unknown modality 'video'"),
        (Q1, 2, "'2:42'"),
        (R0, 3, "not in that query's pos_cand_list"),
    ):
        assert re.search(
            re.escape(f"{tmp_path / rel}:{line}: ") + ".*" + re.escape(what), res.output
        ), (rel, res.output)
    assert "error(s)" in res.output
    strict = runner.invoke(app, ["validate", str(tmp_path), "--strict"], env=WIDE)
    assert strict.exit_code == 1 and _error_lines(strict.output) == 1
    assert f"{tmp_path / POOL0}:2:" in strict.output and "--strict" in strict.output
    out = tmp_path / "report.json"
    runner.invoke(app, ["validate", str(tmp_path), "--json", str(out), "--max-errors", "1"])
    rep = json.loads(out.read_text())
    assert rep["ok"] is False and rep["n_errors"] >= 4 and rep["errors"][0]["line"] == 2


def test_cli_exits_zero_on_a_clean_tree(tmp_path):
    make_tree(tmp_path)
    res = CliRunner().invoke(app, ["validate", str(tmp_path)], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and "mbeir_webqa_task1_cand_pool.jsonl" in res.output


def test_missing_root_is_an_error(tmp_path):
    report = validate_tree(tmp_path / "nope")
    assert not report.ok and "data root is not a folder" in str(report.errors.errors[0])


def test_build_offline_delegates_to_the_offline_builder(tmp_path, monkeypatch):
    import sys
    import types

    import typer

    calls = []

    def build_offline_command(
        out: Path = typer.Option(..., "--out"), seed: int = typer.Option(0, "--seed")
    ) -> None:
        calls.append((out, seed))

    fake = types.ModuleType("mmembed.data.offline.cli")
    fake.build_offline_command = build_offline_command
    monkeypatch.setitem(sys.modules, "mmembed.data.offline.cli", fake)
    runner = CliRunner()
    res = runner.invoke(app, ["build-offline", "--out", str(tmp_path), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert calls == [(tmp_path, 3)]
    helped = runner.invoke(app, ["build-offline", "--help"], env=WIDE)
    assert helped.exit_code == 0 and "--out" in helped.output and "--seed" in helped.output
    bad = runner.invoke(app, ["build-offline", "--bogus"])
    assert bad.exit_code == 2 and calls == [(tmp_path, 3)]
    monkeypatch.setitem(sys.modules, "mmembed.data.offline.cli", None)  # not installed
    missing = runner.invoke(app, ["build-offline", "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "not part of this build" in missing.output


def test_union_train_queries_are_checked_against_the_global_train_pool(tmp_path):
    """Real M-BEIR also ships query/union_train/: every task's training queries in one file."""
    t = make_tree(tmp_path)
    union = tmp_path / "query/union_train/mbeir_union_up_train.jsonl"
    train = [q for (n, k, s), qs in sorted(t.queries.items()) if s == "train" for q in qs]
    mbeir.write_queries(union, train)
    report = validate_tree(tmp_path)
    assert report.ok, [str(e) for e in report.errors.errors]
    assert any(f.path == str(union) and f.records == len(train) for f in report.files)
    edit_line(union, 3, _set("pos_cand_list", ["9:888"]))
    errs = [(e.path, e.line) for e in validate_tree(tmp_path).errors.errors]
    assert errs == [(str(union), 3)]


# ----------------------------------------------------------------- datasets of one's own (#14)


def _own_tree(root: Path, sets: dict[str, int]) -> None:
    """Query files named by ``sets`` (name -> dataset id), task 1, test split, own pools."""
    from data_fixtures import Tree, write_tree

    from mmembed.data.records import Candidate, Modality, Query

    t = Tree(root)
    for name, ds in sets.items():
        t.pools[(name, 1)] = [
            Candidate(f"{ds}:{i}", f"passage {i}", None, Modality.TEXT) for i in range(6)
        ]
        t.queries[(name, 1, "test")] = [
            Query(f"{ds}:{k}", f"question {k}", None, Modality.TEXT, 1, [f"{ds}:{k}"], [])
            for k in range(3)
        ]
    write_tree(t)


@pytest.mark.parametrize("dataset_id", [23, 858, 859, 900, 123_456_789])
def test_qrels_are_checked_against_positives_for_any_dataset_id(tmp_path, dataset_id):
    _own_tree(tmp_path, {"mydata": dataset_id})
    assert validate_tree(tmp_path).ok
    qrels = tmp_path / "qrels/test/mbeir_mydata_task1_test_qrels.txt"
    lines = qrels.read_text().splitlines()
    lines[0] = f"{dataset_id}:0 0 {dataset_id}:5 1 1"  # a corrupted line: wrong did
    qrels.write_text("\n".join(lines) + "\n")
    report = validate_tree(tmp_path)
    msgs = [str(e) for e in report.errors.errors]
    assert len(msgs) == 2, msgs
    assert any("is not in that query's pos_cand_list" in m for m in msgs)
    assert any(f"positive '{dataset_id}:0' is missing" in m for m in msgs)


def test_two_query_files_with_one_dataset_id_and_task_are_refused(tmp_path):
    _own_tree(tmp_path, {"mydata": 900, "other": 900})
    report = validate_tree(tmp_path)
    clash = [e for e in report.errors.errors if "is also the pair of" in e.problem]
    assert len(clash) == 1 and clash[0].path.endswith("mbeir_other_task1_test.jsonl")
    assert "mbeir_mydata_task1_test.jsonl" in clash[0].problem and clash[0].hint


def test_huge_dataset_ids_are_reported_not_overflowed(tmp_path):
    _own_tree(tmp_path, {"mydata": 900})
    q = tmp_path / "query/test/mbeir_mydata_task1_test.jsonl"
    _append(
        q,
        json.dumps(
            {"qid": "99999999999999999999:1", "query_txt": "x", "query_img_path": None,
             "query_modality": "text", "pos_cand_list": ["900:1"], "task_id": 1}
        ) + "\n",
    )  # fmt: skip
    report = validate_tree(tmp_path)
    assert any(e.line == 4 for e in report.errors.errors), [str(e) for e in report.errors.errors]


def test_null_negatives_and_empty_files_are_reported(tmp_path):
    _own_tree(tmp_path, {"mydata": 900})
    q = tmp_path / "query/test/mbeir_mydata_task1_test.jsonl"
    edit_line(q, 2, _set("neg_cand_list", None))
    (tmp_path / "cand_pool/local/mbeir_empty_task1_cand_pool.jsonl").write_text("")
    report = validate_tree(tmp_path)
    warned = [w for w in report.warnings if w.field == "neg_cand_list"]
    assert len(warned) == 1 and warned[0].line == 2 and "null" in warned[0].problem
    assert any("holds no candidates" in str(e) for e in report.errors.errors)


def test_results_table_shows_each_clashing_file_its_own_numbers(tmp_path):
    from mmembed.eval.mbeir import Report, TaskFiles, TaskResult
    from mmembed.eval.tables import markdown

    def task(name):
        return TaskFiles(name, name, 900, 1, "test", tmp_path / f"mbeir_{name}_task1_test.jsonl",
                       tmp_path / "p", tmp_path / "q")  # fmt: skip

    tasks = [task("mydata"), task("other")]
    results = [
        TaskResult(t.dataset, 900, 1, "test", "local", 3, {"R@5": v}, "R@5")
        for t, v in zip(tasks, (11.0, 77.0), strict=True)
    ]
    md = markdown(Report("test", tasks, results))
    rows = [line for line in md.splitlines() if line.startswith("| 1: text")]
    assert any("mydata" in r and "11.0" in r for r in rows)
    assert any("other" in r and "77.0" in r for r in rows)
    assert "share dataset id 900 and task 1" in md
