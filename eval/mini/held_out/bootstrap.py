"""Paired bootstrap of transfer: for each system, the model trained on the held-out build minus
the same system trained on the full build (FB_EVAL/NAME), on the test queries of each held-out
source and on the in-domain rest (DATA/hold_out.json; the test split of both builds is the
same), resampled within each task. Writes OUT only.

    python3 eval/mini/held_out/bootstrap.py HELD_EVAL FB_EVAL DATA OUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paired_bootstrap import paired_bootstrap, write  # noqa: E402

SYSTEMS = ["score_fusion96", "random", "random_aligned"]


def main() -> None:
    held, fb, data, out = (Path(a) for a in sys.argv[1:5])
    subsets = {k: set(v) for k, v in json.loads((data / "hold_out.json").read_text())[
        "test_queries"].items()}  # fmt: skip
    touched = set().union(*subsets.values())
    qids = set()
    for f in (data / "qrels" / "test").glob("*.txt"):
        qids.update(line.split()[0] for line in f.read_text().splitlines() if line.strip())
    subsets["in-domain"] = qids - touched
    folders = {f"held:{s}": held / s for s in SYSTEMS} | {f"full:{s}": fb / s for s in SYSTEMS}
    pairs = [(f"held:{s}", f"full:{s}") for s in SYSTEMS]
    write(paired_bootstrap(folders, pairs, data, subsets), out)


if __name__ == "__main__":
    main()
