"""BEIR-format text retrieval folders (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``):
the one reader (bad records reported with their line and skipped) and the one writer (each file
written atomically). Knows nothing of models, metrics or training; what a grade of 0 means is the
caller's business (evaluation keeps it, training keeps grades above 0 as positives).

Reading rules, for every caller: a record needs a non-empty string or integer ``_id`` (ids are
strings afterwards); a repeated id is reported and the first kept; ``text`` and ``title`` must
be strings when present. A qrels file is ``query-id corpus-id score`` tab separated; a first
line naming the columns (``query-id``, ``query_id`` or ``qid``) and blank lines are skipped,
ids are stripped, scores are read as numbers and kept as whole grades (``int(float(x))``)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmembed.data.atomic import atomic_open
from mmembed.data.errors import DataError, ErrorLog, report

__all__ = [
    "BeirData",
    "beir_paths",
    "check_beir_folder",
    "doc_text",
    "read_beir",
    "read_beir_jsonl",
    "read_beir_qrels",
    "write_beir",
]

_HEADER_IDS = ("query-id", "query_id", "qid")


@dataclass
class BeirData:
    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> grade

    def doc_text(self, did: str) -> str:
        """Title and text joined by a space (BEIR's convention for single-field encoders)."""
        d = self.corpus[did]
        return doc_text(d.get("title"), d.get("text"))


def doc_text(title: str | None, text: str | None) -> str:
    """``title text``, stripped; either may be empty or missing."""
    return f"{title or ''} {text or ''}".strip()


def beir_paths(root: str | Path, split: str) -> dict[str, Path]:
    root = Path(root)
    return {
        "corpus": root / "corpus.jsonl",
        "queries": root / "queries.jsonl",
        "qrels": root / "qrels" / f"{split}.tsv",
    }


def check_beir_folder(root: str | Path, split: str) -> dict[str, Path]:
    """The folder's three file paths, or FileNotFoundError naming the first one missing."""
    paths = beir_paths(root, split)
    for name, p in paths.items():
        if not p.is_file():
            raise FileNotFoundError(
                f"{p}: missing BEIR {name} file (a BEIR folder holds corpus.jsonl, "
                f"queries.jsonl and qrels/{split}.tsv)"
            )
    return paths


def read_beir_jsonl(
    path: str | Path, errors: ErrorLog | None = None
) -> dict[str, tuple[int, dict[str, Any]]]:
    """``_id`` -> (line number, record) of a corpus.jsonl or queries.jsonl, in file order."""
    from mmembed.data.mbeir import iter_jsonl

    path = Path(path)
    out: dict[str, tuple[int, dict[str, Any]]] = {}
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
        out[rid] = (line, obj)
    return out


def read_beir_qrels(path: str | Path, errors: ErrorLog | None = None) -> dict[str, dict[str, int]]:
    """query id -> doc id -> grade, from ``query-id  corpus-id  score`` lines."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or (lineno == 1 and row[0].strip().lower() in _HEADER_IDS):
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
    """Load a BEIR folder for evaluation: only queries with qrels are kept; qrels naming unknown
    queries are reported and dropped, judged documents missing from the corpus reported."""
    errors = errors if errors is not None else ErrorLog()
    paths = check_beir_folder(root, split)
    corpus = {
        k: {"title": v.get("title") or "", "text": v.get("text") or ""}
        for k, (_, v) in read_beir_jsonl(paths["corpus"], errors).items()
    }
    all_queries = {
        k: v.get("text") or "" for k, (_, v) in read_beir_jsonl(paths["queries"], errors).items()
    }
    qrels = read_beir_qrels(paths["qrels"], errors)
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


def write_beir(root: str | Path, data: BeirData, split: str = "test") -> dict[str, int]:
    """Write ``data`` as a BEIR folder (corpus, every query given, ``qrels/<split>.tsv`` with a
    header line), each file atomically; returns the counts written."""
    paths = beir_paths(root, split)
    with atomic_open(paths["corpus"], "w", newline="\n") as f:
        for did, doc in data.corpus.items():
            rec = {"_id": did, "title": doc.get("title") or "", "text": doc.get("text") or ""}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with atomic_open(paths["queries"], "w", newline="\n") as f:
        for qid, text in data.queries.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    n = 0
    with atomic_open(paths["qrels"], "w", newline="\n") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in data.qrels.items():
            for did, grade in judged.items():
                f.write(f"{qid}\t{did}\t{grade}\n")
                n += 1
    return {"corpus": len(data.corpus), "queries": len(data.queries), "qrels": n}
