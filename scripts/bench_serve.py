"""Loopback load test of `mmembed serve`: builds a small library, starts the real server (uvicorn,
its own process, 127.0.0.1 only), sends N requests C at a time (text searches, image uploads,
thumbnails), and reports errors, p50/p90/p99 latency and throughput. The reference, measured in
the same run: the same searches called in-process (no HTTP), so the ratio is the server's cost.

    python3 scripts/bench_serve.py                       # default model, 1,000 requests, 8 at a time
    python3 scripts/bench_serve.py --model tiny --requests 200
    python3 scripts/bench_serve.py --model colour        # no neural model: HTTP + index cost only
    python3 scripts/bench_serve.py --model colour --upload-stall 4   # text search while 4 large
                                                        # uploads are in flight, vs idle
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HOST = "127.0.0.1"  # never anything else: this is a loopback test
WORDS = ["red", "green", "blue", "yellow", "white", "black", "sunset", "note", "cat", "receipt",
         "a red square", "something blue", "green note", "yellow and black", "meeting notes"]  # fmt: skip


def make_embedder(model: str, workdir: Path):
    """'colour' (no network, plumbing only), 'tiny' (tiny random model), 'default', or a path."""
    if model == "colour":
        from mmembed.testing.colour_embedder import ColourEmbedder

        return ColourEmbedder(), None
    from mmembed.model import default_model_name, load_embedder

    if model == "tiny":
        from mmembed.testing.tiny_embedders import tiny_embedder

        path = workdir / "tiny-model"
        if not path.is_dir():
            tiny_embedder(seed=0).save_pretrained(path)
        return load_embedder(str(path)), str(path)
    spec = default_model_name() if model == "default" else model
    return load_embedder(spec), spec


def make_corpus(folder: Path, n_images: int, n_notes: int, seed: int = 0) -> list[Path]:
    from PIL import Image, ImageDraw

    from mmembed.testing.colour_embedder import COLOURS

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    images = []
    for i in range(n_images):
        c = names[i % len(names)]
        img = Image.new("RGB", (320, 240), COLOURS[c])
        d = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.randrange(300), rng.randrange(220)
            d.ellipse(
                [x, y, x + rng.randrange(20, 90), y + rng.randrange(20, 90)],
                fill=tuple(rng.randrange(256) for _ in range(3)),
            )
        p = folder / f"{c}-{i:04d}.jpg"
        img.save(p, quality=90)
        images.append(p)
    for i in range(n_notes):
        (folder / f"note-{i:04d}.txt").write_text(
            f"Note {i}: {' '.join(rng.choice(WORDS) for _ in range(12))}.\n", encoding="utf-8"
        )
    return images


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _serve(args) -> None:
    """Child process: the real app under uvicorn."""
    from mmembed.search.library import Library
    from mmembed.search.query import Searcher
    from mmembed.search.server import serve

    emb, _ = make_embedder(args.model, Path(args.workdir))
    serve(Searcher(Library.open(args.serve), emb), host=HOST, port=args.port, log_level="warning")


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs)) - 1))]


def _summary(lat_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(lat_ms),
        "p50_ms": _pct(lat_ms, 50),
        "p90_ms": _pct(lat_ms, 90),
        "p99_ms": _pct(lat_ms, 99),
        "max_ms": max(lat_ms),
        "mean_ms": statistics.fmean(lat_ms),
    }


def big_png(side: int = 9000) -> bytes:
    """A large image that compresses small (~80 KB for 9000x9000): cheap to send, costly to
    decode -- under the pixel cap, so the server must decode it."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), (30, 90, 160))
    d = ImageDraw.Draw(img)
    for i in range(0, side, side // 8):
        d.rectangle([i, i, i + side // 16, i + side // 16], fill=(200, 40, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def upload_stall(base: str, n_uploads: int, probes: int, seconds: float) -> dict:
    """Text-search and /api/info latency on an idle server, then while ``n_uploads`` clients
    keep sending large images; the ratio is what the uploads cost everyone else."""
    import httpx

    png = big_png()
    probe = httpx.Client(base_url=base, timeout=120)

    failed: list[str] = []

    def timed(kind: str, url: str, params: dict | None = None) -> float:
        t = time.perf_counter()
        try:
            r = probe.get(url, params=params)
            if r.status_code != 200:
                failed.append(f"{kind}: HTTP {r.status_code}")
        except httpx.HTTPError as e:  # counted at the time it took to fail
            failed.append(f"{kind}: {type(e).__name__}")
        return (time.perf_counter() - t) * 1000

    def measure(n: int) -> dict[str, list[float]]:
        lat: dict[str, list[float]] = {"text": [], "info": []}
        for i in range(n):
            lat["text"].append(timed("text", "/api/search", {"q": WORDS[i % len(WORDS)]}))
            lat["info"].append(timed("info", "/api/info"))
        return lat

    measure(5)  # warm-up
    idle = measure(probes)
    import threading

    stop = threading.Event()
    codes: list[int] = []

    def uploader() -> None:
        with httpx.Client(base_url=base, timeout=120) as c:
            while not stop.is_set():
                try:
                    r = c.post("/api/search", files={"image": ("big.png", png, "image/png")})
                    codes.append(r.status_code)
                except httpx.HTTPError:
                    codes.append(0)  # timed out or dropped

    threads = [threading.Thread(target=uploader, daemon=True) for _ in range(n_uploads)]
    for t in threads:
        t.start()
    time.sleep(min(2.0, seconds / 4))  # let the uploads pile up first
    busy = measure(probes)
    stop.set()
    for t in threads:
        t.join(180)
    out = {
        "upload_bytes": len(png),
        "uploads_in_flight": n_uploads,
        "upload_status_counts": {str(c): codes.count(c) for c in sorted(set(codes))},
        "probe_failures": failed,
        "idle": {k: _summary(v) for k, v in idle.items()},
        "under_upload": {k: _summary(v) for k, v in busy.items()},
    }
    out["ratio_p50"] = {
        k: out["under_upload"][k]["p50_ms"] / out["idle"][k]["p50_ms"] for k in idle
    }
    out["ratio_p90"] = {
        k: out["under_upload"][k]["p90_ms"] / out["idle"][k]["p90_ms"] for k in idle
    }
    print(f"\n{n_uploads} uploads of a 9000x9000 PNG ({len(png) / 1024:.0f} KB) in flight:")
    print(
        f"{'probe':<8}{'idle p50':>10}{'busy p50':>11}{'ratio':>11}{'idle p90':>10}{'busy p90':>10}"
    )
    for k in idle:
        i, b = out["idle"][k], out["under_upload"][k]
        print(
            f"{k:<8}{i['p50_ms']:>10.1f}{b['p50_ms']:>11.1f}{out['ratio_p50'][k]:>10.2f}x"
            f"{i['p90_ms']:>10.1f}{b['p90_ms']:>10.1f}"
        )
    print(f"upload responses: {out['upload_status_counts']} (0: timed out after 120 s)")
    if failed:
        print(f"probe failures: {len(failed)} ({failed[0]}, ...)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="default")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--notes", type=int, default=60)
    ap.add_argument(
        "--workdir", default=None, help="keep the corpus/index here (default: a temp dir)"
    )
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    ap.add_argument(
        "--upload-stall",
        type=int,
        default=0,
        metavar="N",
        help="only measure text search while N large uploads are in flight, vs an idle server",
    )
    ap.add_argument("--probes", type=int, default=30, help="text searches per phase (stall mode)")
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return _serve(args)

    import httpx
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    from mmembed.search.library import Library, update_library
    from mmembed.search.query import Searcher

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_serve_"))
    args.workdir = str(work)
    images = make_corpus(work / "corpus", args.images, args.notes)
    emb, _ = make_embedder(args.model, work)
    t0 = time.perf_counter()
    rep = update_library(work / "index", [work / "corpus"], emb)
    print(
        f"library: {rep.items} items ({rep.encoded} encoded in {time.perf_counter() - t0:.1f} s) "
        f"model={args.model}",
        flush=True,
    )

    rng = random.Random(1)
    uploads = []
    for p in rng.sample(images, 8):
        buf = io.BytesIO()
        from PIL import Image

        Image.open(p).resize((160, 120)).save(buf, format="JPEG", quality=85)
        uploads.append((p.name, buf.getvalue()))
    lib = Library.open(work / "index")
    image_dids = [e.did for e in lib.entries.values() if e.image]
    plan = []
    for i in range(args.requests):
        r = rng.random()
        if r < 0.70:
            plan.append(("text", rng.choice(WORDS)))
        elif r < 0.85:
            plan.append(("image", uploads[i % len(uploads)]))
        else:
            plan.append(("thumb", rng.choice(image_dids)))

    # reference: the same text and image searches in-process, one at a time
    searcher = Searcher(lib, emb)
    direct: dict[str, list[float]] = {"text": [], "image": []}
    for kind, arg in plan[: min(200, len(plan))]:
        if kind == "thumb":
            continue
        t = time.perf_counter()
        if kind == "text":
            searcher.search(arg, k=10)
        else:
            searcher.search(None, Image.open(io.BytesIO(arg[1])), k=10)
        direct[kind].append((time.perf_counter() - t) * 1000)

    port = _free_port()
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        str(work / "index"),
        "--port",
        str(port),
        "--model",
        args.model,
        "--workdir",
        str(work),
    ]
    server = subprocess.Popen(cmd)
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(base + "/api/info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        if args.upload_stall:
            res = upload_stall(base, args.upload_stall, args.probes, 8.0)
            res["model"] = args.model
            if args.out:
                Path(args.out).write_text(json.dumps(res, indent=1))
            return
        client = httpx.Client(
            base_url=base, timeout=60, limits=httpx.Limits(max_connections=args.concurrency)
        )

        def one(item):
            kind, arg = item
            t = time.perf_counter()
            try:
                if kind == "text":
                    r = client.get("/api/search", params={"q": arg, "k": 10})
                elif kind == "image":
                    r = client.post(
                        "/api/search",
                        data={"k": "10"},
                        files={"image": (arg[0], arg[1], "image/jpeg")},
                    )
                else:
                    r = client.get(f"/api/thumb/{arg}")
                ok = r.status_code == 200 and (kind == "thumb" or len(r.json()["results"]) == 10)
                err = None if ok else f"HTTP {r.status_code}: {r.text[:120]}"
            except httpx.HTTPError as e:
                err = f"{type(e).__name__}: {e}"
            return kind, (time.perf_counter() - t) * 1000, err

        for item in plan[:20]:  # warm-up (not counted)
            one(item)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(one, plan))
        wall = time.perf_counter() - t0
        batching = client.get("/api/info").json().get("batching", {})
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()

    errors = [(k, e) for k, _, e in results if e]
    lat = [ms for _, ms, _ in results]
    out = {
        "model": args.model, "items": rep.items, "requests": len(results),
        "concurrency": args.concurrency, "errors": len(errors), "wall_s": wall,
        "throughput_rps": len(results) / wall, "all": _summary(lat),
        "by_kind": {k: _summary([ms for kk, ms, _ in results if kk == k])
                    for k in ("text", "image", "thumb") if any(kk == k for kk, _, _ in results)},
        "direct_in_process": {k: _summary(v) for k, v in direct.items() if v},
        "server_batching": batching,
    }  # fmt: skip
    # Throughput reference: the same mix of searches run serially in-process (no HTTP, no batching).
    searches = [ms for kk, ms, _ in results if kk != "thumb"]
    serial_ms = statistics.fmean(direct["text"] + direct["image"])
    out["search_rps_server"] = len(searches) / wall
    out["search_rps_serial_in_process"] = 1000 / serial_ms
    print(
        f"\n{out['requests']} requests, {args.concurrency} concurrent, {HOST} only: "
        f"{out['errors']} errors, {out['throughput_rps']:.1f} req/s over {wall:.1f} s"
    )
    print(
        f"{'kind':<8}{'n':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}"
        f"{'direct p50':>12}{'p50 ratio':>11}"
    )
    for k, s in [("all", out["all"]), *out["by_kind"].items()]:
        d = out["direct_in_process"].get(k)
        ratio = f"{s['p50_ms'] / d['p50_ms']:.2f}x" if d else "-"
        dp = f"{d['p50_ms']:.1f}" if d else "-"
        print(
            f"{k:<8}{s['n']:>6}{s['p50_ms']:>10.1f}{s['p90_ms']:>10.1f}{s['p99_ms']:>10.1f}"
            f"{s['max_ms']:>10.1f}{dp:>12}{ratio:>11}"
        )
    print(
        "(direct = the same search called in-process, one at a time, no HTTP; the ratio "
        "includes queueing behind the other concurrent requests)"
    )
    print(
        f"searches: {out['search_rps_server']:.1f}/s through the server vs "
        f"{out['search_rps_serial_in_process']:.1f}/s serially in-process "
        f"({out['search_rps_server'] / out['search_rps_serial_in_process']:.2f}x)"
    )
    if batching:
        print(
            f"server batching: {batching['items']} searches in {batching['batches']} encoder "
            f"batches (mean {batching['mean']:.1f}, largest {batching['largest']})"
        )
    for k, e in errors[:10]:
        print(f"error ({k}): {e}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
