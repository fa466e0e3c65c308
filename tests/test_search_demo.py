"""`mmembed demo`: example searches over the offline benchmark. The fast test uses a small tree in
its layout and a tiny random model (plumbing, positives present, cache reuse); the slow one runs the real
command from nothing (full benchmark build + the default model)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console


@pytest.fixture(scope="module")
def small_benchmark(tmp_path_factory) -> Path:
    """A small M-BEIR tree in the offline benchmark's layout, written with the project's writers
    (the real build is exercised by the slow test and by the offline benchmark's own tests)."""
    from PIL import Image

    from mmembed.data.instructions import InstructionRow, InstructionTable, write_instructions
    from mmembed.data.mbeir import Layout, write_pool, write_queries
    from mmembed.data.records import Candidate, Modality, Query
    from mmembed.search.demo import EXAMPLES
    from mmembed.testing.colour_embedder import COLOURS

    root = tmp_path_factory.mktemp("offline") / "bench"
    layout = Layout(root)
    (root / "images").mkdir(parents=True)
    pool = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        Image.new("RGB", (32, 32), rgb).save(root / "images" / f"{name}.png")
        img = f"images/{name}.png"
        pool += [Candidate(f"10:{3 * i}", None, img, Modality.IMAGE),
                 Candidate(f"10:{3 * i + 1}", name, None, Modality.TEXT),
                 Candidate(f"10:{3 * i + 2}", f"a {name} square", img, Modality.IMAGE_TEXT)]  # fmt: skip
    for i in range(60):
        pool.append(Candidate(f"12:{i}", f"filler word number {i}", None, Modality.TEXT))
    write_pool(layout.global_pool_file("test"), pool)
    for task, _ in EXAMPLES:
        qmod = {0: "text", 1: "text", 3: "image", 4: "image"}.get(task, "image,text")
        queries = []
        for i, name in enumerate(COLOURS):
            text = None if qmod == "image" else f"the colour {name}"
            img = None if qmod == "text" else f"images/{name}.png"
            pos = [f"10:{3 * i + (1 if task in (1, 3, 6) else 0)}"]
            queries.append(Query(f"10:{100 * task + i}", text, img, Modality(qmod), task, pos))
        write_queries(layout.query_file("Colours", task, "test"), queries)
    rows = [InstructionRow("text", "image", "Colours", 10, ["Find the picture of this colour."])]
    write_instructions(layout.instructions_file, InstructionTable(rows))
    (root / "manifest.json").write_text("{}")
    return root


def _brute_force_hits(emb, pool, queries, root: Path) -> int:
    """Queries with a positive among the top 5 of ``pool`` by the model's own vectors and a
    numpy sort (the table's first instruction for the query's task, none where it has none)."""
    import numpy as np

    from mmembed.data.instructions import read_instructions
    from mmembed.data.mbeir import Layout
    from mmembed.data.records import TASKS

    cands = emb.encode_candidates(pool, image_root=root, show_progress=False)  # (N, D)
    table = read_instructions(Layout(root).instructions_file)
    hits = 0
    for q in queries:
        try:
            instr = table.choose(q.dataset_id, q.modality.value, TASKS[q.task_id][1], fixed=0)
        except KeyError:
            instr = None
        v = emb.encode_queries([q], instructions=instr, image_root=root)[0]  # (D,)
        top = {pool[j].did for j in np.argsort(-(cands @ v), kind="stable")[:5]}
        hits += bool(top & set(q.pos_dids))
    return hits


def test_demo_runs_every_example_kind(small_benchmark: Path, tiny_model: Path) -> None:
    from mmembed.data.mbeir import Layout, read_pool
    from mmembed.search.demo import EXAMPLES, demo_pool, pick_examples, run_demo

    examples = pick_examples(small_benchmark)
    assert {q.task_id for _, q in examples} == {t for t, _ in EXAMPLES}
    positives = {d for _, q in examples for d in q.pos_dids}
    pool = demo_pool(small_benchmark, positives, 30)
    assert len(pool) == 30 and positives <= {c.did for c in pool}
    full = list(read_pool(Layout(small_benchmark).global_pool_file("test")))
    assert len(demo_pool(small_benchmark, positives, 0)) == len(full)

    buf = io.StringIO()
    out = run_demo(data=small_benchmark, model=str(tiny_model), pool_size=30,
                   console=Console(file=buf, width=140))  # fmt: skip
    text = buf.getvalue()
    assert out["pool"] == 30 and len(out["examples"]) == len(EXAMPLES)
    # the hit count by brute force over the same pool: the model's own vectors, numpy top 5
    from mmembed.model import load_embedder

    emb = load_embedder(str(tiny_model), device="cpu")
    hits = _brute_force_hits(emb, pool, [q for _, q in examples], small_benchmark)
    assert out["hits_at_5"] == hits
    assert [e["found_in_top5"] for e in out["examples"]].count(True) == hits
    for _, label in EXAMPLES:
        assert label in text
    assert "encoding 30 candidates" in text
    again = io.StringIO()
    run_demo(data=small_benchmark, model=str(tiny_model), pool_size=30,
             console=Console(file=again, width=140))  # fmt: skip
    assert "encoding" not in again.getvalue()  # the pool embeddings came from the cache


@pytest.mark.slow
def test_demo_command_from_nothing(tmp_path: Path) -> None:
    """The real thing: builds the full offline benchmark into a fresh cache, default model."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "mmembed", "demo", "--pool-size", "300"],
                       env=env, capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "cache" / "mmembed" / "offline" / "manifest.json").is_file()
    assert "example queries" in r.stdout and "image + text → image (composed)" in r.stdout


def test_demo_hit_rate_is_over_seeded_test_queries(small_benchmark: Path, tiny_model: Path) -> None:
    """The hit rate's queries are a seeded uniform draw from every test file (no choice by hand),
    and the rate equals a brute-force top 5 over the same pool with the demo's instructions."""

    from mmembed.data.mbeir import Layout, read_queries
    from mmembed.model import load_embedder
    from mmembed.search.demo import sample_test_queries

    layout = Layout(small_benchmark)
    every = [
        q
        for name, task, _ in layout.query_sets("test")
        for q in read_queries(layout.query_file(name, task, "test"))
    ]
    a = sample_test_queries(small_benchmark, 20, seed=0)
    assert [q.qid for q in a] == [q.qid for q in sample_test_queries(small_benchmark, 20, seed=0)]
    assert [q.qid for q in a] != [q.qid for q in sample_test_queries(small_benchmark, 20, seed=1)]
    assert len({q.qid for q in a}) == 20 and {q.qid for q in a} <= {q.qid for q in every}
    assert len({q.task_id for q in a}) > 1  # drawn over every task, not one
    assert len(sample_test_queries(small_benchmark, 10_000)) == len(every)

    from mmembed.search.demo import demo_pool, pick_examples, run_demo

    buf = io.StringIO()
    out = run_demo(data=small_benchmark, model=str(tiny_model), pool_size=40, rate_queries=20,
                   console=Console(file=buf, width=140))  # fmt: skip
    r = out["hit_rate"]
    assert r["queries"] == 20 and sum(n for _, n in r["per_task"].values()) == 20
    assert f"for {r['hits']} of 20 test queries drawn with seed 0" in buf.getvalue()
    # brute force over the same pool: a seeded sample of 40 that keeps every positive
    positives = {d for q in a for d in q.pos_dids}
    emb = load_embedder(str(tiny_model), device="cpu")
    positives |= {d for _, q in pick_examples(small_benchmark) for d in q.pos_dids}
    pool = demo_pool(small_benchmark, positives, 40)
    assert len(pool) == out["pool"] == 40 and positives <= {c.did for c in pool}
    hits = _brute_force_hits(emb, pool, a, small_benchmark)
    assert r["hits"] == hits and r["rate"] == pytest.approx(hits / 20)
