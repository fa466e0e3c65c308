"""Tables of issue 16's full-build rows: per system and training seed, the model trained on the
FULL offline train split (FB_EVAL/NAME, NAME_s1, NAME_s2) beside the same system trained on the
`--limit 40` build (LIM_EVAL/NAME), all evaluated on the full test split by `mmembed eval mbeir`
(results.json of each) and, where present, on 1,000 WordNet test definitions by `mmembed eval
beir` (NAME/beir/beir_test.json). Writes OUT/tables.md, OUT/results.json and OUT/times.tsv (a
copy of TIMES); reads nothing else.

    python3 eval/mini/full_build/make_tables.py FB_EVAL LIM_EVAL TIMES_TSV OUT
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from summarize import f1, summarize  # noqa: E402

SYSTEMS = ["score_fusion96", "score_fusion144", "random", "random_aligned", "continual",
           "continual_aligned"]  # fmt: skip
SEEDS = {"": 0, "_s1": 1, "_s2": 2}
KEYS = ("mean_local", "mean_global", "composed_local", "composed_global", "wrong_modality_global",
        "wordnet_ndcg10")  # fmt: skip


def _row(folder: Path) -> dict[str, Any] | None:
    p = folder / "results.json"
    if not p.is_file():
        return None
    row = summarize(json.loads(p.read_text(encoding="utf-8")))
    beir = folder / "beir" / "beir_test.json"
    row["wordnet_ndcg10"] = (
        100 * json.loads(beir.read_text(encoding="utf-8"))["nDCG@10"] if beir.is_file() else None
    )
    return row


def main() -> None:
    fb, lim, times_tsv, out = (Path(a) for a in sys.argv[1:5])
    rows: dict[str, dict[str, Any]] = {}
    for s in SYSTEMS:
        for sfx, seed in SEEDS.items():
            for train, ev in (("full", fb), ("limit40", lim)):
                if (row := _row(ev / f"{s}{sfx}")) is not None:
                    rows[f"{s} | {train} | {seed}"] = {"system": s, "trained_on": train,
                                                       "seed": seed, **row}  # fmt: skip
    times = dict(line.split("\t") for line in times_tsv.read_text().splitlines() if line.strip())
    names = list(rows)
    md = ["| system | trained on | seed | mean R@5 local | mean R@5 global | composed (6,7,8) "
          "local | composed global | wrong-modality top-1 % (global) | WordNet nDCG@10 |",
          "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for n in names:
        r = rows[n]
        train = "full train split" if r["trained_on"] == "full" else "`--limit 40` train split"
        md.append(f"| {r['system']} | {train} | {r['seed']} | "
                  + " | ".join(f1(r[k]) for k in KEYS) + " |")  # fmt: skip
    seeds = {}
    for s in SYSTEMS:
        runs = [rows[k] for k in names if k.startswith(f"{s} | full | ")]
        if len(runs) >= 2:
            seeds[s] = {
                k: [r[k] for r in runs] for k in KEYS if all(r[k] is not None for r in runs)
            }
            seeds[s]["seeds"] = [r["seed"] for r in runs]
    if seeds:
        md += ["", "Full-build rows over training seeds (mean ± sample standard deviation, "
               "[min, max]; the evaluation seed is 0 throughout):", "",
               "| system | seeds | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]  # fmt: skip
        for s, v in seeds.items():
            cells = []
            for k in KEYS:
                if k not in v:
                    cells.append("–")
                    continue
                xs = v[k]
                cells.append(f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f} "
                             f"[{min(xs):.1f}, {max(xs):.1f}]")  # fmt: skip
            md.append(f"| {s} | {', '.join(map(str, v['seeds']))} | {' | '.join(cells)} |")
    tasks = list(rows[names[0]]["tasks"])
    head = " | ".join(f"{rows[n]['system']} ({rows[n]['trained_on']}, s{rows[n]['seed']})"
                      for n in names)  # fmt: skip
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
    md += ["", "| system | trained on | seed | model | fingerprint |", "|---|---|---|---|---|"]
    for n in names:
        r = rows[n]
        md.append(f"| {r['system']} | {r['trained_on']} | {r['seed']} | `{r['model']}` | "
                  f"`{r['fingerprint']}` |")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    doc = {"rows": rows, "seeds": seeds, "times_s": {k: int(v) for k, v in times.items()}}
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    shutil.copyfile(times_tsv, out / "times.tsv")


if __name__ == "__main__":
    main()
