"""Transfer report: Recall@k of evaluated models on the test queries of each held-out source of an
offline build (its hold_out.json, written by ``build-offline --hold-out``) beside the in-domain
rest of the test split (docs/offline_benchmark.md, "Held-out sources").

It reads what ``mmembed eval mbeir`` wrote (``runs/{local,global}.trec``) and the build's test
qrels, so a model trained on the held-out build and one trained on the full build are scored on
the same queries without encoding anything again. Recall@k is M-BEIR's hit rate; a subset's mean
averages its tasks as the M-BEIR mean does. Knows run and qrels files; knows nothing of models."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmembed.data.mbeir import read_qrels
from mmembed.data.offline.holdout import FILE as HOLD_OUT_FILE
from mmembed.data.runfile import read_run_ids
from mmembed.eval.mbeir import discover

IN_DOMAIN = "in-domain"
POOLS = ("local", "global")


def read_subsets(data: Path) -> dict[str, list[str]]:
    """spec -> test qids of the build at ``data`` (its hold_out.json); a clear error if none."""
    path = data / HOLD_OUT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no hold_out.json; build the data with "
            "`mmembed data build-offline --hold-out SPEC ...` to have held-out sources"
        )
    return json.loads(path.read_text(encoding="utf-8"))["test_queries"]


def _test_tasks(data: Path) -> dict[str, tuple[str, set[str]]]:
    """qid -> (task label 'Dataset tN', positive dids) over the build's test qrels."""
    out: dict[str, tuple[str, set[str]]] = {}
    for t in discover(data, "test"):
        for qid, pos in read_qrels(t.qrels_file).items():
            out[qid] = (f"{t.dataset} t{t.task_id}", pos)
    return out


def transfer_report(data: str | Path, folders: Mapping[str, str | Path], k: int = 5) -> dict:
    """``folders``: system -> an ``eval mbeir`` output folder. Returns the JSON document:
    subsets (queries per task) and, per system and pool, Recall@k per task and the mean."""
    data = Path(data)
    truth = _test_tasks(data)
    held = read_subsets(data)
    unknown = sorted({q for qids in held.values() for q in qids} - set(truth))
    if unknown:
        raise ValueError(f"{data / HOLD_OUT_FILE}: {len(unknown)} qids not in the test qrels, "
                         f"e.g. {unknown[0]}; is it this build's file?")  # fmt: skip
    touched = {q for qids in held.values() for q in qids}
    subsets = {**held, IN_DOMAIN: sorted(q for q in truth if q not in touched)}
    doc: dict[str, Any] = {
        "k": k,
        "subsets": {
            name: dict(sorted(Counter(truth[q][0] for q in qids).items()))
            for name, qids in subsets.items()
        },
        "systems": {},
    }
    for system, folder in folders.items():
        rows = {}
        for pool in POOLS:
            run = Path(folder) / "runs" / f"{pool}.trec"
            if not run.is_file():
                continue
            top = read_run_ids(run, max_rank=k)
            hit = {q: bool(set(top.get(q, ())) & pos) for q, (_, pos) in truth.items()}
            rows[pool] = {name: _recall(qids, truth, hit) for name, qids in subsets.items()}
        if not rows:
            raise FileNotFoundError(f"{folder}: no runs/local.trec or runs/global.trec; "
                                    "point at an `mmembed eval mbeir --out` folder")  # fmt: skip
        doc["systems"][system] = rows
    return doc


def _recall(qids: list[str], truth, hit: Mapping[str, bool]) -> dict[str, Any]:
    per: dict[str, list[bool]] = {}
    for q in qids:
        per.setdefault(truth[q][0], []).append(hit[q])
    tasks = {t: 100 * sum(h) / len(h) for t, h in sorted(per.items())}
    return {"tasks": tasks, "mean": sum(tasks.values()) / len(tasks) if tasks else None}


def markdown(doc: dict) -> str:
    """The mean table (subset x pool per system) and one per-task table per subset."""
    subsets = list(doc["subsets"])
    k = doc["k"]
    head = ["system"] + [f"{s} {p}" for s in subsets for p in POOLS]
    lines = [f"Recall@{k} (hit rate, %) on the test queries of each held-out source and on the "
             "in-domain rest; a subset's mean averages its tasks.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for system, rows in doc["systems"].items():
        cells = [_fmt(rows.get(p, {}).get(s, {}).get("mean")) for s in subsets for p in POOLS]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    for s in subsets:
        tasks = doc["subsets"][s]
        lines += ["", f"**{s}**, Recall@{k} local / global per task (queries):", "",
                  "| system | " + " | ".join(f"{t} ({n})" for t, n in tasks.items()) + " |",
                  "|" + "---|" * (len(tasks) + 1)]  # fmt: skip
        for system, rows in doc["systems"].items():
            cells = [" / ".join(_fmt(rows.get(p, {}).get(s, {}).get("tasks", {}).get(t))
                                for p in POOLS) for t in tasks]  # fmt: skip
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"
