"""Paired bootstrap over test queries (resampled within each task) of R@5 differences between
systems, from `mmembed eval mbeir` outputs (runs/{local,global}.trec, top 50) and the qrels
(relevance > 0). Checks each system's recomputed means against its results.json first. Covers
test-query sampling only, not training seeds. Reads EVAL_DIR and DATA; writes OUT only.

    python3 eval/mini/full_test/bootstrap.py EVAL_DIR DATA OUT.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

NAMES = ["mmembed-mini", "score_fusion96", "random_aligned", "random", "continual_aligned",
         "continual", "random_aligned_s1"]  # fmt: skip
PAIRS = [
    ("score_fusion96", "mmembed-mini"),
    ("score_fusion96", "continual_aligned"),
    ("random_aligned", "random"),
    ("continual_aligned", "random_aligned"),
    ("mmembed-mini", "random"),
    ("continual_aligned", "mmembed-mini"),
    ("continual_aligned", "continual"),
    ("random_aligned_s1", "random_aligned"),
]
COMPOSED = [6, 7, 8]
DRAWS = 2000


def main() -> None:
    ev, data, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
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

    def hits(name: str, pool: str) -> np.ndarray:  # (Q,) 1.0 where a positive is in the top 5
        top: dict[str, list[str]] = defaultdict(list)
        for line in (ev / name / "runs" / f"{pool}.trec").read_text().splitlines():
            q, _, d, rank, *_ = line.split()
            if int(rank) <= 5:
                top[q].append(d)
        return np.array([bool(set(top[q]) & pos[q]) for q in qids], float)

    def mean(h: np.ndarray, sel: list[int], draw: dict | None = None) -> float:
        return 100 * float(np.mean([h[idx[t] if draw is None else idx[t][draw[t]]].mean()
                                    for t in sel]))  # fmt: skip

    names = [n for n in NAMES if (ev / n / "results.json").is_file()]
    h = {(n, p): hits(n, p) for n in names for p in ("local", "global")}
    for n in names:
        rep = json.loads((ev / n / "results.json").read_text())["means"]
        for p in ("local", "global"):
            assert abs(mean(h[n, p], tasks) - rep[p]) < 1e-6, (n, p)
    rng = np.random.default_rng(0)
    draws = [{t: rng.integers(0, len(idx[t]), len(idx[t])) for t in tasks} for _ in range(DRAWS)]
    res = {}
    for a, b in [(a, b) for a, b in PAIRS if a in names and b in names]:
        for p in ("local", "global"):
            for label, sel in (("mean", tasks), ("composed", COMPOSED)):
                diff = h[a, p] - h[b, p]
                bs = [mean(diff, sel, dr) for dr in draws]
                lo, hi = np.percentile(bs, [2.5, 97.5])
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
