"""The GPU path as one script: what a GPU machine runs, end to end, in a few minutes, with no
downloads (random weights at the real shapes; torch, transformers and peft are enough; faiss-gpu
is used only when importable).

  (1) tests   the tests marked ``gpu`` (tests/test_gpu.py) on the device;
  (2) encode  bf16 encoding with MM-Embed's 7B shape (LLaVA-Next: CLIP ViT-L/14-336 -> projector
              -> bidirectional Mistral-7B, 32 layers x 4096; 512-latent attention pooler), built
              by mmembed's own classes at random init on the device: items/s and model FLOP
              utilisation (MFU), image+text candidates and text queries;
  (3) train   one step of that shape with LoRA, gradient checkpointing and GradCache through
              mmembed.train (prepare_model, InfoNCELoss, grad_cache_step) + AdamW: peak memory and
              pairs/s;
  (4) search  exact inner-product top-k over a synthetic 5.6M x 4096 fp16 pool (the M-BEIR global
              pool's size) with chunked matmul + top-k in torch (mmembed.index.torch_search):
              queries/s and the ratio to the HBM-bandwidth bound.

It prints one table and writes it as JSON. ``--tiny`` runs the same code paths at tiny shapes on
the CPU (a smoke test: its numbers say nothing about a GPU).

Usage:  python3 scripts/gpu_check.py [--json gpu_check.json]         # on the GPU machine
        python3 scripts/gpu_check.py --tiny --json /tmp/tiny.json     # CPU smoke run
Options: --sections tests,encode,train,search   --pool-size N   --wheels DIR (install missing
         pure wheels, e.g. pytest or Pillow, from a folder that travelled with the tree)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

# Dense (no sparsity) bf16 tensor-core peaks and HBM bandwidths from the vendors' data sheets
# (SXM parts). Keys are matched against torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
HBM_TB_S = {"H200": 4.8, "H100": 3.35, "A100": 2.04, "L40S": 0.864, "A10": 0.6}
REQUIRED = ("torch", "transformers", "peft", "numpy", "PIL", "tokenizers", "safetensors")

SHAPES = {
    # encode: batch of image+text candidates, batch of text queries; train: pairs, GradCache
    # chunk; search: pool rows, dim, query batches, k
    "full": {
        "encode_images": 32,
        "encode_texts": 64,
        "text_chars": 48,
        "timed_steps": 3,
        "train_pairs": 32,
        "train_chunk": 8,
        "pool": 5_609_079,
        "dim": 4096,
        "query_batches": (64, 1024),
        "k": 10,
        "pool_chunk": 1 << 20,
    },
    "tiny": {
        "encode_images": 4,
        "encode_texts": 8,
        "text_chars": 24,
        "timed_steps": 2,
        "train_pairs": 4,
        "train_chunk": 2,
        "pool": 20_000,
        "dim": 64,
        "query_batches": (8, 64),
        "k": 10,
        "pool_chunk": 4096,
    },
}


# ---- helpers ------------------------------------------------------------------------------------
def _lookup(table: dict[str, float], name: str) -> float | None:
    return next((v for k, v in table.items() if k in name), None)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, steps: int) -> float:
    """Seconds per call of ``fn`` (one warm-up call first)."""
    fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / steps


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None


def measured_matmul_tflops(device: str, tiny: bool) -> float:
    """Achieved TFLOP/s of a large square bf16 matmul (fp32 on the CPU): a sanity scale for MFU."""
    import torch

    n = 512 if tiny else 8192
    dt = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    sec = _timed(lambda: a @ b, device, 3 if tiny else 10)
    return 2 * n**3 / sec / 1e12


def measured_copy_tb_s(device: str, tiny: bool) -> float:
    """Achieved memory bandwidth of a device-to-device copy (bytes read + written per second)."""
    import torch

    n = (1 << 24) if tiny else (1 << 31)  # 32 MB / 4 GB of fp16
    x = torch.empty(n, device=device, dtype=torch.float16)
    y = torch.empty_like(x)
    sec = _timed(lambda: y.copy_(x), device, 3 if tiny else 10)
    return 2 * 2 * n / sec / 1e12


# ---- (1) tests ----------------------------------------------------------------------------------
def _install_pytest_stub() -> None:
    """Just enough of pytest for tests/test_gpu.py to import where pytest is absent."""
    import types

    class _Mark:
        def __getattr__(self, name):
            def marker(*args, **kwargs):
                if len(args) == 1 and callable(args[0]) and not kwargs:
                    return args[0]
                return lambda f: f

            return marker

    class Skipped(Exception):
        pass

    def skip(reason=""):
        raise Skipped(reason)

    stub = types.ModuleType("pytest")
    stub.mark = _Mark()
    stub.skip = skip
    stub.Skipped = Skipped
    sys.modules["pytest"] = stub


def run_gpu_tests(device: str, in_process: bool = False) -> dict:
    """pytest -m gpu tests/test_gpu.py in a subprocess; without pytest (or ``in_process``), each
    test function is called in this process (they take no fixtures)."""
    env = dict(os.environ, MMEMBED_TEST_DEVICE=device)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t = time.perf_counter()
    if not in_process and importlib.util.find_spec("pytest") is not None:
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "tests/test_gpu.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfEs",
        ]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        tail = (proc.stdout + proc.stderr).strip().splitlines()
        counts = {w: 0 for w in ("passed", "failed", "skipped", "errors")}
        summary = tail[-1] if tail else ""  # e.g. "4 passed, 1 skipped in 3.21s"
        for n, w in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary):
            counts["errors" if w.startswith("error") else w] = int(n)
        ok = proc.returncode == 0 and not (
            counts["failed"] or counts["skipped"] or counts["errors"]
        )
        out = {"runner": "pytest", "returncode": proc.returncode, **counts}
        if not ok:
            out["output_tail"] = "\n".join(tail[-40:])
    else:
        os.environ["MMEMBED_TEST_DEVICE"] = device
        if importlib.util.find_spec("pytest") is None:
            _install_pytest_stub()
        sys.path.insert(0, str(ROOT / "tests"))
        mod = importlib.import_module("test_gpu")
        counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
        failures = []
        for name in sorted(n for n in dir(mod) if n.startswith("test_")):
            try:
                getattr(mod, name)()
                counts["passed"] += 1
            except Exception as e:  # a failing test is reported, the run goes on
                counts["failed"] += 1
                failures.append(f"{name}: {type(e).__name__}: {e}")
        ok = counts["failed"] == 0
        out = {"runner": "in process", **counts}
        if failures:
            out["output_tail"] = "\n".join(failures)
    out["seconds"] = time.perf_counter() - t
    out["ok"] = ok and out["passed"] > 0
    return out


# ---- (2) encode ---------------------------------------------------------------------------------
def build_model(shape: str, device: str):
    """An Embedder of MM-Embed's architecture (bench_encode.llava_mmembed_config), built by
    mmembed's classes directly on ``device`` in bf16 (fp32 on the CPU), random init."""
    import torch
    from bench_encode import llava_mmembed_config
    from transformers.initialization import no_init_weights

    from mmembed.model.embedder import Embedder, EmbedderConfig
    from mmembed.model.shards import default_dtype
    from mmembed.testing.tiny_embedders import byte_tokenizer

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    cfg = llava_mmembed_config("7b" if shape == "full" else "tiny")
    if shape != "full":  # a 56 px view (16 visual tokens) keeps the CPU smoke run short
        cfg["backbone"]["hf_config"]["vision_config"]["image_size"] = 56
    tok = byte_tokenizer(add_eos_in_template=False)
    with torch.device(device), default_dtype(dtype), no_init_weights():
        emb = Embedder.build(EmbedderConfig(**cfg), tokenizer=tok, pretrained=False)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in emb.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02, generator=gen)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return emb.eval(), cfg


def _items(n: int, chars: int, with_image: bool, side: int):
    from PIL import Image

    from mmembed.data.records import Item

    text = ("a photo of a small red boat on a quiet lake at dawn, " * 8)[:chars]
    return [
        Item(text, Image.new("RGB", (side, side), (i % 256, 90, 160)) if with_image else None)
        for i in range(n)
    ]


def _to_device(batch: dict, device: str, dtype) -> dict:
    return {
        k: v.to(device, dtype=dtype if v.is_floating_point() else None) if hasattr(v, "to") else v
        for k, v in batch.items()
    }


def bench_encode(emb, cfg: dict, shape: dict, device: str, peak: float | None) -> dict:
    import torch
    from bench_encode import model_flops

    side = cfg["backbone"]["hf_config"]["vision_config"]["image_size"]
    out: dict = {"params_b": sum(p.numel() for p in emb.parameters()) / 1e9}
    for label, n, with_image in (
        ("images", shape["encode_images"], True),
        ("texts", shape["encode_texts"], False),
    ):
        items = _items(n, shape["text_chars"], with_image, side)
        batch = emb.collate(items, is_query=not with_image)  # image+text candidates / text queries
        batch = _to_device(batch, device, emb.dtype)
        seq = int(batch["input_ids"].shape[1])
        with torch.inference_mode():
            sec = _timed(lambda b=batch: emb(b), device, shape["timed_steps"])
        flops = model_flops(cfg, n, seq, n if with_image else 0)
        tflops = flops / sec / 1e12
        out[label] = {
            "batch": n,
            "seq_len": seq,
            "items_per_s": n / sec,
            "tflops": tflops,
            "mfu": tflops / peak if peak else None,
        }
    out["peak_mem_gb"] = _peak_gb(device)
    return out


# ---- (3) train ----------------------------------------------------------------------------------
def bench_train(emb, cfg: dict, shape: dict, device: str) -> dict:
    import torch

    from mmembed.train.config import LoraConfig, ModelConfig
    from mmembed.train.gradcache import grad_cache_step, split
    from mmembed.train.loss import InfoNCELoss, PairMeta
    from mmembed.train.setup import prepare_model, set_train_mode

    mcfg = ModelConfig(
        lora=LoraConfig(enabled=True, r=16, alpha=32, dropout=0.0),
        gradient_checkpointing=True,
        freeze_vision=True,
    )
    report = prepare_model(emb, mcfg)
    emb.to(device)  # adapters are created on the CPU by some peft versions
    set_train_mode(emb, mcfg)
    side = cfg["backbone"]["hf_config"]["vision_config"]["image_size"]
    n, chunk = shape["train_pairs"], shape["train_chunk"]
    queries = _items(n, shape["text_chars"], False, side)
    cands = _items(n, shape["text_chars"], True, side)
    instr = ["Retrieve the image that matches the caption."] * n
    q_chunks = [
        _to_device(emb.collate(list(q), instructions=list(i), is_query=True), device, emb.dtype)
        for q, i in zip(split(queries, chunk), split(instr, chunk), strict=True)
    ]
    c_chunks = [
        _to_device(emb.collate(list(c), is_query=False), device, emb.dtype)
        for c in split(cands, chunk)
    ]
    ar = torch.arange(n, device=device)
    meta = PairMeta(
        labels=ar,
        cand_ids=ar,
        pos_ids=ar[:, None],
        pos_valid=torch.ones(n, 1, dtype=torch.bool, device=device),
        own=torch.eye(n, dtype=torch.bool, device=device),
        in_batch=torch.ones(n, dtype=torch.bool, device=device),
    )
    loss_fn = InfoNCELoss(0.02).to(device)
    params = [p for p in emb.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)

    def step() -> float:
        out = grad_cache_step(emb, q_chunks, c_chunks, lambda q, c: loss_fn(q, c, meta))
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss)

    _free(device)
    t = time.perf_counter()
    first_loss = step()
    _sync(device)
    first = time.perf_counter() - t
    t = time.perf_counter()
    second_loss = step()
    _sync(device)
    sec = time.perf_counter() - t
    lora_grads = sum(1 for n_, p in emb.named_parameters() if "lora_" in n_ and p.requires_grad)
    return {
        "pairs": n,
        "gradcache_chunk": chunk,
        "trainable_m": report.trainable / 1e6,
        "lora_modules": report.lora_modules,
        "lora_params_trained": lora_grads,
        "first_step_s": first,
        "step_s": sec,
        "pairs_per_s": n / sec,
        "peak_mem_gb": _peak_gb(device),
        "loss": [first_loss, second_loss],
    }


# ---- (4) search ---------------------------------------------------------------------------------
def bench_search(shape: dict, device: str, bw_tb_s: float, peak: float | None) -> dict:
    import torch

    from mmembed.index.torch_search import exact_topk

    n, d, k = shape["pool"], shape["dim"], shape["k"]
    gen = torch.Generator(device=device).manual_seed(0)
    pool = torch.empty((n, d), device=device, dtype=torch.float16)  # (N, D)
    step = 1 << 18
    for s in range(0, n, step):  # generate in slices: no fp32 copy of the whole pool
        x = torch.randn((min(step, n - s), d), device=device, generator=gen)
        pool[s : s + len(x)] = torch.nn.functional.normalize(x, dim=1).half()
    out: dict = {"pool": n, "dim": d, "pool_gb": pool.numel() * 2 / 1e9, "k": k, "batches": {}}
    for qb in shape["query_batches"]:
        q = torch.nn.functional.normalize(torch.randn((qb, d), device=device, generator=gen), dim=1)
        sec = _timed(
            lambda q=q, pool=pool: exact_topk(q, pool, k, pool_chunk=shape["pool_chunk"]), device, 1
        )
        bound_mem = qb / (pool.numel() * 2 / (bw_tb_s * 1e12))  # one read of the pool per batch
        row = {
            "seconds_per_batch": sec,
            "queries_per_s": qb / sec,
            "hbm_bound_qps": bound_mem,
            "ratio_to_hbm_bound": (qb / sec) / bound_mem,
        }
        if peak:
            bound_flops = qb / (2 * qb * n * d / (peak * 1e12))
            row["roofline_qps"] = min(bound_mem, bound_flops)
            row["ratio_to_roofline"] = (qb / sec) / row["roofline_qps"]
        out["batches"][str(qb)] = row
    # a correctness spot check at full size: 4 queries that are pool rows find themselves
    rows = torch.tensor([0, n // 3, n // 2, n - 1], device=device)
    _s, found = exact_topk(pool[rows].float(), pool, 1, pool_chunk=shape["pool_chunk"])
    out["self_hits"] = int((found[:, 0] == rows).sum())
    pool = None  # free the pool before faiss-gpu allocates its own
    out["faiss_gpu"] = bench_faiss_gpu(shape, device)
    return out


def bench_faiss_gpu(shape: dict, device: str) -> dict | str:
    """faiss GpuIndexFlatIP (fp16 storage) on up to 1M rows, only when faiss-gpu is importable."""
    try:
        import faiss
        import numpy as np
    except ImportError:
        return "not importable (torch path only)"
    if not device.startswith("cuda") or getattr(faiss, "get_num_gpus", lambda: 0)() == 0:
        return "faiss has no GPU here"
    n, d, k = min(shape["pool"], 1_000_000), shape["dim"], shape["k"]
    rng = np.random.default_rng(0)
    res = faiss.StandardGpuResources()
    conf = faiss.GpuIndexFlatConfig()
    conf.useFloat16 = True
    index = faiss.GpuIndexFlatIP(res, d, conf)
    for s in range(0, n, 1 << 17):
        x = rng.standard_normal((min(1 << 17, n - s), d), dtype=np.float32)
        index.add(x / np.linalg.norm(x, axis=1, keepdims=True))
    out = {"pool": n}
    for qb in shape["query_batches"]:
        q = rng.standard_normal((qb, d), dtype=np.float32)
        sec = _timed(lambda q=q: index.search(q, k), "cpu", 1)
        out[f"qps_batch_{qb}"] = qb / sec
    return out


# ---- driver -------------------------------------------------------------------------------------
def install_wheels(folder: str) -> None:
    """pip-install whatever of REQUIRED (and pytest) is missing from local wheels, no index."""
    missing = [m for m in (*REQUIRED, "pytest") if importlib.util.find_spec(m) is None]
    names = {"PIL": "pillow"}
    if missing:
        target = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu_check_site"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-index",
                "--find-links",
                folder,
                "--target",
                str(target),
                *[names.get(m, m) for m in missing],
            ],
            check=False,
        )
        sys.path.insert(0, str(target))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
        importlib.invalidate_caches()


def table(results: dict) -> str:
    def f(x, nd=1):
        return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    rows = [("section", "measure", "value")]
    t = results.get("tests", {})
    if "error" in t and isinstance(t.get("error"), str):
        rows.append(("tests", "error", t["error"].splitlines()[-1][:90]))
    elif t:
        rows.append(
            (
                "tests",
                f"gpu tests ({t.get('runner')})",
                f"{t.get('passed')} passed, {t.get('failed')} failed, {t.get('skipped', 0)} skipped",
            )
        )
    e = results.get("encode", {})
    for label in ("images", "texts"):
        if label in e:
            r = e[label]
            what = "image+text candidates" if label == "images" else "text queries"
            rows.append(
                (
                    "encode",
                    f"{what}/s (batch {r['batch']}, {r['seq_len']} tok)",
                    f(r["items_per_s"]),
                )
            )
            rows.append(
                (
                    "encode",
                    f"  TFLOP/s, MFU ({what})",
                    f"{r['tflops']:.3g}, {f(r['mfu'] * 100 if r['mfu'] else None)}% of "
                    + results.get("mfu_against", "peak"),
                )
            )
    if "peak_mem_gb" in e:
        rows.append(("encode", "peak memory GB", f(e["peak_mem_gb"])))
    tr = results.get("train", {})
    if "pairs_per_s" in tr:
        rows.append(
            (
                "train",
                f"pairs/s (LoRA+ckpt+GradCache, {tr['pairs']} pairs, chunk {tr['gradcache_chunk']})",
                f(tr["pairs_per_s"], 2),
            )
        )
        rows.append(("train", "peak memory GB", f(tr["peak_mem_gb"])))
    s = results.get("search", {})
    for qb, r in s.get("batches", {}).items():
        rows.append(
            (
                "search",
                f"queries/s, batch {qb} ({s['pool']:,} x {s['dim']} fp16)",
                f(r["queries_per_s"]),
            )
        )
        bound = results.get("bandwidth_bound_from", "HBM")
        rows.append(
            ("search", f"  ratio to bandwidth bound ({bound})", f(r["ratio_to_hbm_bound"], 3))
        )
        if "ratio_to_roofline" in r:
            rows.append(
                ("search", "  ratio to roofline (bandwidth or FLOPs)", f(r["ratio_to_roofline"], 3))
            )
    for name in ("tests", "encode", "train", "search"):
        err = results.get(name, {}).get("error") if isinstance(results.get(name), dict) else None
        if err and name != "tests":
            rows.append((name, "error", err.splitlines()[-1][:90]))
    w = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = [" | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "-+-".join("-" * x for x in w))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (smoke run)")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    ap.add_argument("--sections", default="tests,encode,train,search")
    ap.add_argument("--pool-size", type=int, default=None, help="search pool rows")
    ap.add_argument("--json", default="gpu_check.json", help="where the results go")
    ap.add_argument(
        "--threads", type=int, default=None, help="CPU torch threads (default 1 with --tiny)"
    )
    ap.add_argument("--wheels", default=None, help="folder of wheels for missing pure packages")
    args = ap.parse_args(argv)
    if args.wheels:
        install_wheels(args.wheels)
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        print(f"missing packages: {', '.join(missing)} (carry wheels and pass --wheels DIR)")
        return 2
    import torch

    device = args.device or ("cpu" if args.tiny else "cuda")
    threads = args.threads or (1 if args.tiny else None)
    if threads:  # one thread: a shared CPU slows several threads down more than one
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --tiny for the CPU smoke run")
        return 2
    shape = dict(SHAPES["tiny" if args.tiny else "full"])
    if args.pool_size:
        shape["pool"] = args.pool_size
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    start = time.perf_counter()
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    results: dict = {
        "device": device,
        "gpu": gpu,
        "shape": "tiny" if args.tiny else "full (MM-Embed 7B, M-BEIR global pool)",
        "torch": torch.__version__,
        "transformers": importlib.import_module("transformers").__version__,
        "peft": importlib.import_module("peft").__version__,
    }
    spec_peak = _lookup(PEAK_BF16_TFLOPS, gpu) if device.startswith("cuda") else None
    spec_bw = _lookup(HBM_TB_S, gpu) if device.startswith("cuda") else None
    results["measured_matmul_tflops"] = measured_matmul_tflops(device, args.tiny)
    results["measured_copy_tb_s"] = measured_copy_tb_s(device, args.tiny)
    results["spec_peak_bf16_tflops"] = spec_peak
    results["spec_hbm_tb_s"] = spec_bw
    peak = spec_peak or results["measured_matmul_tflops"]
    bw = spec_bw or results["measured_copy_tb_s"]
    results["mfu_against"] = "data-sheet peak" if spec_peak else "measured matmul"
    results["bandwidth_bound_from"] = "data-sheet HBM" if spec_bw else "measured copy"
    print(
        f"{gpu}: matmul {results['measured_matmul_tflops']:.3g} TFLOP/s, copy "
        f"{results['measured_copy_tb_s']:.3g} TB/s measured",
        flush=True,
    )

    def run(name: str, fn) -> None:
        if name not in sections:
            return
        t = time.perf_counter()
        try:
            results[name] = fn()
        except Exception:  # one section failing must not hide the others
            results[name] = {"error": traceback.format_exc(limit=6)}
            print(results[name]["error"], file=sys.stderr)
        results[name]["seconds"] = results[name].get("seconds", time.perf_counter() - t)
        print(f"[{time.perf_counter() - start:6.1f}s] {name} done", flush=True)

    run("tests", lambda: run_gpu_tests(device, in_process=args.tiny))
    if {"encode", "train"} & set(sections):  # one model for both; gone before the search
        emb, cfg = build_model("full" if not args.tiny else "tiny", device)
        run("encode", lambda: bench_encode(emb, cfg, shape, device, peak))
        run("train", lambda: bench_train(emb, cfg, shape, device))
        emb = None
    _free(device)
    run("search", lambda: bench_search(shape, device, bw, spec_peak))
    results["total_seconds"] = time.perf_counter() - start
    ok = all(
        "error" not in results[s] and results[s].get("ok", True) for s in sections if s in results
    )
    results["ok"] = ok
    print(table(results))
    print(
        f"total {results['total_seconds']:.0f} s; {'all sections ok' if ok else 'FAILURES above'}"
    )
    Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
