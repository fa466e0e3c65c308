"""Search benchmark, every figure measured in this run: exact search over N x D normalised fp32
vectors (mmembed.index.Index vs raw faiss, batched and single queries), single-query time vs the
memory-bandwidth bound, IVF and HNSW recall@10 vs queries/s against exact search, and a
global-pool evaluation (Q queries over N candidates, top-k in query chunks) with its peak memory.

    python3 scripts/bench_search.py                       # 1,000,000 x 384, 100,000 eval queries
    python3 scripts/bench_search.py --n 200000 --eval-queries 20000 --sections exact,ivf

Data: clustered unit vectors (random centres + noise), generated in chunks from a seed; queries
are fresh points of the same distribution (eval queries: noisy copies of a known candidate, which
is their positive)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB -> GB


def clustered(
    n: int, d: int, seed: int, centres: np.ndarray, noise: float = 0.6, chunk: int = 131_072
):
    """Yield (start, chunk) of unit vectors: a random centre plus gaussian noise, normalised."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)]  # (m, d)
        x += noise * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield start, x


def make_data(n: int, d: int, seed: int, noise: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4096, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, d), dtype=np.float32)
    for start, chunk in clustered(n, d, seed + 1, centres, noise):
        x[start : start + len(chunk)] = chunk
    return x, centres


def bandwidth(x: np.ndarray) -> dict[str, float]:
    """Read bandwidth (GB/s): numpy sum over the whole array, on 1 thread and on all cores."""
    x.sum()  # warm the pages
    one = min(_timed(lambda: x.sum()) for _ in range(3))
    nt = os.cpu_count() or 1
    parts = np.array_split(x, nt)

    def all_threads() -> None:
        ts = [threading.Thread(target=p.sum) for p in parts]  # numpy drops the GIL in reductions
        [t.start() for t in ts]
        [t.join() for t in ts]

    many = min(_timed(all_threads) for _ in range(3))
    return {"gbps_1_thread": x.nbytes / one / 1e9, f"gbps_{nt}_threads": x.nbytes / many / 1e9}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def section_exact(x, queries, reps: int, single: int) -> dict:
    import faiss

    from mmembed.index import Index

    n, d = x.shape
    ids = [f"0:{i}" for i in range(n)]
    t = time.perf_counter()
    raw = faiss.IndexFlatIP(d)
    raw.add(x)
    t_raw_build = time.perf_counter() - t
    t = time.perf_counter()
    ours = Index.build(x, ids, gpu=False)
    t_our_build = time.perf_counter() - t
    del ids
    k = 10
    # identical answers first
    s_raw, i_raw = raw.search(queries[:50], k)
    s_our, l_our = ours.search_labels(queries[:50], k)
    assert np.allclose(s_raw, s_our, atol=1e-5) and (i_raw == l_our).mean() > 0.99
    batched_raw, batched_ours, batched_ids = [], [], []
    for _ in range(reps):  # interleaved: the machine is shared, so noise hits both alike
        batched_raw.append(_timed(lambda: raw.search(queries, k)))
        batched_ours.append(_timed(lambda: ours.search_labels(queries, k)))
        batched_ids.append(_timed(lambda: ours.search(queries, k)))
    # single queries, with faiss's default OpenMP threads and with one thread (on a shared,
    # oversubscribed machine one thread is often faster: no waiting for a descheduled peer)
    single_raw, single_ours, single_raw1, single_ours1 = [], [], [], []
    nt = faiss.omp_get_max_threads()
    for i in range(single):
        q = queries[i : i + 1]
        single_raw.append(_timed(lambda q=q: raw.search(q, k)))
        single_ours.append(_timed(lambda q=q: ours.search(q, k)))
        faiss.omp_set_num_threads(1)
        single_raw1.append(_timed(lambda q=q: raw.search(q, k)))
        single_ours1.append(_timed(lambda q=q: ours.search(q, k)))
        faiss.omp_set_num_threads(nt)
    med = statistics.median
    out = {
        "n": n,
        "dim": d,
        "queries_batched": len(queries),
        "k": k,
        "reps": reps,
        "single_queries": single,
        "build_s": {"raw_faiss": t_raw_build, "mmembed": t_our_build},
        "batched_qps": {
            "raw_faiss": len(queries) / med(batched_raw),
            "mmembed_labels": len(queries) / med(batched_ours),
            "mmembed_string_ids": len(queries) / med(batched_ids),
        },
        "single_ms": {
            "raw_faiss": 1e3 * med(single_raw),
            "mmembed_string_ids": 1e3 * med(single_ours),
        },
        "single_ms_1_thread": {
            "raw_faiss": 1e3 * med(single_raw1),
            "mmembed_string_ids": 1e3 * med(single_ours1),
        },
    }
    out["ratio_batched"] = (
        out["batched_qps"]["mmembed_string_ids"] / out["batched_qps"]["raw_faiss"]
    )
    out["ratio_single"] = out["single_ms"]["raw_faiss"] / out["single_ms"]["mmembed_string_ids"]
    out["ratio_single_1_thread"] = (
        out["single_ms_1_thread"]["raw_faiss"] / out["single_ms_1_thread"]["mmembed_string_ids"]
    )
    out["bytes_scanned_per_query"] = x.nbytes
    raw.reset()  # free its copy of the vectors
    return out, ours


def recall_at(ref: np.ndarray, got: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ref, got, strict=True)]))


def section_ann(
    x, queries, exact_labels, factory: str, params: list[dict], train_size: int
) -> dict:
    from mmembed.index import Index

    ids = [f"0:{i}" for i in range(len(x))]
    t = time.perf_counter()
    index = Index.build(x, ids, factory=factory, gpu=False, train_size=train_size)
    build = time.perf_counter() - t
    rows = []
    for p in params:
        index.search_labels(queries[:20], 10, params=p)  # warm
        dt = _timed(lambda p=p: index.search_labels(queries, 10, params=p))
        _, lab = index.search_labels(queries, 10, params=p)
        rows.append(
            {"params": p, "recall@10": recall_at(exact_labels, lab), "qps": len(queries) / dt}
        )
        log(f"  {factory} {p}: recall@10={rows[-1]['recall@10']:.3f} qps={rows[-1]['qps']:.0f}")
    return {"factory": factory, "n": len(x), "build_s": build, "rows": rows}


def section_eval(
    n: int, d: int, nq: int, k: int, seed: int, chunk: int, noise: float = 0.6
) -> dict:
    """Runs in its own process so its peak memory is its own: index built chunk by chunk (no
    second copy of the pool), queries searched in chunks, hit-rate recall from top-k labels."""
    import faiss  # noqa: F401

    from mmembed.eval.metrics import first_hit_ranks, hit_rate
    from mmembed.index import Index

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4096, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    t0 = time.perf_counter()
    index = Index.empty(d, gpu=False, id_mode="mbeir")
    targets = np.sort(rng.choice(n, nq, replace=False))  # each query's positive
    queries = np.empty((nq, d), dtype=np.float32)
    for start, chunk_x in clustered(n, d, seed + 1, centres, noise):
        index.add(chunk_x, [f"0:{i}" for i in range(start, start + len(chunk_x))])
        sel = targets[(targets >= start) & (targets < start + len(chunk_x))]
        pos = np.searchsorted(targets, sel)
        queries[pos] = chunk_x[sel - start]
    queries += 1.0 * rng.standard_normal(queries.shape, dtype=np.float32) / np.sqrt(d)
    build = time.perf_counter() - t0
    rss_built = peak_rss_gb()
    log(f"eval: pool of {n} indexed in {build:.1f}s, peak RSS {rss_built:.2f} GB")
    t1 = time.perf_counter()
    first = np.empty(nq, dtype=np.int64)
    for s in range(0, nq, chunk):
        _, labels = index.search_labels(queries[s : s + chunk], k)  # (c, k): memory grows with k
        first[s : s + chunk] = first_hit_ranks(labels, [{int(t)} for t in targets[s : s + chunk]])
        done = min(s + chunk, nq)
        log(f"eval: {done}/{nq} queries, {done / (time.perf_counter() - t1):.1f} q/s")
    search = time.perf_counter() - t1
    return {
        "n": n,
        "dim": d,
        "queries": nq,
        "k": k,
        "query_chunk": chunk,
        "build_s": build,
        "search_s": search,
        "total_s": time.perf_counter() - t0,
        "qps": nq / search,
        "recall": {f"R@{kk}": 100 * hit_rate(first, kk) for kk in (1, 5, 10)},
        "peak_rss_gb": peak_rss_gb(),
        "peak_rss_after_index_gb": rss_built,
        "pool_fp32_gb": n * d * 4 / 1e9,
        "dense_score_matrix_would_be_gb": nq * n * 4 / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=500, help="batched queries for exact/IVF/HNSW")
    ap.add_argument("--single", type=int, default=20, help="single queries timed one by one")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--hnsw-n", type=int, default=200_000, help="HNSW is built over the first N vectors"
    )
    ap.add_argument("--eval-queries", type=int, default=100_000)
    ap.add_argument("--eval-k", type=int, default=50)
    ap.add_argument("--eval-chunk", type=int, default=8192)
    ap.add_argument("--sections", default="exact,ivf,hnsw,eval")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--noise",
        type=float,
        default=0.6,
        help="spread around the cluster centres (harder: larger)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--_eval_child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._eval_child:
        out = section_eval(a.n, a.dim, a.eval_queries, a.eval_k, a.seed, a.eval_chunk, a.noise)
        a.json.write_text(json.dumps(out, indent=2) + "\n")
        return
    import faiss

    sections = set(a.sections.split(","))
    res: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "faiss": faiss.__version__,
            "omp_threads": faiss.omp_get_max_threads(),
            "load_avg_at_start": os.getloadavg(),
        }
    }
    if sections & {"exact", "ivf", "hnsw"}:
        t = time.perf_counter()
        x, centres = make_data(a.n, a.dim, a.seed, a.noise)
        qgen = clustered(a.queries, a.dim, a.seed + 99, centres, a.noise)
        queries = next(qgen)[1]
        log(f"data {x.shape} in {time.perf_counter() - t:.1f}s")
        res["bandwidth"] = bandwidth(x)
        log(f"bandwidth {res['bandwidth']}")
        ours = None
        if "exact" in sections:
            res["exact"], ours = section_exact(x, queries, a.reps, a.single)
            bw = max(res["bandwidth"].values()) * 1e9
            res["exact"]["single_query_bound_ms"] = 1e3 * x.nbytes / bw
            best_single = min(
                res["exact"]["single_ms"]["mmembed_string_ids"],
                res["exact"]["single_ms_1_thread"]["mmembed_string_ids"],
            )
            res["exact"]["single_vs_bound"] = res["exact"]["single_query_bound_ms"] / best_single
            log(f"exact {json.dumps(res['exact'])}")
        from mmembed.index import Index

        if ours is None:
            ours = Index.build(x, [f"0:{i}" for i in range(len(x))], gpu=False)
        t = time.perf_counter()
        _, exact_labels = ours.search_labels(queries, 10)
        exact_qps = len(queries) / (time.perf_counter() - t)  # the exact baseline, same run
        res["exact_qps_for_ann"] = {"n": len(x), "qps": exact_qps}
        log(f"exact search over {len(x)}: {exact_qps:.1f} queries/s")
        del ours
        if "ivf" in sections:
            nlist = 1024
            res["ivf"] = section_ann(
                x,
                queries,
                exact_labels,
                f"IVF{nlist},Flat",
                [{"nprobe": p} for p in (1, 4, 16, 64, 256)],
                train_size=64 * nlist,
            )
        if "hnsw" in sections:
            xs = x[: a.hnsw_n]
            sub = Index.build(xs, [f"0:{i}" for i in range(len(xs))], gpu=False)
            t = time.perf_counter()
            _, sub_exact = sub.search_labels(queries, 10)
            res["exact_qps_for_hnsw"] = {
                "n": len(xs),
                "qps": len(queries) / (time.perf_counter() - t),
            }
            log(f"exact search over {len(xs)}: {res['exact_qps_for_hnsw']['qps']:.1f} queries/s")
            del sub
            res["hnsw"] = section_ann(
                xs,
                queries,
                sub_exact,
                "HNSW32",
                [{"efSearch": e} for e in (16, 32, 64, 128, 256)],
                train_size=0,
            )
        del x
    if "eval" in sections:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            child_json = Path(tmp) / "eval.json"
            cmd = [
                sys.executable,
                __file__,
                "--_eval_child",
                "--n",
                str(a.n),
                "--dim",
                str(a.dim),
                "--eval-queries",
                str(a.eval_queries),
                "--eval-k",
                str(a.eval_k),
                "--eval-chunk",
                str(a.eval_chunk),
                "--seed",
                str(a.seed),
                "--noise",
                str(a.noise),
                "--json",
                str(child_json),
            ]
            subprocess.run(cmd, check=True)  # its own process: its peak memory is its own
            res["eval"] = json.loads(child_json.read_text())
        log(f"eval {json.dumps(res['eval'])}")
    res["machine"]["load_avg_at_end"] = os.getloadavg()
    res["data"] = {"n": a.n, "dim": a.dim, "noise": a.noise, "seed": a.seed, "clusters": 4096}
    print(json.dumps(res, indent=2))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
