"""Text retrieval in BEIR format (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``):
reading with clear errors, and nDCG@10 / Recall@100 / MRR@10 of a model through the encode
cache and a FAISS index. Knows the Embedder protocol, not any model."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmembed.data.errors import DataError, ErrorLog, report
from mmembed.data.records import Item

log = logging.getLogger(__name__)


@dataclass
class BeirData:
    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text (only queries with qrels)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> grade

    def doc_text(self, did: str) -> str:
        """Title and text joined by a space (BEIR's convention for single-field encoders)."""
        d = self.corpus[did]
        return f"{d.get('title') or ''} {d.get('text') or ''}".strip()


def _read_jsonl(path: Path, errors: ErrorLog) -> dict[str, dict[str, Any]]:
    from mmembed.data.mbeir import iter_jsonl

    out: dict[str, dict[str, Any]] = {}
    for line, obj in iter_jsonl(path, errors):
        rid = obj.get("_id")
        if not isinstance(rid, (str, int)) or rid == "":
            report(
                errors,
                DataError(
                    path, line, "_id", "missing or not a string", "every record needs an '_id'"
                ),
            )
            continue
        rid = str(rid)
        if rid in out:
            report(
                errors, DataError(path, line, "_id", f"duplicate id {rid!r}", "ids must be unique")
            )
            continue
        if not isinstance(obj.get("text", ""), str) or not isinstance(
            obj.get("title", "") or "", str
        ):
            report(errors, DataError(path, line, "text", "text and title must be strings"))
            continue
        out[rid] = obj
    return out


def read_qrels_tsv(path: Path, errors: ErrorLog) -> dict[str, dict[str, int]]:
    """``query-id  corpus-id  score`` with a header line, tab separated."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        for lineno, row in enumerate(rows, 1):
            if not row or (
                lineno == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid")
            ):
                continue
            if len(row) < 3:
                report(
                    errors,
                    DataError(
                        path, lineno, None, f"expected 'query-id corpus-id score', got {row!r}"
                    ),
                )
                continue
            try:
                grade = int(float(row[2]))
            except ValueError:
                report(errors, DataError(path, lineno, "score", f"not a number: {row[2]!r}"))
                continue
            qrels.setdefault(row[0].strip(), {})[row[1].strip()] = grade
    return qrels


def read_beir(root: str | Path, split: str = "test", errors: ErrorLog | None = None) -> BeirData:
    """Load a BEIR-format folder; qrels naming unknown queries or documents are reported."""
    root = Path(root)
    errors = errors if errors is not None else ErrorLog()
    paths = {
        "corpus": root / "corpus.jsonl",
        "queries": root / "queries.jsonl",
        "qrels": root / "qrels" / f"{split}.tsv",
    }
    for name, p in paths.items():
        if not p.is_file():
            raise FileNotFoundError(
                f"{p}: missing BEIR {name} file (a BEIR folder holds corpus.jsonl, "
                f"queries.jsonl and qrels/{split}.tsv)"
            )
    corpus = {
        k: {"title": v.get("title") or "", "text": v.get("text") or ""}
        for k, v in _read_jsonl(paths["corpus"], errors).items()
    }
    all_queries = {k: v.get("text") or "" for k, v in _read_jsonl(paths["queries"], errors).items()}
    qrels = read_qrels_tsv(paths["qrels"], errors)
    for qid in [q for q in qrels if q not in all_queries]:
        report(
            errors,
            DataError(paths["qrels"], None, "query-id", f"query {qid!r} is not in queries.jsonl"),
        )
        qrels.pop(qid)
    unknown = {d for g in qrels.values() for d in g if d not in corpus}
    if unknown:
        report(
            errors,
            DataError(
                paths["qrels"],
                None,
                "corpus-id",
                f"{len(unknown)} judged document(s) not in corpus.jsonl, e.g. {sorted(unknown)[:3]}",
            ),
        )
    return BeirData(corpus, {q: all_queries[q] for q in qrels}, qrels)


def evaluate_beir(
    root: str | Path,
    encoder: Any,
    *,
    split: str = "test",
    out_dir: str | Path,
    instruction: str | None = None,
    k: int = 100,
    batch_size: int = 32,
    factory: str = "Flat",
    show_progress: bool = True,
    ignore_identical_ids: bool = True,
    drop_no_relevant: bool = False,
) -> dict[str, Any]:
    """Encode corpus and queries (resumable cache under ``out_dir``), search top-k, score as
    BEIR does (``beir_scores``: ties as pytrec_eval breaks them, all-zero queries count as 0;
    a retrieved document with the query's own id is dropped unless ``ignore_identical_ids`` is
    False -- BEIR's default; mteb's default is False, set True per task where corpora hold
    the queries)."""
    from mmembed.eval.metrics import beir_scores
    from mmembed.eval.runfile import RunWriter
    from mmembed.index import Index
    from mmembed.index.encode import EncodeEntry, content_source, encode_entries, load_encoded

    out = Path(out_dir)
    errors = ErrorLog()
    data = read_beir(root, split, errors)
    for e in errors.errors[:10]:
        log.warning("%s", e)
    cache = out / "cache" / encoder.fingerprint.replace("sha256:", "")[:16]
    docs = [EncodeEntry(d, Item(text=data.doc_text(d) or " ")) for d in data.corpus]
    queries = [EncodeEntry(q, Item(text=t or " "), instruction) for q, t in data.queries.items()]
    common = dict(
        shard_size=8192,
        batch_size=batch_size,
        rank=0,
        world_size=1,
        overwrite=True,
        show_progress=show_progress,
    )
    encode_entries(
        encoder,
        docs,
        cache / "corpus",
        is_query=False,
        source=content_source(docs),
        total=len(docs),
        **common,
    )
    encode_entries(
        encoder,
        queries,
        cache / f"queries_{split}",
        is_query=True,
        source=content_source(queries),
        total=len(queries),
        **common,
    )
    demb, dids, _ = load_encoded(cache / "corpus", expect_fingerprint=encoder.fingerprint)
    qemb, qids, _ = load_encoded(cache / f"queries_{split}", expect_fingerprint=encoder.fingerprint)
    index = Index.build(
        demb, dids, factory=factory, fingerprint=encoder.fingerprint, id_mode="table"
    )
    scores, labels = index.search_labels(qemb, k)
    ranked = index.ids_of(labels)
    # {doc: score}: beir_scores ranks ties as pytrec_eval does
    run = {
        q: dict(zip(row, s[: len(row)].tolist(), strict=True))
        for q, row, s in zip(qids, ranked, scores, strict=True)
    }
    with RunWriter(out / f"beir_{split}.trec", tag="mmembed") as w:
        for q, row, s in zip(qids, ranked, scores, strict=True):
            w.add(q, row, s[: len(row)].tolist())
    result = beir_scores(
        run,
        data.qrels,
        recall_k=k if k < 100 else 100,
        ignore_identical_ids=ignore_identical_ids,
        drop_no_relevant=drop_no_relevant,
    )
    result.update(
        {
            "data": str(root),
            "split": split,
            "corpus": len(docs),
            "fingerprint": encoder.fingerprint,
            "instruction": instruction,
            "ignore_identical_ids": ignore_identical_ids,
            "drop_no_relevant": drop_no_relevant,
            "skipped_records": len(errors),
        }
    )
    (out / f"beir_{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
