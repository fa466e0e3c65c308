"""Result tables of an M-BEIR Report: markdown (headline side by side, recall detail, top-1
error analysis), JSON and TSV (long format, one metric per row). Knows nothing of models."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from mmembed.data.atomic import atomic_write_text
from mmembed.data.records import TASKS
from mmembed.eval.mbeir import ERROR_KINDS, Report


def task_name(task_id: int) -> str:
    q, c = TASKS[task_id]
    return f"{task_id}: {q.replace('image,text', 'image+text')} → {c.replace('image,text', 'image+text')}"


def _result(report: Report, task, system: str):
    """``report.get``, but right for two task sets that share (dataset id, task) -- datasets of
    one's own can -- by display name first, else by order: each row shows its own numbers."""
    key = (task.dataset_id, task.task_id)
    same = [t for t in report.tasks if (t.dataset_id, t.task_id) == key]
    if len(same) <= 1:
        return report.get(task, system)
    rs = [r for r in report.results if r.system == system and (r.dataset_id, r.task_id) == key]
    named = [r for r in rs if r.dataset == task.dataset]
    if len(named) == 1:
        return named[0]
    i = next(i for i, t in enumerate(same) if t is task)
    return rs[i] if i < len(rs) else None


def _clashes(report: Report) -> list[str]:
    """A note for each (dataset id, task) that more than one query file shares."""
    seen: dict[tuple[int, int], list[str]] = {}
    for t in report.tasks:
        seen.setdefault((t.dataset_id, t.task_id), []).append(t.query_file.name)
    return [
        f"Note: {', '.join(files)} share dataset id {d} and task {k}; each row above is its "
        "own file, but give each dataset its own id so ids never collide."
        for (d, k), files in seen.items()
        if len(files) > 1
    ]


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def headline_table(report: Report) -> str:
    """Tasks as rows, each system's headline recall as a column, the mean last."""
    systems = report.systems
    rows = []
    for t in report.tasks:
        cells = []
        for s in systems:
            r = _result(report, t, s)
            cells.append(_fmt(r.value if r else None))
        rows.append([task_name(t.task_id), t.dataset, f"R@{t.headline_k}", *cells])
    rows.append(
        [
            "**mean**",
            f"{len(report.tasks)} tasks",
            "",
            *(f"**{_fmt(report.mean(s))}**" for s in systems),
        ]
    )
    return _md(["task", "dataset", "metric", *systems], rows)


def recall_table(report: Report) -> str:
    rows = []
    for t in report.tasks:
        for s in report.systems:
            r = _result(report, t, s)
            if r is None:
                continue
            recall = ", ".join(f"{k} {_fmt(v)}" for k, v in r.recall.items())
            notes = []
            if r.missing:
                notes.append(f"{r.missing} unanswered")
            if r.no_positive:
                notes.append(f"{r.no_positive} without positives")
            rows.append(
                [task_name(t.task_id), t.dataset, s, str(r.queries), recall, "; ".join(notes)]
            )
    return _md(["task", "dataset", "system", "queries", "recall (%)", "notes"], rows)


def error_table(report: Report) -> str:
    """Top-1 misses per task split into wrong modality / wrong domain / other (% of queries)."""
    rows = []
    for s in report.systems:
        for t in report.tasks:
            r = _result(report, t, s)
            if r is None or not r.queries:
                continue
            n = r.queries
            misses = sum(r.errors.values())
            rows.append(
                [
                    s,
                    task_name(t.task_id),
                    t.dataset,
                    _fmt(100 * misses / n),
                    *(_fmt(100 * r.errors.get(k, 0) / n) for k in ERROR_KINDS),
                ]
            )
        rates = report.error_rates(s)
        rows.append(
            [s, "**all**", "", _fmt(sum(rates.values())), *(_fmt(rates[k]) for k in ERROR_KINDS)]
        )
    return _md(
        ["system", "task", "dataset", "top-1 miss", "wrong modality", "wrong domain", "other"], rows
    )


def markdown(report: Report) -> str:
    st = report.settings
    head = [f"# M-BEIR evaluation ({report.split} split)", ""]
    if st:
        head.append(
            "Settings: " + ", ".join(f"{k}={v}" for k, v in st.items() if k != "seconds") + ""
        )
        head.append("")
    return "\n".join(
        [
            *head,
            "## Headline (Recall@5; Recall@10 for Fashion200K and FashionIQ), %",
            "",
            headline_table(report),
            "",
            *(line for note in _clashes(report) for line in (note, "")),
            "## Recall per task",
            "",
            recall_table(report),
            "",
            "## Top-1 errors (% of queries)",
            "",
            "wrong modality: the top-1 candidate's modality differs from the task's candidate modality; "
            "wrong domain: right modality, another dataset; other: right modality and dataset.",
            "",
            error_table(report),
            "",
        ]
    )


def tsv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["task_id", "task", "dataset", "dataset_id", "split", "system", "metric", "value"])
    for t in report.tasks:
        for s in report.systems:
            r = _result(report, t, s)
            if r is None:
                continue
            base = [t.task_id, task_name(t.task_id), t.dataset, t.dataset_id, t.split, s]
            for k, v in r.recall.items():
                w.writerow([*base, k, f"{v:.4f}"])
            for k in ERROR_KINDS:
                w.writerow([*base, f"top1_{k}", r.errors.get(k, 0)])
            w.writerow([*base, "queries", r.queries])
    for s in report.systems:
        w.writerow(["", "mean", "", "", report.split, s, "headline_mean", f"{report.mean(s):.4f}"])
    return buf.getvalue()


def write_report(report: Report, out_dir: str | Path, stem: str = "results") -> list[Path]:
    """results.md, results.json, results.tsv in ``out_dir`` (each written atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for ext, text in (
        ("md", markdown(report)),
        ("json", json.dumps(report.to_json(), indent=2) + "\n"),
        ("tsv", tsv(report)),
    ):
        written.append(atomic_write_text(out / f"{stem}.{ext}", text))
    return written
