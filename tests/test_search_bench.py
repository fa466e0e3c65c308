"""The loopback load test, small: a real server process, 200 requests 8 at a time, zero errors.
(The full 1,000-request run with the default model: `python scripts/bench_serve.py`.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_small_load_test_has_no_errors(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_serve.py"), "--model", "colour",
         "--requests", "200", "--concurrency", "8", "--images", "24", "--notes", "12",
         "--workdir", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["requests"] == 200 and res["errors"] == 0
    assert set(res["by_kind"]) == {"text", "image", "thumb"}
    assert res["all"]["p50_ms"] <= res["all"]["p99_ms"]
    assert res["server_batching"]["items"] >= 170  # every search went through the batcher
