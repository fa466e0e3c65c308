"""BEIR-format text retrieval: reading with clear errors, and nDCG@10 / Recall@100 / MRR@10 of a
model through encode cache + FAISS, checked against values computed by hand; the mteb adapter
gives the same nDCG@10 through mteb.evaluate (slow: needs mteb)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mmembed.data.beir import read_beir
from mmembed.data.records import Item
from mmembed.eval.beir import evaluate_beir

VOCAB = ["apple", "banana", "cherry", "date", "egg"]


class WordEncoder:
    """A bag-of-words encoder honouring the Embedder protocol: rankings are computable by hand."""

    dim = len(VOCAB)
    fingerprint = "sha256:words-v1"

    def _enc(self, records) -> np.ndarray:
        out = np.zeros((len(records), self.dim), dtype=np.float32)
        for i, r in enumerate(records):
            text = r.text if isinstance(r, Item) else r.text
            for w in (text or "").lower().split():
                if w in VOCAB:
                    out[i, VOCAB.index(w)] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out[:, -1] += (norms[:, 0] == 0) * 1.0  # an empty text still gets a unit vector
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_queries(self, queries, *, instructions=None, **kw) -> np.ndarray:
        return self._enc(queries)

    def encode_candidates(self, candidates, **kw) -> np.ndarray:
        return self._enc(candidates)


def beir_dir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    corpus = [
        ("d1", "Fruit", "apple banana"),
        ("d2", "", "apple"),
        ("d3", "", "cherry"),
        ("d4", "", "banana cherry date"),
    ]
    with open(root / "corpus.jsonl", "w") as f:
        for d, title, text in corpus:
            f.write(json.dumps({"_id": d, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for q, text in [("q1", "apple"), ("q2", "cherry date"), ("q3", "unjudged query")]:
            f.write(json.dumps({"_id": q, "text": text}) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t2\nq2\td4\t1\n"
    )
    return root


def test_read_beir_and_errors(tmp_path):
    data = read_beir(beir_dir(tmp_path / "b"))
    assert set(data.queries) == {"q1", "q2"}  # only judged queries are evaluated
    assert data.doc_text("d1") == "Fruit apple banana"
    assert data.qrels["q2"] == {"d3": 2, "d4": 1}
    with pytest.raises(FileNotFoundError, match="qrels/dev.tsv"):
        read_beir(tmp_path / "b", "dev")
    with open(tmp_path / "b" / "qrels" / "test.tsv", "a") as f:
        f.write("q9\td1\t1\nq1\td1\tx\n")
    from mmembed.data.errors import ErrorLog

    errors = ErrorLog()
    read_beir(tmp_path / "b", errors=errors)
    messages = [str(e) for e in errors.errors]
    assert any("not a number" in m and "test.tsv:6" in m for m in messages)
    assert any("'q9' is not in queries.jsonl" in m for m in messages)


def test_write_beir_reads_back(tmp_path):
    from mmembed.data.beir import BeirData, write_beir

    data = read_beir(beir_dir(tmp_path / "b"))
    data.corpus["d5"] = {"title": "", "text": "café ☕ naïve"}  # unjudged, non-ASCII
    counts = write_beir(tmp_path / "w", data, "dev")
    assert counts == {"corpus": 5, "queries": 2, "qrels": 3}
    back = read_beir(tmp_path / "w", "dev")
    assert back == data
    assert (tmp_path / "w/qrels/dev.tsv").read_text().splitlines()[0] == (
        "query-id\tcorpus-id\tscore"
    )
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        "corpus.jsonl",
        "qrels",
        "queries.jsonl",
    ]  # no temp file left behind
    assert isinstance(back, BeirData)


def test_evaluate_beir_by_hand(tmp_path):
    root = beir_dir(tmp_path / "b")
    res = evaluate_beir(root, WordEncoder(), out_dir=tmp_path / "out", show_progress=False)
    # q1 "apple": d2 (cos 1), d1 (cos 0.71) -> the relevant d1 at rank 2
    q1 = 1 / math.log2(3)
    # q2 "cherry date": d4 (0.82, grade 1), d3 (0.71, grade 2); ideal order grades 2, 1
    q2 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert res["queries"] == 2
    assert res["nDCG@10"] == pytest.approx((q1 + q2) / 2, abs=1e-6)
    assert res["MRR@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert res["Recall@100"] == pytest.approx(1.0)
    lines = (tmp_path / "out" / "beir_test.trec").read_text().splitlines()
    assert lines[0].split()[:4] == ["q1", "Q0", "d2", "1"] and lines[1].split()[2] == "d1"
    assert (
        json.loads((tmp_path / "out" / "beir_test.json").read_text())["nDCG@10"] == res["nDCG@10"]
    )


def test_beir_cli_with_a_real_tiny_model(tmp_path):
    from typer.testing import CliRunner

    from mmembed.cli import app
    from mmembed.model import load_embedder
    from mmembed.testing.tiny_embedders import tiny_embedder

    tiny_embedder(seed=1).save_pretrained(tmp_path / "model")
    root = beir_dir(tmp_path / "b")
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "beir",
            "--data",
            str(root),
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "out" / "beir_test.json").read_text())
    assert out["queries"] == 2 and out["corpus"] == 4
    assert all(f'"{m}"' in res.output for m in ("nDCG@10", "Recall@100", "MRR@10"))  # printed
    # nDCG@10 by brute force from the model itself (no instruction, title + text as documents)
    model = load_embedder(str(tmp_path / "model"), device="cpu")
    data = read_beir(root)
    dids = list(data.corpus)
    c = model.encode_candidates([Item(data.doc_text(d)) for d in dids], show_progress=False)
    want = []
    for qid, text in data.queries.items():
        q = model.encode_queries([Item(text)], show_progress=False)[0]  # (D,)
        ranked = [dids[j] for j in np.argsort(-(c @ q), kind="stable")[:10]]
        gains = [data.qrels[qid].get(d, 0) for d in ranked]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))  # linear gain, trec_eval
        ideal = sorted(data.qrels[qid].values(), reverse=True)
        want.append(dcg / sum(g / math.log2(i + 2) for i, g in enumerate(ideal)))
    assert out["nDCG@10"] == pytest.approx(float(np.mean(want)), abs=1e-4)
    assert out["ignore_identical_ids"] is True and out["drop_no_relevant"] is False
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "beir",
            "--data",
            str(root),
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(tmp_path / "out2"),
            "--no-progress",
            "--identical-ids",
            "keep",
            "--no-relevant",
            "drop",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "out2" / "beir_test.json").read_text())
    assert out["ignore_identical_ids"] is False and out["drop_no_relevant"] is True


@pytest.mark.slow
def test_mteb_adapter_matches_our_metrics(tmp_path):
    import mteb  # needs: pip install mteb (or mmembed[dev]); fails loudly when missing

    from mmembed.eval.mteb_adapter import MTEBEncoder, beir_task

    root = beir_dir(tmp_path / "b")
    ours = evaluate_beir(root, WordEncoder(), out_dir=tmp_path / "out", show_progress=False)
    result = mteb.evaluate(
        MTEBEncoder(WordEncoder(), name="test/words"),
        beir_task(root),
        cache=None,
        show_progress_bar=False,
    )
    scores = result.task_results[0].scores["test"][0]
    assert scores["ndcg_at_10"] == pytest.approx(ours["nDCG@10"], abs=1e-4)
    assert scores["mrr_at_10"] == pytest.approx(ours["MRR@10"], abs=1e-4)
    assert scores["recall_at_100"] == pytest.approx(ours["Recall@100"], abs=1e-4)


def _with_query_id_in_corpus(root: Path) -> Path:
    """q1's own id is a corpus document that q1 retrieves first."""
    with open(root / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": "q1", "title": "", "text": "apple"}) + "\n")
    return root


def test_identical_ids_are_ignored_as_beir_does(tmp_path):
    """BEIR's EvaluateRetrieval drops a hit whose id is the query's (ignore_identical_ids=True
    by default); mteb's default keeps it. eval beir follows BEIR and can keep it."""
    root = _with_query_id_in_corpus(beir_dir(tmp_path / "b"))
    res = evaluate_beir(root, WordEncoder(), out_dir=tmp_path / "o1", show_progress=False)
    # q1 "apple": q1 (cos 1, dropped), d2 (cos 1), d1 -> d1 at rank 2, as without the copy
    assert res["MRR@10"] == pytest.approx((0.5 + 1.0) / 2) and res["ignore_identical_ids"]
    kept = evaluate_beir(
        root,
        WordEncoder(),
        out_dir=tmp_path / "o2",
        show_progress=False,
        ignore_identical_ids=False,
    )
    # kept: q1 and d2 tie at cos 1 (ranked by id, descending: q1 first), d1 third
    assert kept["MRR@10"] == pytest.approx((1 / 3 + 1.0) / 2)


@pytest.mark.slow
def test_mteb_adapter_agrees_when_the_corpus_holds_the_query(tmp_path):
    import mteb  # needs: pip install mteb (or mmembed[dev]); fails loudly when missing

    from mmembed.eval.mteb_adapter import MTEBEncoder, beir_task

    root = _with_query_id_in_corpus(beir_dir(tmp_path / "b"))
    for ignore in (True, False):
        ours = evaluate_beir(
            root,
            WordEncoder(),
            out_dir=tmp_path / f"out{ignore}",
            show_progress=False,
            ignore_identical_ids=ignore,
        )
        result = mteb.evaluate(
            MTEBEncoder(WordEncoder(), name="test/words"),
            beir_task(root, ignore_identical_ids=ignore),
            cache=None,
            show_progress_bar=False,
        )
        scores = result.task_results[0].scores["test"][0]
        assert scores["ndcg_at_10"] == pytest.approx(ours["nDCG@10"], abs=1e-4), ignore
        assert scores["mrr_at_10"] == pytest.approx(ours["MRR@10"], abs=1e-4), ignore


def test_query_judged_all_zero_counts_as_zero(tmp_path):
    """BEIR / pytrec_eval average over every judged query: one whose judgements are all 0
    scores 0 and stays in the mean (--no-relevant drop leaves it out)."""
    root = beir_dir(tmp_path / "b")
    with open(root / "qrels" / "test.tsv", "a") as f:
        f.write("q3\td2\t0\n")
    res = evaluate_beir(root, WordEncoder(), out_dir=tmp_path / "o1", show_progress=False)
    assert res["queries"] == 3 and res["queries_without_relevant"] == 1
    assert res["MRR@10"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    dropped = evaluate_beir(
        root, WordEncoder(), out_dir=tmp_path / "o2", show_progress=False, drop_no_relevant=True
    )
    assert dropped["queries"] == 2 and dropped["MRR@10"] == pytest.approx((0.5 + 1.0) / 2)
