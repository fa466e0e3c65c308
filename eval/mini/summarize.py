"""One `mmembed eval mbeir` results.json as a table row: R@5 per task (local and global pool),
the means, the composed-task mean (tasks 6, 7, 8), wrong-modality top-1 errors in the global pool
and the settings that identify the run. Shared by eval/mini/full_test/make_tables.py and
eval/mini/full_build/make_tables.py."""

from __future__ import annotations

from typing import Any

COMPOSED = (6, 7, 8)
SETTINGS = ("model", "fingerprint", "seconds", "data", "instructions", "instruction_seed", "k")


def summarize(rep: dict[str, Any]) -> dict[str, Any]:
    tasks: dict[str, dict[str, Any]] = {}
    for r in rep["results"]:
        t = tasks.setdefault(f"{r['dataset']} t{r['task_id']}", {"task_id": r["task_id"]})
        t[r["system"]] = r["recall"]["R@5"]
        t["queries"] = r["queries"]
        if r["system"] == "global" and r["queries"]:
            t["wrong_modality_global"] = 100.0 * r["errors"]["wrong_modality"] / r["queries"]
    row: dict[str, Any] = {"tasks": tasks}
    row["mean_local"] = rep["means"].get("local")
    row["mean_global"] = rep["means"].get("global")
    for pool in ("local", "global"):
        comp = [v[pool] for v in tasks.values() if v["task_id"] in COMPOSED]
        row[f"composed_{pool}"] = sum(comp) / len(comp)
    row["wrong_modality_global"] = rep["error_rates"]["global"]["wrong_modality"]
    row["queries"] = sum(v["queries"] for v in tasks.values())
    for k in SETTINGS:
        row[k] = rep["settings"].get(k)
    return row


def f1(v: Any) -> str:
    return "–" if v is None else f"{v:.1f}"
