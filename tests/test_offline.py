"""The offline benchmark: a small build checked for M-BEIR layout, disjoint splits, consistent
qrels, composed queries that need both image and text, determinism and clean validation."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import pytest

from mmembed.data.errors import ErrorLog
from mmembed.data.instructions import read_instructions
from mmembed.data.mbeir import SPLITS, Layout, read_pool, read_qrels, read_queries
from mmembed.data.offline import build
from mmembed.data.offline.emojis import group_of
from mmembed.data.records import TASKS, Modality

LIMIT = 6


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("offline") / "data"
    manifest = build(root, limit=LIMIT, show_progress=False, workers=1)
    return root, manifest


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _sets(root: Path) -> list[tuple[str, int, str]]:
    return Layout(root).query_sets()


def _queries(root: Path, name: str, task: int, split: str):
    return list(read_queries(Layout(root).query_file(name, task, split), ErrorLog(strict=True)))


def _pool(path: Path) -> dict:
    return {c.did: c for c in read_pool(path, ErrorLog(strict=True))}


def test_all_eight_tasks_in_mbeir_layout(built):
    root, manifest = built
    layout = Layout(root)
    rows = {(r["dataset"], r["task"]): r for r in manifest["tasks"]}
    assert sorted({t for _, t in rows}) == sorted(TASKS)  # 0,1,2,3,4,6,7,8
    assert all(r["dataset_id"] >= 10 for r in rows.values())  # clear of M-BEIR's ids
    table = read_instructions(layout.instructions_file)
    for (name, task), row in rows.items():
        qmod, cmod = TASKS[task]
        assert len(table.prompts(row["dataset_id"], qmod, cmod)) >= 3
        local = _pool(layout.pool_file(name, task))
        assert local and all(c.modality.value == cmod for c in local.values())
        assert len(local) == row["splits"]["test"]["pool"]
        for split in SPLITS:
            queries = _queries(root, name, task, split)
            assert len(queries) == row["splits"][split]["queries"] > 0, (name, task, split)
            assert all(q.modality.value == qmod and q.task_id == task for q in queries)
            assert all(q.qid.startswith(f"{row['dataset_id']}:") for q in queries)
            for q in queries:
                if q.image_path:
                    assert (root / q.image_path).is_file()
    for split in SPLITS:
        pool = _pool(layout.global_pool_file(split))
        assert len(pool) == manifest["global_pool"][split]
        for c in pool.values():
            if c.image_path:
                assert (root / c.image_path).is_file(), c
    assert (root / "README.md").read_text().count("| NotoEmoji (10) |") == 5
    assert (root / "contact_sheet.png").stat().st_size > 10_000


def test_positives_are_in_pools_and_qrels_match(built):
    root, _ = built
    layout = Layout(root)
    global_pools = {s: _pool(layout.global_pool_file(s)) for s in SPLITS}
    for name, task, split in _sets(root):
        queries = _queries(root, name, task, split)
        qrels = read_qrels(layout.qrels_file(name, task, split), ErrorLog(strict=True))
        assert qrels == {q.qid: set(q.pos_dids) for q in queries}
        local = _pool(layout.pool_file(name, task)) if split == "test" else None
        for q in queries:
            assert q.pos_dids
            assert all(d in global_pools[split] for d in q.pos_dids), (q.qid, split)
            if local is not None:
                assert all(d in local for d in q.pos_dids), q.qid


def test_splits_disjoint_by_underlying_item(built):
    root, _ = built
    layout = Layout(root)
    dids: dict[str, set[str]] = {}
    units: dict[str, set[str]] = defaultdict(
        set
    )  # split -> emoji groups / synsets of its candidates
    for split in SPLITS:
        pool = _pool(layout.global_pool_file(split))
        dids[split] = set(pool)
        for c in pool.values():
            src = json.loads(c.src_content)
            if "emoji" in src:
                units[split].add(group_of(src["emoji"].replace("\ufe0f", "")))
            elif "synsets" in src:
                units[split].update(src["synsets"])
            else:  # a name shared by several (emoji, language) pairs
                for owner in src["name_of"]:
                    code = owner.split(":")[0]
                    units[split].add(group_of("".join(chr(int(h, 16)) for h in code.split("-"))))
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not dids[a] & dids[b]
        assert not units[a] & units[b], (a, b, sorted(units[a] & units[b])[:5])


def test_no_val_or_test_image_in_a_training_query(built):
    root, _ = built
    layout = Layout(root)
    train_images = {
        q.image_path for name, task, _ in _sets(root) for q in _queries(root, name, task, "train")
    }
    for split in ("val", "test"):
        pool = _pool(layout.global_pool_file(split))
        assert not train_images & {c.image_path for c in pool.values() if c.image_path}


def test_no_duplicate_content_in_global_pools(built):
    root, _ = built
    for split in SPLITS:
        pool = _pool(Layout(root).global_pool_file(split))
        contents = [(c.text, c.image_path) for c in pool.values()]
        assert len(set(contents)) == len(contents)
        images = defaultdict(set)
        for c in pool.values():
            if c.image_path and not c.text:
                images[hashlib.sha256((root / c.image_path).read_bytes()).hexdigest()].add(c.did)
        assert all(len(v) == 1 for v in images.values())


def test_keyword_queries_are_multi_positive(built):
    root, manifest = built
    (row,) = [r for r in manifest["tasks"] if r["task"] == 2]
    assert row["splits"]["test"]["multi_positive_queries"] > 0
    queries = _queries(root, "NotoEmoji", 2, "test")
    assert any(len(q.pos_dids) > 1 for q in queries)


def _owners(c) -> set[tuple[str, str]]:
    """(codepoints, language) pairs a text or card candidate names."""
    src = json.loads(c.src_content)
    if "name_of" in src:
        return {tuple(o.split(":")) for o in src["name_of"]}
    return {(src["codepoints"], lang) for lang in src.get("langs", [])}


@pytest.mark.parametrize("task", [6, 7, 8])
def test_composed_queries_need_image_and_text(built, task):
    """Neither half of a composed query determines its positive: the candidate showing the query
    image itself is never a positive; for edits (7) other queries with the same edit text, and
    other queries on the same image, have other positives; for languages (6, 8) the pool names
    the same emoji in other languages and other emoji in the same language."""
    root, _ = built
    name = "Gemojione" if task == 8 else "NotoEmoji"
    for split in SPLITS:
        queries = _queries(root, name, task, split)
        pool = _pool(Layout(root).global_pool_file(split))
        for q in queries:
            assert q.modality is Modality.IMAGE_TEXT and q.text and q.image_path
            same_image = {d for d, c in pool.items() if c.image_path == q.image_path and not c.text}
            assert not same_image & set(q.pos_dids), q  # the base emoji is not "as a firefighter"
        if task == 7:
            by_text, by_image = defaultdict(set), defaultdict(set)
            for q in queries:
                by_text[q.text].add(frozenset(q.pos_dids))
                by_image[q.image_path].add(frozenset(q.pos_dids))
            for by, key in ((by_text, "query_txt"), (by_image, "query_img_path")):
                share = sum(len(by[getattr(q, "text" if key == "query_txt" else "image_path")]) > 1
                            for q in queries) / len(queries)  # fmt: skip
                assert share >= 0.5, (split, key, share)
            continue
        texts = [c for c in pool.values() if c.modality.value == TASKS[task][1]]
        both = 0
        for q in queries:
            src = json.loads(q.src_content)
            code, lang = src["codepoints"], src["lang"]
            others = [c for c in texts if c.did not in q.pos_dids]
            image_only = any(code in {o for o, _ in _owners(c)} for c in others)
            text_only = any(lang in {x for o, x in _owners(c) if o != code} for c in others)
            both += image_only and text_only
        assert both >= 0.9 * len(queries), (split, both, len(queries))


def test_two_builds_are_byte_identical_and_seed_matters(built, tmp_path):
    root, manifest = built
    from typer.testing import CliRunner

    from mmembed.cli import app

    again = tmp_path / "again"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "build-offline",
            "--out",
            str(again),
            "--limit",
            str(LIMIT),
            "--workers",
            "2",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "built" in result.output
    assert _file_hashes(again) == _file_hashes(root)  # every byte, manifest and PNGs included
    other = build(tmp_path / "seed1", seed=1, limit=LIMIT, show_progress=False)
    assert other["digest"] != manifest["digest"]


def test_offline_tree_validates_clean(built):
    from mmembed.data.validate import validate_tree

    root, _ = built
    report = validate_tree(root, check_images=True)
    assert report.ok, [str(e) for e in report.errors.errors[:5]]
    assert report.n_errors == 0
    assert sum(f.records for f in report.files) > 1000


def test_rebuild_is_a_no_op_and_never_overwrites_foreign_folders(built, tmp_path):
    root, manifest = built
    again = build(root, limit=LIMIT, show_progress=False)  # same settings: kept as is
    assert again["reused"] and again["digest"] == manifest["digest"]
    with pytest.raises(FileExistsError, match="--force"):
        build(root, seed=3, limit=LIMIT, show_progress=False)  # other settings need --force
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an mmembed offline build"):
        build(foreign, limit=LIMIT, show_progress=False, force=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert json.loads((root / "manifest.json").read_text())["digest"] == manifest["digest"]


def test_force_replaces_a_modified_build(built, tmp_path):
    import shutil

    root, manifest = built
    out = tmp_path / "b"
    shutil.copytree(root, out)
    (out / "README.md").write_text("edited")
    with pytest.raises(FileExistsError, match="changed since it was built"):
        build(out, limit=LIMIT, show_progress=False)
    rebuilt = build(out, limit=LIMIT, show_progress=False, force=True)
    assert rebuilt["digest"] == manifest["digest"] and "reused" not in rebuilt
    assert (out / "README.md").read_text().startswith("# mmembed offline benchmark")
    assert not list(tmp_path.glob(".b.partial-*"))  # the temporary folder is gone
