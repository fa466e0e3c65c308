"""`mmembed encode`: fp16 shards + ids + manifest equal to direct encoding, bad records skipped
and reported, rank sharding + merge, plan mismatch refused, and a real SIGKILL mid-run followed
by a resume that gives exactly the uninterrupted run's embeddings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmembed.data.mbeir import write_pool, write_queries
from mmembed.data.records import Candidate, Modality, Query
from mmembed.index.encode import EncodeMismatchError, encode_entries, load_encoded
from mmembed.index.inputs import open_input

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    import torch

    torch.set_num_threads(1)
    from mmembed.testing.tiny_embedders import tiny_embedder

    return tiny_embedder(seed=0)


def make_tree(root: Path, n: int = 30, broken: bool = True, image_every: int = 3) -> Path:
    """An M-BEIR style pool with text, image and image+text candidates (+ a bad JSON line and a
    missing image when ``broken``)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    cands = []
    for i in range(n):
        img = None
        if i % image_every in ((1, 2) if image_every == 3 else (1,)):
            img = f"images/{i}.png"
            Image.new("RGB", (20, 20), (i * 8 % 256, 40, abs(200 - i))).save(root / img)
        text = None if img and i % 3 == 1 else f"candidate {i} text"
        cands.append(Candidate(f"11:{i}", text, img, Modality.of(text, img)))
    if broken:
        cands.append(Candidate("11:999", None, "images/missing.png", Modality.IMAGE))
    pool = root / "cand_pool" / "local" / "mbeir_toy_task0_cand_pool.jsonl"
    write_pool(pool, cands)
    if broken:
        with open(pool, "a") as f:
            f.write("{not json\n")
    return pool


def test_encode_pool_matches_direct_encoding(tmp_path, tiny):
    pool = make_tree(tmp_path / "data")
    inp = open_input(pool)
    assert inp.kind == "pool" and inp.image_root == (tmp_path / "data").resolve()
    res = encode_entries(
        tiny,
        inp.entries(),
        tmp_path / "out",
        is_query=False,
        source=inp.source,
        image_root=inp.image_root,
        shard_size=7,
        batch_size=4,
        show_progress=False,
    )
    assert res.complete and res.count == 30 and res.encoded_shards == 5
    assert [s["id"] for s in res.skipped] == ["11:999"] and "missing" in res.skipped[0]["error"]
    assert len(inp.errors) == 1 and "malformed JSON" in str(inp.errors.errors[0])
    emb, ids, meta = load_encoded(tmp_path / "out", expect_fingerprint=tiny.fingerprint)
    assert emb.dtype == np.float16 and emb.shape == (30, tiny.dim)
    assert ids == [f"11:{i}" for i in range(30)]
    assert (
        meta["complete"] and meta["skipped"] == 1 and meta["model_fingerprint"] == tiny.fingerprint
    )
    from mmembed.data.mbeir import read_pool

    good = [c for c in read_pool(pool, errors=open_input(pool).errors) if c.did != "11:999"]
    direct = tiny.encode_candidates(
        good, image_root=tmp_path / "data", batch_size=4, show_progress=False
    )
    np.testing.assert_allclose(emb.astype(np.float32), direct, atol=2e-3)  # fp16 storage
    again = encode_entries(
        tiny,
        inp.entries(),
        tmp_path / "out",
        is_query=False,
        source=inp.source,
        image_root=inp.image_root,
        shard_size=7,
        show_progress=False,
    )
    assert again.complete and again.encoded_shards == 0  # already done: nothing re-encoded


def test_queries_get_instructions_from_the_tree(tmp_path, tiny):
    from mmembed.data.instructions import InstructionRow, InstructionTable, write_instructions

    root = tmp_path / "data"
    qs = [Query(f"11:{i}", f"query {i}", None, Modality.TEXT, 0, [f"11:{i}"]) for i in range(6)]
    qfile = root / "query" / "test" / "mbeir_toy_task0_test.jsonl"
    write_queries(qfile, qs)
    write_instructions(
        root / "instructions" / "query_instructions.tsv",
        InstructionTable(
            [
                InstructionRow(
                    "text", "image", "Toy", 11, ["Find the picture.", "Show me the image."]
                )
            ]
        ),
    )
    inp = open_input(qfile)
    entries = list(inp.entries())
    assert inp.kind == "queries" and all(
        e.instruction in ("Find the picture.", "Show me the image.") for e in entries
    )
    assert [e.instruction for e in entries] == [
        e.instruction for e in open_input(qfile).entries()
    ]  # seeded
    assert all(e.instruction is None for e in open_input(qfile, instructions="none").entries())
    res = encode_entries(
        tiny,
        entries,
        tmp_path / "q",
        is_query=True,
        source=inp.source,
        shard_size=4,
        show_progress=False,
    )
    emb, ids, _ = load_encoded(tmp_path / "q")
    direct = tiny.encode_queries(
        qs, instructions=[e.instruction for e in entries], show_progress=False
    )
    assert res.count == 6 and ids == [q.qid for q in qs]
    np.testing.assert_allclose(emb.astype(np.float32), direct, atol=2e-3)


def test_rank_sharding_then_merge_equals_single_process(tmp_path, tiny):
    pool = make_tree(tmp_path / "data", n=20, broken=False)
    inp = open_input(pool)
    kw = dict(
        is_query=False,
        source=inp.source,
        image_root=inp.image_root,
        shard_size=3,
        show_progress=False,
    )
    r0 = encode_entries(tiny, inp.entries(), tmp_path / "multi", rank=0, world_size=2, **kw)
    assert not r0.complete and r0.encoded_shards == 4  # shards 0, 2, 4, 6 of 7
    r1 = encode_entries(tiny, inp.entries(), tmp_path / "multi", rank=1, world_size=2, **kw)
    assert r1.complete and r1.encoded_shards == 3 and r1.count == 20
    single = encode_entries(tiny, inp.entries(), tmp_path / "single", rank=0, world_size=1, **kw)
    a, ida, _ = load_encoded(tmp_path / "multi")
    b, idb, _ = load_encoded(tmp_path / "single")
    assert ida == idb and np.array_equal(a, b) and single.encoded_shards == 7


def test_other_settings_are_refused(tmp_path, tiny):
    pool = make_tree(tmp_path / "data", n=5, broken=False)
    inp = open_input(pool)
    kw = dict(is_query=False, source=inp.source, image_root=inp.image_root, show_progress=False)
    encode_entries(tiny, inp.entries(), tmp_path / "o", shard_size=2, **kw)
    with pytest.raises(EncodeMismatchError, match="shard_size"):
        encode_entries(tiny, inp.entries(), tmp_path / "o", shard_size=3, **kw)
    res = encode_entries(tiny, inp.entries(), tmp_path / "o", shard_size=3, overwrite=True, **kw)
    assert res.complete and res.encoded_shards == 2
    with pytest.raises(EncodeMismatchError, match="encoded with model"):
        load_encoded(tmp_path / "o", expect_fingerprint="sha256:other")


def _encode_cmd(pool: Path, out: Path, model: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mmembed",
        "encode",
        str(pool),
        "--out",
        str(out),
        "--model",
        str(model),
        "--shard-size",
        "10",
        "--batch-size",
        "5",
        "--no-progress",
    ]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny):
    pool = make_tree(tmp_path / "data", n=150, broken=False, image_every=10)
    tiny.save_pretrained(tmp_path / "model")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _encode_cmd(pool, out, tmp_path / "model"),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "shards" / "000002.npy").exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = sorted(p.name for p in (out / "shards").glob("*.npy"))
    assert 3 <= len(finished) < 15 and not (out / "manifest.json").exists()
    # run again (in this process, to spare a second interpreter start): it resumes
    from mmembed.model import load_embedder

    model = load_embedder(tmp_path / "model")
    inp = open_input(pool)
    kw = dict(
        is_query=False,
        source=inp.source,
        image_root=inp.image_root,
        shard_size=10,
        batch_size=5,
        show_progress=False,
    )
    resumed = encode_entries(model, inp.entries(), out, **kw)
    assert resumed.complete and resumed.reused_shards == len(finished)
    assert resumed.encoded_shards == 15 - len(finished)
    # the uninterrupted run, with the same settings (one thread, like the killed process)
    encode_entries(model, inp.entries(), tmp_path / "clean", **kw)
    a, ida, meta = load_encoded(out)
    b, idb, _ = load_encoded(tmp_path / "clean")
    assert meta["count"] == 150 and ida == idb
    assert np.array_equal(a, b)  # bit-identical fp16 rows
    assert not [p for p in out.rglob("*.tmp")]  # no half-written files left behind
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
