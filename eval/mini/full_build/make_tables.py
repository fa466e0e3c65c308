"""Tables of issue 16's full-build rows: per system, the model trained on the FULL offline train
split (FB_EVAL/NAME) beside the same system trained on the `--limit 40` build (LIM_EVAL/NAME), both
evaluated on the full test split by `mmembed eval mbeir` (results.json of each). Writes
OUT/tables.md, OUT/results.json and OUT/times.tsv (a copy of TIMES); reads nothing else.

    python3 eval/mini/full_build/make_tables.py FB_EVAL LIM_EVAL TIMES_TSV OUT
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

SYSTEMS = ["score_fusion96", "random", "random_aligned", "random_s1", "random_aligned_s1"]
KEYS = ("mean_local", "mean_global", "composed_local", "composed_global", "wrong_modality_global")
COMPOSED = (6, 7, 8)


def summarize(path: Path) -> dict[str, Any]:
    rep = json.loads(path.read_text(encoding="utf-8"))
    tasks: dict[str, dict[str, Any]] = {}
    for r in rep["results"]:
        t = tasks.setdefault(f"{r['dataset']} t{r['task_id']}", {"task_id": r["task_id"]})
        t[r["system"]] = r["recall"]["R@5"]
        t["queries"] = r["queries"]
        if r["system"] == "global" and r["queries"]:
            t["wrong_modality_global"] = 100.0 * r["errors"]["wrong_modality"] / r["queries"]
    row: dict[str, Any] = {"tasks": tasks}
    row["mean_local"], row["mean_global"] = rep["means"]["local"], rep["means"]["global"]
    for pool in ("local", "global"):
        comp = [v[pool] for v in tasks.values() if v["task_id"] in COMPOSED]
        row[f"composed_{pool}"] = sum(comp) / len(comp)
    row["wrong_modality_global"] = rep["error_rates"]["global"]["wrong_modality"]
    row["queries"] = sum(v["queries"] for v in tasks.values())
    for k in ("model", "fingerprint", "data"):
        row[k] = rep["settings"].get(k)
    return row


def main() -> None:
    fb, lim, times_tsv, out = (Path(a) for a in sys.argv[1:5])
    rows: dict[str, dict[str, Any]] = {}
    for s in SYSTEMS:
        for train, ev in (("full", fb), ("limit40", lim)):
            p = ev / s / "results.json"
            if p.is_file():
                rows[f"{s} | {train}"] = {"system": s, "trained_on": train, **summarize(p)}
    times = dict(line.split("\t") for line in times_tsv.read_text().splitlines() if line.strip())
    names = list(rows)
    md = ["| system | trained on | mean R@5 local | mean R@5 global | composed (6,7,8) local "
          "| composed global | wrong-modality top-1 % (global) |",
          "|---|---|---|---|---|---|---|"]  # fmt: skip
    for n in names:
        r = rows[n]
        train = "full train split" if r["trained_on"] == "full" else "`--limit 40` train split"
        md.append(
            f"| {r['system']} | {train} | {r['mean_local']:.1f} | {r['mean_global']:.1f} | "
            f"{r['composed_local']:.1f} | {r['composed_global']:.1f} | "
            f"{r['wrong_modality_global']:.1f} |"
        )
    tasks = list(rows[names[0]]["tasks"])
    head = " | ".join(f"{rows[n]['system']} ({rows[n]['trained_on']})" for n in names)
    md += ["", "R@5 per task, local / global pool:", "",
           f"| task | queries | {head} |", "|---|---|" + "---|" * len(names)]  # fmt: skip
    for t in tasks:
        cells = " | ".join(
            f"{rows[n]['tasks'][t]['local']:.1f} / {rows[n]['tasks'][t]['global']:.1f}"
            for n in names
        )
        md.append(f"| {t} | {rows[names[0]]['tasks'][t]['queries']} | {cells} |")
    md += ["", "Wrong-modality top-1 errors in the global pool, % of the task's queries:", "",
           f"| task | {head} |", "|---|" + "---|" * len(names)]  # fmt: skip
    for t in tasks:
        cells = " | ".join(f"{rows[n]['tasks'][t]['wrong_modality_global']:.1f}" for n in names)
        md.append(f"| {t} | {cells} |")
    md += ["", "| system | trained on | model | fingerprint |", "|---|---|---|---|"]
    for n in names:
        r = rows[n]
        md.append(f"| {r['system']} | {r['trained_on']} | `{r['model']}` | `{r['fingerprint']}` |")
    seeds = {}
    for s in ("random", "random_aligned"):  # full-build rows with seeds 0 and 1
        pair = [rows.get(f"{s} | full"), rows.get(f"{s}_s1 | full")]
        if all(pair):
            seeds[s] = {k: [pair[0][k], pair[1][k]] for k in KEYS}
    if seeds:
        md += ["", "Full-build rows over training seeds 0 and 1 (mean ± half the range):", "",
               "| system | " + " | ".join(KEYS) + " |", "|---|" + "---|" * len(KEYS)]  # fmt: skip
        for s, v in seeds.items():
            cells = " | ".join(
                f"{(a + b) / 2:.1f} ± {abs(a - b) / 2:.1f}" for a, b in (v[k] for k in KEYS)
            )
            md.append(f"| {s} (full) | {cells} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    doc = {"rows": rows, "seeds_0_1": seeds, "times_s": {k: int(v) for k, v in times.items()}}
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    shutil.copyfile(times_tsv, out / "times.tsv")


if __name__ == "__main__":
    main()
