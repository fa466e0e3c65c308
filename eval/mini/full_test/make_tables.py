"""Builds eval/mini/full_test/results.{md,json} and times.tsv from the per-system
`mmembed eval mbeir` outputs of the full-test-split evaluation (one folder per system, each with
results.json) and a tsv of wall times. Writes only the files in OUT; reads nothing else.

    python3 eval/mini/full_test/make_tables.py EVAL_DIR TIMES_TSV OUT [LIMIT40_EVAL_DIR [DEMO_DIR]]

DEMO_DIR holds demo_<system>_pool<N>.json files (the demo's returned dict, see README).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from summarize import f1, summarize  # noqa: E402

ORDER = ["mmembed-mini", "score_fusion96", "random_aligned", "random", "continual_aligned",
         "score_fusion", "continual", "random_aligned_s1"]  # fmt: skip


def main() -> None:
    ev, times_tsv, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    lim = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    times = {}
    for line in times_tsv.read_text().splitlines():
        k, v = line.split("\t")
        times[k] = float(v)
    sy = {}
    for name in ORDER:
        p = ev / name / "results.json"
        if p.is_file():
            sy[name] = summarize(json.loads(p.read_text()))
            sy[name]["wall_s"] = times.get(name)
    limit40 = {}
    if lim:
        for name in ORDER:
            p = lim / name / "results.json"
            if p.is_file():
                limit40[name] = summarize(json.loads(p.read_text()))
    demo = {}
    if len(sys.argv) > 5:
        for p in sorted(Path(sys.argv[5]).glob("demo_*_pool*.json")):
            d = json.loads(p.read_text())
            demo[p.stem.removeprefix("demo_")] = {
                k: d.get(k) for k in ("model", "pool", "hit_rate", "hits_at_5", "wall_s")
            }
    res = {"systems": sy, "wall_s": times, "limit40_same_models": limit40, "demo": demo}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    L = ["| system | test queries | mean R@5 local | mean R@5 global | composed (6,7,8) local | "
         "composed global | wrong-modality top-1 % (global) | eval wall s |",
         "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for n, r in sy.items():
        L.append(f"| {n} | {r['queries']} | {f1(r['mean_local'])} | {f1(r['mean_global'])} | "
                 f"{f1(r['composed_local'])} | {f1(r['composed_global'])} | "
                 f"{f1(r['wrong_modality_global'])} | {f1(r['wall_s'])} |")  # fmt: skip
    names = list(sy)
    keys = sorted(sy[names[0]]["tasks"], key=lambda k: sy[names[0]]["tasks"][k]["task_id"])
    L += ["", "R@5 per task, local / global pool:", "",
          "| task | queries | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]  # fmt: skip
    for k in keys:
        cells = [f"{f1(sy[n]['tasks'][k].get('local'))} / {f1(sy[n]['tasks'][k].get('global'))}"
                 for n in names]  # fmt: skip
        L.append(f"| {k} | {sy[names[0]]['tasks'][k]['queries']} | " + " | ".join(cells) + " |")
    L += ["", "Wrong-modality top-1 errors in the global pool, % of the task's queries:", "",
          "| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]  # fmt: skip
    for k in keys:
        cells = [f1(sy[n]["tasks"][k].get("wrong_modality_global")) for n in names]
        L.append(f"| {k} | " + " | ".join(cells) + " |")
    if limit40:
        L += ["", "The same model folders on the `--limit 40` test split (678 queries, 785-item "
              "global pool): mmembed-mini measured here by the same command "
              "(`limit40_mmembed-mini/`), the others read from the align helper's "
              "`runs/mini/eval/NAME/results.json`:", "",
              "| system | mean R@5 local | mean R@5 global | composed local | composed global "
              "| wrong-modality % | same fingerprint as the full-test row |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
        for n, r in limit40.items():
            same = "yes" if n in sy and sy[n]["fingerprint"] == r["fingerprint"] else "–"
            L.append(f"| {n} | {f1(r['mean_local'])} | {f1(r['mean_global'])} | "
                     f"{f1(r['composed_local'])} | {f1(r['composed_global'])} | "
                     f"{f1(r['wrong_modality_global'])} | {same} |")  # fmt: skip
    if demo:
        L += ["", "Demo hit rate (a positive in the top 5; 200 test queries drawn with seed 0 from "
              "every test file; candidates: the demo's pool):", "",
              "| system | candidates | hits / 200 | rate % | per task (hits/queries) | "
              "examples found (of 6) | wall s |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for key, d in demo.items():
            h = d["hit_rate"]
            per = ", ".join(f"t{t} {a}/{b}" for t, (a, b) in h["per_task"].items())
            L.append(f"| {key.rsplit('_pool', 1)[0]} | {d['pool']} | {h['hits']} | "
                     f"{100 * h['rate']:.1f} | {per} | {d['hits_at_5']} | {d['wall_s']} |")  # fmt: skip
    L += ["", "| system | model | fingerprint | eval's own seconds | wall s |",
          "|---|---|---|---|---|"]  # fmt: skip
    for n, r in sy.items():
        L.append(f"| {n} | `{r['model']}` | `{r['fingerprint']}` | {r['seconds']} | "
                 f"{f1(r['wall_s'])} |")  # fmt: skip
    (out / "tables.md").write_text("\n".join(L) + "\n", encoding="utf-8")
    (out / "times.tsv").write_text(
        "".join(f"{k}\t{v}\n" for k, v in times.items()), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
