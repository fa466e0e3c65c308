"""The paired bootstrap behind eval/mini/full_test/bootstrap.py and
eval/mini/full_build/bootstrap.py: R@5 differences between systems over the same test queries,
resampled within each task, from `mmembed eval mbeir` outputs (FOLDER/runs/{local,global}.trec,
top 50) and the test qrels of DATA (relevance > 0). Each system's recomputed means are checked
against its results.json first. Test-query sampling only, not training seeds."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

COMPOSED = [6, 7, 8]
DRAWS = 2000


def paired_bootstrap(
    folders: Mapping[str, Path],
    pairs: Sequence[tuple[str, str]],
    data: Path,
    subsets: Mapping[str, Collection[str]] | None = None,
) -> dict:
    """``folders``: label -> eval output folder (those without runs are left out); ``pairs``:
    (a, b) labels, reported as a - b; ``subsets``: name -> test qids, each resampled and reported
    on its own (keys "a - b | NAME mean local"), instead of the whole test split. Returns the
    JSON document the scripts write."""
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

    def hits(folder: Path, pool: str) -> np.ndarray:  # (Q,) 1.0 where a positive is in the top 5
        top: dict[str, list[str]] = defaultdict(list)
        for line in (folder / "runs" / f"{pool}.trec").read_text().splitlines():
            q, _, d, rank, *_ = line.split()
            if int(rank) <= 5:
                top[q].append(d)
        return np.array([bool(set(top[q]) & pos[q]) for q in qids], float)

    def mean(h: np.ndarray, idx: dict, sel: list[int], draw: dict | None = None) -> float:
        per = [h[idx[t] if draw is None else idx[t][draw[t]]].mean() for t in sel]
        return 100 * float(np.mean(per))

    folders = {k: v for k, v in folders.items() if (v / "runs" / "global.trec").is_file()}
    h = {(n, p): hits(f, p) for n, f in folders.items() for p in ("local", "global")}
    everything = {t: np.where(tid == t)[0] for t in tasks}
    for n, f in folders.items():
        rep = json.loads((f / "results.json").read_text())["means"]
        for p in ("local", "global"):
            assert abs(mean(h[n, p], everything, tasks) - rep[p]) < 1e-6, (n, p)
    rng = np.random.default_rng(0)
    res = {}
    for name, members in ({"": None} if subsets is None else subsets).items():
        keep = np.array([i for i, q in enumerate(qids) if members is None or q in members], int)
        idx = {t: keep[tid[keep] == t] for t in tasks if (tid[keep] == t).any()}
        sel = {"mean": list(idx), "composed": [t for t in COMPOSED if t in idx]}
        draws = [{t: rng.integers(0, len(ix), len(ix)) for t, ix in idx.items()}
                 for _ in range(DRAWS)]  # fmt: skip
        for a, b in [(a, b) for a, b in pairs if a in folders and b in folders]:
            for p in ("local", "global"):
                for label, ts in sel.items():
                    if not ts:
                        continue
                    diff = h[a, p] - h[b, p]
                    boot = [mean(diff, idx, ts, dr) for dr in draws]
                    lo, hi = np.percentile(boot, [2.5, 97.5])
                    key = f"{a} - {b} | {name + ' ' if name else ''}{label} {p}"
                    res[key] = [round(mean(diff, idx, ts), 2), round(float(lo), 2),
                                round(float(hi), 2)]  # fmt: skip
    return {
        "what": f"paired bootstrap over test queries, resampled within each task, {DRAWS} "
        "draws, numpy seed 0; [observed difference, 2.5 %, 97.5 %] in R@5 points",
        "pairs": res,
    }


def write(doc: dict, out: Path) -> None:
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
