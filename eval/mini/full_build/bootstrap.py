"""Paired bootstrap over test queries (resampled within each task) of R@5 differences between
full-build-trained systems (FB_EVAL/NAME) and between each and its `--limit 40`-trained twin
(LIM_EVAL/NAME), from `mmembed eval mbeir` outputs (runs/{local,global}.trec, top 50) and the test
qrels of DATA (relevance > 0). Each system's recomputed means are checked against its
results.json first. Test-query sampling only, not training seeds. Writes OUT only.

    python3 eval/mini/full_build/bootstrap.py FB_EVAL LIM_EVAL DATA OUT.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

SYSTEMS = ["score_fusion96", "random", "random_aligned", "random_s1", "random_aligned_s1"]
PAIRS = [  # (a, b): a - b; "full:" = trained on the full build, "lim:" = on --limit 40
    ("full:random_aligned", "full:random"),
    ("full:score_fusion96", "full:random_aligned"),
    ("full:score_fusion96", "full:random"),
    ("full:score_fusion96", "lim:score_fusion96"),
    ("full:random", "lim:random"),
    ("full:random_aligned", "lim:random_aligned"),
    ("full:random_aligned_s1", "full:random_s1"),
    ("full:score_fusion96", "full:random_aligned_s1"),
    ("full:random_s1", "full:random"),
    ("full:random_aligned_s1", "full:random_aligned"),
]
COMPOSED = [6, 7, 8]
DRAWS = 2000


def main() -> None:
    fb, lim, data, out = (Path(a) for a in sys.argv[1:5])
    pos: dict[str, set[str]] = defaultdict(set)
    task: dict[str, int] = {}
    for f in sorted((data / "qrels" / "test").glob("*.txt")):
        for line in f.read_text().splitlines():
            q, _, d, rel, t = line.split()
            if int(rel) > 0:
                pos[q].add(d)
            task[q] = int(t)
    qids = sorted(task)
    tid = np.array([task[q] for q in qids])
    tasks = sorted(set(task.values()))
    idx = {t: np.where(tid == t)[0] for t in tasks}

    def hits(folder: Path, pool: str) -> np.ndarray:  # (Q,) 1.0 where a positive is in the top 5
        top: dict[str, list[str]] = defaultdict(list)
        for line in (folder / "runs" / f"{pool}.trec").read_text().splitlines():
            q, _, d, rank, *_ = line.split()
            if int(rank) <= 5:
                top[q].append(d)
        return np.array([bool(set(top[q]) & pos[q]) for q in qids], float)

    def mean(h: np.ndarray, sel: list[int], draw: dict | None = None) -> float:
        per = [h[idx[t] if draw is None else idx[t][draw[t]]].mean() for t in sel]
        return 100 * float(np.mean(per))

    folders = {f"full:{s}": fb / s for s in SYSTEMS} | {f"lim:{s}": lim / s for s in SYSTEMS}
    folders = {k: v for k, v in folders.items() if (v / "runs" / "global.trec").is_file()}
    h = {(n, p): hits(f, p) for n, f in folders.items() for p in ("local", "global")}
    for n, f in folders.items():
        rep = json.loads((f / "results.json").read_text())["means"]
        for p in ("local", "global"):
            assert abs(mean(h[n, p], tasks) - rep[p]) < 1e-6, (n, p)
    rng = np.random.default_rng(0)
    draws = [{t: rng.integers(0, len(idx[t]), len(idx[t])) for t in tasks} for _ in range(DRAWS)]
    res = {}
    for a, b in [(a, b) for a, b in PAIRS if a in folders and b in folders]:
        for p in ("local", "global"):
            for label, sel in (("mean", tasks), ("composed", COMPOSED)):
                diff = h[a, p] - h[b, p]
                lo, hi = np.percentile([mean(diff, sel, dr) for dr in draws], [2.5, 97.5])
                res[f"{a} - {b} | {label} {p}"] = [
                    round(mean(diff, sel), 2), round(float(lo), 2), round(float(hi), 2)
                ]  # fmt: skip
    doc = {
        "what": f"paired bootstrap over test queries, resampled within each task, {DRAWS} "
        "draws, numpy seed 0; [observed difference, 2.5 %, 97.5 %] in R@5 points",
        "pairs": res,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
