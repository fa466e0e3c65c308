"""Paired bootstrap over test queries (resampled within each task) of R@5 differences between
full-build-trained systems (FB_EVAL/NAME) and between each and its `--limit 40`-trained twin
(LIM_EVAL/NAME), from `mmembed eval mbeir` outputs (runs/{local,global}.trec, top 50) and the test
qrels of DATA (relevance > 0). Each system's recomputed means are checked against its
results.json first. Test-query sampling only, not training seeds. Writes OUT only.

    python3 eval/mini/full_build/bootstrap.py FB_EVAL LIM_EVAL DATA OUT.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paired_bootstrap import paired_bootstrap, write  # noqa: E402

SYSTEMS = ["score_fusion96", "random", "random_aligned", "random_s1", "random_aligned_s1",
           "score_fusion96_s1", "score_fusion96_s2", "random_s2", "random_aligned_s2",
           "score_fusion144", "continual", "continual_aligned", "score_fusion144_s1",
           "score_fusion144_s2", "continual_s1", "continual_aligned_s1"]  # fmt: skip
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
    ("full:random_aligned_s2", "full:random_s2"),
    ("full:score_fusion96_s1", "full:random_aligned_s1"),
    ("full:score_fusion96_s2", "full:random_aligned_s2"),
    ("full:score_fusion144", "full:continual_aligned"),  # the goal, at equal pairs
    ("full:score_fusion144", "full:continual"),
    ("full:continual_aligned", "full:continual"),  # align's effect on the whole recipe
    ("full:score_fusion144", "full:score_fusion96"),
    ("full:score_fusion144_s1", "full:continual_aligned_s1"),
    ("full:continual_aligned_s1", "full:continual_s1"),
    ("full:score_fusion144_s1", "full:score_fusion144"),
    ("full:score_fusion144_s2", "full:score_fusion144"),
]


def main() -> None:
    fb, lim, data, out = (Path(a) for a in sys.argv[1:5])
    folders = {f"full:{s}": fb / s for s in SYSTEMS} | {f"lim:{s}": lim / s for s in SYSTEMS}
    write(paired_bootstrap(folders, PAIRS, data), out)


if __name__ == "__main__":
    main()
