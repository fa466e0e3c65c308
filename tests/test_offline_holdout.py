"""Held-out sources of the offline benchmark (`build-offline --hold-out`) and the transfer report
(`mmembed eval transfer`): nothing held out reaches train or val, judged from the packaged assets
themselves (CLDR names, gemojione's own category file), not from the builder's records; the test
split is byte-identical to the build without hold-outs; the transfer report agrees with the
M-BEIR scorer on the same run."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmembed.cli import app
from mmembed.data.mbeir import Layout, read_pool, read_queries
from mmembed.data.offline import build
from mmembed.data.offline.assets import cldr_annotations, find_assets
from mmembed.data.offline.emojis import LANGUAGES
from mmembed.data.offline.holdout import HoldOutError
from mmembed.data.offline.pairs import write_align_pairs
from mmembed.data.runfile import write_run
from mmembed.eval.mbeir import discover, score_run
from mmembed.eval.transfer import IN_DOMAIN, transfer_report

LIMIT = 40
SPECS = ("style:gemojione", "lang:de", "category:nature")
_CODE = re.compile(r"images/(noto|gemojione)/([0-9a-f-]+)\.png$")


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("holdout")
    plain = root / "plain"
    held = root / "held"
    build(plain, limit=LIMIT, show_progress=False, workers=1)
    build(held, limit=LIMIT, show_progress=False, workers=1, hold_out=SPECS)
    return plain, held


def _training_records(root: Path) -> tuple[list[str | None], list[str | None]]:
    """(texts, image paths) of every train and val query and global-pool candidate."""
    layout = Layout(root)
    texts, images = [], []
    for split in ("train", "val"):
        for name, task, _ in layout.query_sets(split):
            for q in read_queries(layout.query_file(name, task, split)):
                texts.append(q.text)
                images.append(q.image_path)
        for c in read_pool(layout.global_pool_file(split)):
            texts.append(c.text)
            images.append(c.image_path)
    return texts, images


def _german_only_names() -> set[str]:
    assets = find_assets()
    names = {
        lang: {v[0] for v in cldr_annotations(assets, lang).values() if v[0]} for lang in LANGUAGES
    }
    others = set().union(*(v for k, v in names.items() if k != "de"))
    return names["de"] - others


def _nature_codes() -> set[str]:
    """File codes of every emoji gemojione's own index files under 'nature', read directly."""
    index = json.loads((find_assets().gemojione / "config" / "index.json").read_text())
    return {
        "-".join(f"{ord(c):x}" for c in "".join(chr(int(h, 16)) for h in e["unicode"].split("-")))
        .replace("-fe0f", "")
        .replace("fe0f-", "")
        for e in index.values()
        if e.get("category") == "nature"
    }


def test_test_split_is_byte_identical_and_hold_out_file_lists_test_qids(builds):
    plain, held = builds
    layout = Layout(plain)
    files = [layout.query_file(n, t, "test") for n, t, _ in layout.query_sets("test")]
    files += [layout.qrels_file(n, t, "test") for n, t, _ in layout.query_sets("test")]
    files += sorted((plain / "cand_pool" / "local").glob("*.jsonl"))
    files += [layout.global_pool_file("test"), layout.instructions_file]
    assert len(files) == 2 * 8 + 8 + 2
    for f in files:
        rel = f.relative_to(plain)
        assert (held / rel).read_bytes() == f.read_bytes(), rel
    doc = json.loads((held / "hold_out.json").read_text())
    assert doc["specs"] == sorted(SPECS)
    test_qids = {q.qid for n, t, _ in layout.query_sets("test")
                 for q in read_queries(layout.query_file(n, t, "test"))}  # fmt: skip
    for spec, qids in doc["test_queries"].items():
        assert qids and set(qids) <= test_qids, spec
    # every test query of the gemojione tasks asks about the held-out style, and only those
    gem = {q.qid for n, t, _ in layout.query_sets("test") if n.lower() == "gemojione"
           for q in read_queries(layout.query_file(n, t, "test"))}  # fmt: skip
    assert set(doc["test_queries"]["style:gemojione"]) == gem
    manifest = json.loads((held / "manifest.json").read_text())
    assert manifest["settings"]["hold_out"] == sorted(SPECS)
    assert "hold_out" not in json.loads((plain / "manifest.json").read_text())["settings"]
    assert "Held-out sources" in (held / "README.md").read_text()


def test_no_training_record_touches_a_held_out_source(builds):
    german, nature = _german_only_names(), _nature_codes()

    def touched(root: Path) -> dict[str, int]:
        texts, images = _training_records(root)
        codes = [m.group(2) for p in images if p and (m := _CODE.search(p))]
        return {
            "gemojione images": sum("images/gemojione/" in (p or "") for p in images),
            "German-only names": sum(t in german for t in texts if t),
            "nature images": sum(c in nature for c in codes),
        }

    plain, held = builds
    before, after = touched(plain), touched(held)
    assert all(v > 0 for v in before.values()), before  # the check can fail
    assert after == {k: 0 for k in before}, after
    layout = Layout(held)
    for split in ("train", "val"):
        assert not [n for n, _, _ in layout.query_sets(split) if n.lower() == "gemojione"]
    # the gemojione drawings left on disk are exactly the test split's
    on_disk = {p.relative_to(held).as_posix() for p in (held / "images" / "gemojione").glob("*")}
    in_test = {c.image_path for c in read_pool(layout.global_pool_file("test"))}
    assert on_disk and on_disk == {p for p in in_test if p and "gemojione" in p}


def test_align_pairs_leave_out_the_held_out_language(builds, tmp_path):
    german = _german_only_names()
    counts = {}
    for name, root in zip(("plain", "held"), builds, strict=True):
        out = tmp_path / name
        write_align_pairs(root, out)
        pool = [json.loads(line)["txt"] for line in (out / "cand_pool" /
                "mbeir_align_cand_pool.jsonl").read_text().splitlines()]  # fmt: skip
        counts[name] = sum(t in german for t in pool)
    assert counts["plain"] > 0 and counts["held"] == 0, counts


def test_unknown_specs_are_refused_with_the_valid_values(tmp_path):
    for spec, needle in (("lang:en", "English"), ("lang:xx", "fr, es, de"),
                         ("category:cats", "nature"), ("colour:red", "KIND:VALUE"),
                         ("style:noto", "gemojione")):  # fmt: skip
        with pytest.raises(HoldOutError, match=needle):
            build(tmp_path / "x", limit=2, show_progress=False, hold_out=[spec])
        assert not (tmp_path / "x").exists()
    res = CliRunner().invoke(app, ["data", "build-offline", "--out", str(tmp_path / "y"),
                                   "--limit", "2", "--hold-out", "lang:en", "-q"])  # fmt: skip
    assert res.exit_code == 2 and "English" in res.output


def test_transfer_report_agrees_with_the_mbeir_scorer(builds, tmp_path):
    _, held = builds
    tasks = discover(held, "test")
    pool = [c.did for c in read_pool(Layout(held).global_pool_file("test"))]
    rng = random.Random(0)
    run: dict[str, list[str]] = {}
    for t in tasks:
        for q in read_queries(t.query_file):
            ranked = rng.sample(pool, 20)
            if rng.random() < 0.5:  # a positive at rank 1..8: some hits at 5, some misses
                ranked.insert(rng.randrange(8), q.pos_dids[0])
            run[q.qid] = ranked
    folder = tmp_path / "eval"
    write_run(folder / "runs" / "global.trec", {q: [(d, 1.0) for d in r] for q, r in run.items()})
    doc = transfer_report(held, {"sys": folder}, k=5)
    assert list(doc["systems"]["sys"]) == ["global"]
    # one subset holding every test query must give the scorer's per-task Recall@5
    everything = sorted(run)
    subsets = json.loads((held / "hold_out.json").read_text())
    (held / "hold_out.json").write_text(
        json.dumps({**subsets, "test_queries": {"all": everything}})
    )
    try:
        whole = transfer_report(held, {"sys": folder}, k=5)["systems"]["sys"]["global"]["all"]
    finally:
        (held / "hold_out.json").write_text(json.dumps(subsets))
    scored = score_run(run, tasks, "sys")
    assert len(whole["tasks"]) == len(scored) == 8
    for r in scored:
        label = f"{r.dataset} t{r.task_id}"
        assert whole["tasks"][label] == pytest.approx(r.recall["R@5"]), label
    # the subsets partition nothing away: in-domain = test queries touching no spec
    touched = {q for qids in subsets["test_queries"].values() for q in qids}
    in_domain = sum(doc["subsets"][IN_DOMAIN].values())
    assert in_domain == len(set(everything) - touched)


def test_transfer_command_writes_tables_and_refuses_a_build_without_hold_outs(builds, tmp_path):
    plain, held = builds
    folder = tmp_path / "eval"
    write_run(folder / "runs" / "local.trec", {"10:0": [("10:1", 1.0)]})
    res = CliRunner().invoke(app, ["eval", "transfer", "--data", str(held), "--eval",
                                   f"m={folder}", "--out", str(tmp_path / "t")])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "t" / "transfer.json").read_text())
    assert set(doc["subsets"]) == {*SPECS, IN_DOMAIN}
    assert "lang:de local" in (tmp_path / "t" / "transfer.md").read_text()
    res = CliRunner().invoke(app, ["eval", "transfer", "--data", str(plain), "--eval",
                                   f"m={folder}"])  # fmt: skip
    assert res.exit_code == 2 and "--hold-out" in res.output
    res = CliRunner().invoke(app, ["eval", "transfer", "--data", str(held), "--eval",
                                   f"m={folder}", "--eval", f"m={folder}"])  # fmt: skip
    assert res.exit_code == 2 and "both called 'm'" in res.output
