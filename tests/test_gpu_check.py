"""scripts/gpu_check.py --tiny on the CPU: the GPU script's four sections (the gpu-marked tests,
encode, a LoRA + checkpointing + GradCache training step, exact search) run end to end at tiny
shapes and report sane numbers. Speed is not asserted; the code paths are."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_tiny_runs_every_section_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--tiny", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "section | measure" in proc.stdout and "all sections ok" in proc.stdout
    r = json.loads(out.read_text())
    assert r["ok"] and r["device"] == "cpu" and r["shape"] == "tiny"

    n_tests = len(re.findall(r"^def test_", (ROOT / "tests/test_gpu.py").read_text(), re.M))
    assert r["tests"]["passed"] == n_tests >= 4 and r["tests"]["failed"] == 0

    for label in ("images", "texts"):
        enc = r["encode"][label]
        assert enc["items_per_s"] > 0 and 0 < enc["mfu"] < 1.5
    assert r["encode"]["images"]["seq_len"] > r["encode"]["texts"]["seq_len"] // 2

    tr = r["train"]
    assert tr["lora_modules"] > 0 and tr["lora_params_trained"] == 2 * tr["lora_modules"]
    assert tr["pairs_per_s"] > 0
    first, second = tr["loss"]
    assert math.isfinite(first) and abs(first - math.log(tr["pairs"])) < 0.1  # random init
    assert second != first  # the optimiser step changed the model

    s = r["search"]
    assert s["self_hits"] == 4  # pool rows searched for find themselves
    for row in s["batches"].values():
        assert row["queries_per_s"] > 0 and row["ratio_to_hbm_bound"] > 0
