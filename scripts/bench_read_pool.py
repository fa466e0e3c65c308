"""Stream-read measurement for M-BEIR pools: generate an N-line candidate pool, then read it
in fresh subprocesses and report time and peak memory against the file size.

    python3 scripts/bench_read_pool.py [--lines 1000000] [--dir DIR] [--keep]

Modes, each in its own interpreter so peaks do not mix:
  stream      `for c in read_pool(path)` counting records (what the library does)
  tracemalloc the same with tracemalloc on: peak bytes allocated by Python during the read
  slurp       reference: `f.read()` of the whole file, then `splitlines()` (holds the raw file)
  list        reference: `list(read_pool(path))` (holds every record)
  validate    `validate_tree` of an M-BEIR tree holding the pool plus 1,000 test queries and
              their qrels (images not checked): what whole-tree validation costs
Peak RSS is the process's VmHWM minus its VmRSS after imports (the peak is reset first through
/proc/self/clear_refs), read from /proc/self/status."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time, tracemalloc
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
from mmembed.data.mbeir import read_pool
mode, path = sys.argv[1], sys.argv[2]
try:  # reset the peak (VmHWM) to the current RSS so that import-time peaks do not count
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
base = status("VmRSS:")
t0 = time.perf_counter()
traced = None
if mode == "stream":
    n = sum(1 for _ in read_pool(path))
elif mode == "tracemalloc":
    tracemalloc.start()
    n = sum(1 for _ in read_pool(path))
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
elif mode == "slurp":
    with open(path, "rb") as f:
        data = f.read()
    n = len(data.splitlines())
elif mode == "list":
    records = list(read_pool(path))
    n = len(records)
elif mode == "validate":
    from pathlib import Path
    from mmembed.data.validate import validate_tree
    report = validate_tree(Path(path).parents[2], check_images=False)
    assert report.ok, [str(e) for e in report.errors.errors[:5]]
    n = sum(f.records for f in report.files)
dt = time.perf_counter() - t0
print(json.dumps({"mode": mode, "records": n, "seconds": dt, "peak_rss_delta": status("VmHWM:") - base,
                  "traced_peak": traced, "base_rss": base}))
"""


def generate(path: Path, lines: int) -> float:
    """Write a realistic mixed-modality pool; returns seconds taken."""
    from mmembed.data.mbeir import write_jsonl

    words = [
        "red",
        "blue",
        "small",
        "large",
        "cat",
        "dog",
        "street",
        "market",
        "river",
        "bridge",
        "night",
        "morning",
        "photo",
        "of",
        "a",
        "the",
    ]

    def records():
        for i in range(lines):
            kind = i % 3
            text = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(8 + i % 12))
            yield {
                "txt": None if kind == 0 else f"{text} #{i}",
                "img_path": None if kind == 1 else f"mbeir_images/bench/{i // 1000:04d}/{i}.jpg",
                "modality": ("image", "text", "image,text")[kind],
                "did": f"{i % 10}:{i}",
                "src_content": json.dumps({"id": str(i), "source": "bench"}),
            }

    t0 = time.perf_counter()
    n = write_jsonl(path, records())
    assert n == lines
    # 1,000 test queries (text -> image, dids of image candidates) and their qrels
    from mmembed.data.mbeir import Layout, write_qrels, write_queries
    from mmembed.data.records import Modality, Query

    lay = Layout(path.parents[2])
    step = max(3, (lines // 1000) // 3 * 3)
    queries = [
        Query(f"0:{k}", f"query {k}", None, Modality.TEXT, 0, [f"{i % 10}:{i}"])
        for k, i in enumerate(range(0, lines, step))
        if k < 1000
    ]
    write_queries(lay.query_file("bench", 0, "test"), queries)
    write_qrels(lay.qrels_file("bench", 0, "test"), queries)
    return time.perf_counter() - t0


def run_mode(mode: str, path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if abs(n) >= 2**20 else f"{n / 2**10:,.0f} KiB"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument(
        "--dir", type=Path, default=None, help="where to write the pool (default: a temp dir)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the generated pool file")
    ap.add_argument("--modes", default="stream,tracemalloc,slurp,list,validate")
    args = ap.parse_args()
    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench_pool_"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cand_pool" / "local" / "mbeir_bench_task0_cand_pool.jsonl"
    gen_s = generate(path, args.lines)
    size = path.stat().st_size
    print(f"pool: {args.lines:,} lines, {mib(size)} on disk, generated in {gen_s:.1f} s ({path})")
    print(
        f"{'mode':<12} {'records':>10} {'seconds':>8} {'rec/s':>10} {'peak RSS +':>14} {'/ file':>7} "
        f"{'py peak':>12} {'/ file':>7}"
    )
    try:
        for mode in args.modes.split(","):
            r = run_mode(mode, path)
            traced = r["traced_peak"]
            print(
                f"{mode:<12} {r['records']:>10,} {r['seconds']:>8.2f} {r['records'] / r['seconds']:>10,.0f} "
                f"{mib(r['peak_rss_delta']):>14} {r['peak_rss_delta'] / size:>7.3f} "
                f"{mib(traced) if traced else '-':>12} {traced / size if traced else 0:>7.4f}"
                f"   (RSS after imports {mib(r['base_rss'])})"
            )
    finally:
        if not args.keep:
            import shutil

            for sub in ("cand_pool", "query", "qrels"):
                shutil.rmtree(folder / sub, ignore_errors=True)
            if args.dir is None:
                folder.rmdir()


if __name__ == "__main__":
    main()
