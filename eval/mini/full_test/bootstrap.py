"""Paired bootstrap over test queries (resampled within each task) of R@5 differences between
systems, from `mmembed eval mbeir` outputs (runs/{local,global}.trec, top 50) and the qrels
(relevance > 0). Checks each system's recomputed means against its results.json first. Covers
test-query sampling only, not training seeds. Reads EVAL_DIR and DATA; writes OUT only.

    python3 eval/mini/full_test/bootstrap.py EVAL_DIR DATA OUT.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paired_bootstrap import paired_bootstrap, write  # noqa: E402

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


def main() -> None:
    ev, data, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    write(paired_bootstrap({n: ev / n for n in NAMES}, PAIRS, data), out)


if __name__ == "__main__":
    main()
