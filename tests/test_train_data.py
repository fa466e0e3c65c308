"""Training config (YAML, base inheritance, dotted overrides, errors) and the data plan: a pure
function of (seed, epoch, step), no duplicate candidates in a batch, weighted mixing,
one-task-per-batch, seeded instructions, rank slices, BEIR-style text sources."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from train_fixtures import config_dict, make_tree

from mmembed.data.records import Candidate, Modality, Query
from mmembed.train.config import ConfigError, SourceConfig, load_config
from mmembed.train.sampler import BatchPlan, Planned, build_batch, pack
from mmembed.train.sources import Example, Source, load_sources


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_config_base_overrides_and_types(tmp_path):
    base = _write(tmp_path / "base.yaml", config_dict(tmp_path, tmp_path, tmp_path / "out"))
    child = _write(
        tmp_path / "child.yaml", {"base": "base.yaml", "loss": {"grad_cache": True}, "epochs": 5}
    )
    cfg = load_config(
        child,
        [
            "--data.batch_size=8",
            "optim.lr=3e-4",
            "data.sources.0.weight=2",
            "model.lora.targets=[query, value]",
        ],
    )
    assert cfg.epochs == 5 and cfg.loss.grad_cache and cfg.loss.temperature == 0.05  # from base
    assert cfg.data.batch_size == 8 and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.data.sources[0].weight == 2.0 and cfg.data.sources[0].name == "coco"
    assert cfg.model.lora.targets == ["query", "value"]
    cfg.save(tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert base.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_sise=8", "unknown key(s) ['batch_sise']"),
        ("data.batch_size=eight", "data.batch_size: expected an integer"),
        ("precision=fp8", "precision must be"),
        ("data.sources.3.weight=1", "has no item 3"),
        ("loss.temperature", "expected KEY=VALUE"),
        ("model.lora.enabled=maybe", "model.lora.enabled: expected true or false"),
    ],
)
def test_config_errors_name_the_key(tmp_path, override, message):
    path = _write(tmp_path / "c.yaml", config_dict(tmp_path, tmp_path, tmp_path / "out"))
    with pytest.raises(ConfigError) as e:
        load_config(path, [override])
    assert message in str(e.value)


def test_config_missing_file_and_loop(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    _write(tmp_path / "a.yaml", {"base": "b.yaml"})
    _write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")


def _toy_source(
    name: str, n: int, *, shared_every: int = 0, negs: int = 0, tasks: int = 1
) -> Source:
    cands, examples = {}, []
    for i in range(n):
        pos = f"1:{i // shared_every}" if shared_every else f"1:{i}"
        for d in [pos, *(f"1:{1000 + i * 10 + k}" for k in range(negs))]:
            cands[d] = Candidate(d, f"doc {d}", None, Modality.TEXT)
        neg = [f"1:{1000 + i * 10 + k}" for k in range(negs)] + (
            [f"1:{1000 + (i + 1) % n * 10}"] if negs else []
        )
        q = Query(f"1:{i}", f"query {i}", None, Modality.TEXT, 1, [pos])
        examples.append(Example(f"{name}/1:{i}", q, [pos], neg, f"1:{i % tasks}"))
    for ex in examples:
        for d in ex.neg:
            cands.setdefault(d, Candidate(d, f"doc {d}", None, Modality.TEXT))
    return Source(name, examples, cands, None, weight=float(n))


def test_plan_is_a_pure_function_of_seed_epoch_step():
    src = _toy_source("a", 40, negs=2)
    a = BatchPlan([src], batch_size=8, hard_negatives=2, seed=3)
    b = BatchPlan([src], batch_size=8, hard_negatives=2, seed=3)
    assert a.steps_per_epoch == 5
    # asked in a different order (as a resumed run would), the batches are the same
    assert [b.batch(1, s) for s in (4, 2)] == [a.batch(1, 4), a.batch(1, 2)]
    assert b.batch(0, 3) == a.batch(0, 3)
    assert a.epoch(0) != a.epoch(1)  # reshuffled each epoch
    assert BatchPlan([src], batch_size=8, seed=4).epoch(0) != BatchPlan(
        [src], batch_size=8, seed=3
    ).epoch(0)
    seen = Counter(p.index for batch in a.epoch(0) for p in batch)
    assert len(seen) == 40 and set(seen.values()) == {1}  # one pass over the data


def test_batches_have_no_duplicate_candidates():
    src = _toy_source("a", 60, shared_every=3, negs=2)  # every positive is shared by 3 queries
    plan = BatchPlan([src], batch_size=6, hard_negatives=3, seed=0)
    for batch in plan.epoch(0):
        dids = [d for p in batch for d in (p.pos, *p.negs)]
        assert len(dids) == len(set(dids)), dids
        assert len(batch) == 6
    tb = build_batch(plan.batch(0, 0), [src], seed=0, epoch=0)
    assert len(tb.cand_dids) == len(set(tb.cand_dids))
    assert all(
        tb.cand_dids[lab] in src.examples[p.index].pos
        for lab, p in zip(tb.labels, plan.batch(0, 0), strict=True)
    )


def test_pack_defers_a_shared_positive_and_drops_shared_negatives():
    ps = [
        Planned(0, 0, "a", ("x",)),
        Planned(0, 1, "a", ()),
        Planned(0, 2, "b", ("x", "y")),
        Planned(0, 3, "c", ()),
    ]
    batches = pack(ps, 2)
    assert [[p.index for p in b] for b in batches] == [[0, 2], [1, 3]]
    assert batches[0][1].negs == ("y",)


def test_weighted_mixing_and_one_task_per_batch():
    a, b = _toy_source("a", 64, tasks=4), _toy_source("b", 64)
    a.weight, b.weight = 3.0, 1.0
    plan = BatchPlan([a, b], batch_size=4, seed=1, steps_per_epoch=400)
    counts = Counter(batch[0].source for batch in plan.epoch(0))
    assert all(len({p.source for p in batch}) == 1 for batch in plan.epoch(0))
    assert 0.68 < counts[0] / 400 < 0.82  # 3:1 weights
    one = BatchPlan([a], batch_size=4, seed=1, one_task_per_batch=True)
    for batch in one.epoch(0):
        assert len({a.examples[p.index].task for p in batch}) == 1
    mixed = BatchPlan([a], batch_size=4, seed=1)
    assert any(len({a.examples[p.index].task for p in batch}) > 1 for batch in mixed.epoch(0))


def test_rank_slices_partition_the_global_batch():
    src = _toy_source("a", 48)
    plan = BatchPlan([src], batch_size=12, seed=0)
    g = plan.batch(0, 1)
    parts = [BatchPlan.rank_slice(g, r, 3) for r in range(3)]
    assert [p for part in parts for p in part] == g and all(len(p) == 4 for p in parts)


def test_mbeir_source_instructions_seeded_by_seed_query_epoch(tmp_path):
    root = make_tree(tmp_path / "m")
    cfg = SourceConfig(
        name="coco",
        root=str(root),
        queries=["query/train/*.jsonl"],
        pool=["cand_pool/global/mbeir_union_train_cand_pool.jsonl"],
    )
    (src,) = load_sources([cfg])
    assert len(src) == 16 and src.weight == 16.0
    ex = src.examples[0]
    draws = {e: src.choose_instruction(ex, seed=1, epoch=e) for e in range(8)}
    assert draws == {
        e: src.choose_instruction(ex, seed=1, epoch=e) for e in range(8)
    }  # reproducible
    assert len(set(draws.values())) == 2  # both prompts of the task show up over epochs
    assert set(draws.values()) <= {
        "Find the picture this caption describes.",
        "Retrieve the image.",
    }
    tb = build_batch(BatchPlan([src], batch_size=4, seed=1).batch(0, 0), [src], seed=1, epoch=0)
    assert all(i is not None for i in tb.instructions)
    assert all(
        str(it.image).startswith(str(root))
        for it in tb.cand_items + tb.query_items
        if it.image is not None
    )


def test_bad_records_are_reported_and_skipped(tmp_path, caplog):
    root = make_tree(tmp_path / "m")
    qf = root / "query/train/mbeir_mscoco_task0_train.jsonl"
    lines = qf.read_text().splitlines()
    lines[1] = "{not json"
    bad = json.loads(lines[2])
    bad["pos_cand_list"] = ["9:999"]  # not in the pool
    lines[2] = json.dumps(bad)
    qf.write_text("\n".join(lines) + "\n")
    cfg = SourceConfig(
        name="coco",
        root=str(root),
        queries=["query/train/*.jsonl"],
        pool=["cand_pool/global/mbeir_union_train_cand_pool.jsonl"],
    )
    (src,) = load_sources([cfg])
    assert len(src) == 14
    assert "2 error(s)" in caplog.text and "mbeir_mscoco_task0_train.jsonl:2" in caplog.text
    with pytest.raises(Exception, match="mbeir_mscoco_task0_train.jsonl:2"):
        load_sources([cfg], strict=True)


def test_beir_text_source(tmp_path):
    d = tmp_path / "wn"
    (d / "qrels").mkdir(parents=True)
    (d / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": f"s{i}", "title": f"word{i}", "text": f"gloss {i}"}) + "\n"
            for i in range(6)
        )
    )
    (d / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"what is word{i}"}) + "\n" for i in range(6))
    )
    (d / "qrels/train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\ts{i}\t1\n" for i in range(5))
    )
    cfg = SourceConfig(
        name="wn",
        kind="beir",
        root=str(d),
        instruction="Given a definition, find the word",
        in_batch_negatives=False,
    )
    (src,) = load_sources([cfg])
    assert len(src) == 5 and src.examples[0].pos == ["wn/s0"]
    assert src.candidates["wn/s0"].text == "word0 gloss 0"
    tb = build_batch(BatchPlan([src], batch_size=2, seed=0).batch(0, 0), [src], seed=0, epoch=0)
    assert tb.instructions == ["Given a definition, find the word"] * 2 and tb.in_batch == [
        False,
        False,
    ]
    meta = tb.to_meta()
    assert meta.in_batch.tolist() == [False, False] and meta.own.sum().item() == 2


def test_beir_source_reads_with_the_evaluation_rules(tmp_path, caplog):
    """The training reader is mmembed.data.beir's: a ``query_id`` header, stripped ids, a grade
    of 0 (or 0.5, read as grade 0) is not a positive, a repeated judgement counts once, a
    repeated document id keeps the first record; empty documents are reported with their line."""
    d = tmp_path / "b"
    (d / "qrels").mkdir(parents=True)
    docs = [("s0", "zero"), ("s1", "one"), ("s2", "two"), ("s0", "again"), ("s3", "")]
    (d / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs)
    )
    (d / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(3))
    )
    (d / "qrels/train.tsv").write_text(
        "query_id\tcorpus_id\tscore\n q0 \ts0\t1\nq0\ts0\t1\nq0\ts1\t0\nq1\ts1\t0.5\nq2\ts2\t2\n\n"
    )
    cfg = SourceConfig(name="b", kind="beir", root=str(d), in_batch_negatives=False)
    (src,) = load_sources([cfg])
    assert [(e.query.qid, e.pos) for e in src.examples] == [("b/q0", ["b/s0"]), ("b/q2", ["b/s2"])]
    assert src.candidates["b/s0"].text == "zero" and "b/s3" not in src.candidates
    messages = [str(e) for e in src.errors.errors]
    assert any("duplicate id 's0'" in m and "corpus.jsonl:4" in m for m in messages)
    assert any("empty document" in m and "corpus.jsonl:5" in m for m in messages)
    assert len(messages) == 2
