"""`mmembed demo`: the offline benchmark (built into a cache folder if missing) + a model (the
project default unless told) + a few example searches of each kind, printed with the known
positives marked. Offline. Knows the benchmark's file layout, not how it is built or scored."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

# (task id, label) of the example searches, one query each, in this order.
EXAMPLES: list[tuple[int, str]] = [
    (0, "text → image"),
    (3, "image → text"),
    (4, "image → image (another art style)"),
    (7, "image + text → image (composed)"),
    (6, "image + text → text (composed)"),
    (1, "text → text (WordNet gloss → words)"),
]
TOP = 5
HIT_RATE_QUERIES = 200  # test queries behind the printed hit rate


def default_data_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mmembed" / "offline"


def ensure_benchmark(data: Path, console) -> Path:
    """Build the offline benchmark into ``data`` unless a finished build is there."""
    if (data / "manifest.json").is_file():
        return data
    from mmembed.data.offline import build

    console.print(f"building the offline benchmark into {data} (once; a few minutes)…")
    build(data, show_progress=True, workers=min(2, os.cpu_count() or 1), force=data.exists())
    return data


def pick_examples(data: Path, seed: int = 0) -> list[tuple[str, Any]]:
    """(label, Query) for each example task present in the test split, chosen with ``seed``."""
    from mmembed.data.mbeir import Layout, read_queries

    layout = Layout(data)
    sets = {task: (name, task) for name, task, _ in layout.query_sets("test")}
    rng = random.Random(seed)
    picked = []
    for task, label in EXAMPLES:
        if task not in sets:
            continue
        name, _ = sets[task]
        queries = list(read_queries(layout.query_file(name, task, "test")))
        if queries:
            picked.append((label, queries[rng.randrange(len(queries))]))
    return picked


def sample_test_queries(data: Path, n: int, seed: int = 0) -> list[Any]:
    """``n`` queries drawn uniformly, with ``seed``, from every test query file (all of them when
    there are fewer): the queries behind the demo's hit rate, chosen by nobody."""
    from mmembed.data.mbeir import Layout, read_queries

    layout = Layout(data)
    queries = [
        q
        for name, task, _ in layout.query_sets("test")
        for q in read_queries(layout.query_file(name, task, "test"))
    ]
    if n >= len(queries):
        return queries
    return random.Random(f"hit-rate|{seed}").sample(queries, n)


def hit_rate(embedder, data: Path, queries: list[Any], index, instruction_of) -> dict[str, Any]:
    """Share of ``queries`` with a positive among the top ``TOP`` of ``index``, overall and per
    task; ``instruction_of(query)`` gives each query's instruction (the demo's own choice)."""
    vecs = embedder.encode_queries(
        queries,
        instructions=[instruction_of(q) for q in queries],
        image_root=data,
        show_progress=False,
    )  # (Q, D)
    _, ids = index.search(vecs, TOP, fingerprint=str(embedder.fingerprint))  # (Q, TOP)
    per_task: dict[int, list[int]] = {}
    for q, top in zip(queries, ids, strict=True):
        per_task.setdefault(q.task_id, []).append(int(bool(set(top) & set(q.pos_dids))))
    hits = sum(sum(v) for v in per_task.values())
    return {
        "queries": len(queries),
        "hits": hits,
        "rate": hits / max(1, len(queries)),
        "per_task": {t: [sum(v), len(v)] for t, v in sorted(per_task.items())},
    }


def demo_pool(data: Path, positives: set[str], size: int, seed: int = 0) -> list[Any]:
    """The global test pool, or a seeded sample of ``size`` that keeps every example positive."""
    from mmembed.data.mbeir import Layout, read_pool

    pool = list(read_pool(Layout(data).global_pool_file("test")))
    if size <= 0 or size >= len(pool):
        return pool
    keep = [c for c in pool if c.did in positives]
    rest = [c for c in pool if c.did not in positives]
    rng = random.Random(seed)
    return sorted(keep + rng.sample(rest, max(0, size - len(keep))), key=lambda c: c.did)


def encode_pool(embedder, data: Path, pool: list[Any], console) -> tuple[np.ndarray, list[str]]:
    """(N, D) candidate embeddings and their dids, cached beside the data per model and pool in
    the shard format of ``mmembed encode`` (a candidate that cannot be encoded is left out)."""
    from mmembed.index.encode import EncodeEntry, content_source, encode_entries, load_encoded

    ids = "\n".join(c.did for c in pool)
    tag = hashlib.sha256(f"{embedder.fingerprint}\n{ids}".encode()).hexdigest()[:16]
    cache = data / ".demo-cache" / tag
    entries = [EncodeEntry(c.did, c) for c in pool]
    if not (cache / "manifest.json").is_file():
        console.print(f"encoding {len(pool)} candidates (cached for next time)…")
        for old in cache.parent.glob("*.npy"):  # caches of earlier versions: one .npy a pool
            old.unlink()
    res = encode_entries(
        embedder,
        entries,
        cache,
        is_query=False,
        source=content_source(entries),
        image_root=data,
        rank=0,
        world_size=1,
        total=len(entries),
        overwrite=True,
        show_progress=True,
    )
    for bad in res.skipped:
        console.print(f"not encoded: {bad['id']}: {bad['error']}", markup=False)
    emb, dids, _ = load_encoded(cache, expect_fingerprint=str(embedder.fingerprint))
    return np.asarray(emb, dtype=np.float32), dids


def run_demo(
    *,
    data: Path | None = None,
    model: str | None = None,
    pool_size: int = 1000,
    device: str | None = None,
    console=None,
    seed: int = 0,
    rate_queries: int = HIT_RATE_QUERIES,
) -> dict[str, Any]:
    """Run the demo; returns {"examples": [...], "hits_at_5": n, "pool": N, "hit_rate": {...}}
    for callers/tests. The hit rate is over ``rate_queries`` test queries drawn with ``seed``
    (their positives are kept in the sampled pool, as the examples' are)."""
    from rich.console import Console
    from rich.table import Table

    from mmembed.data.instructions import query_instruction, read_instructions
    from mmembed.data.mbeir import Layout
    from mmembed.index import Index
    from mmembed.model import default_model_name, load_embedder

    console = console or Console()
    data = ensure_benchmark(Path(data) if data else default_data_dir(), console)
    examples = pick_examples(data, seed)
    if not examples:
        raise SystemExit(
            f"{data}: no test queries found; rebuild it with `mmembed data build-offline`"
        )
    rated = sample_test_queries(data, rate_queries, seed) if rate_queries > 0 else []
    positives = {d for _, q in examples for d in q.pos_dids}
    positives |= {d for q in rated for d in q.pos_dids}
    pool = demo_pool(data, positives, pool_size, seed)
    spec = model or default_model_name()
    with console.status(f"loading model {spec}…"):
        embedder = load_embedder(spec, device=device)
    emb, dids = encode_pool(embedder, data, pool, console)
    index = Index.build(emb, dids, fingerprint=str(embedder.fingerprint))
    by_did = {c.did: c for c in pool}
    table = read_instructions(Layout(data).instructions_file)
    console.print(
        f"\nmodel [bold]{spec}[/bold] · {len(pool)} candidates from the test pool of "
        f"{data} (text, image and image+text mixed)\n",
        markup=True,
    )
    out: dict[str, Any] = {"examples": [], "hits_at_5": 0, "pool": len(pool), "model": spec}
    for label, q in examples:
        instruction = query_instruction(q, table, fixed=0)
        vec = embedder.encode_queries(
            [q], instructions=instruction, image_root=data, show_progress=False
        )  # (1, D)
        scores, ids = index.search(vec, TOP, fingerprint=str(embedder.fingerprint))
        shown = " + ".join(x for x in [q.image_path, repr(q.text) if q.text else None] if x)
        t = Table(title=f"{label}: {shown}", title_justify="left", show_lines=False)
        for col in ("#", "score", "kind", "text", "image", "positive"):
            t.add_column(col, justify="right" if col in ("#", "score") else "left")
        found = False
        for rank, (s, did) in enumerate(zip(scores[0].tolist(), ids[0], strict=True), 1):
            c = by_did.get(did)
            if c is None:
                continue
            hit = did in q.pos_dids
            found |= hit
            text = (c.text or "")[:50]
            t.add_row(
                str(rank),
                f"{s:.3f}",
                c.modality.value,
                text,
                c.image_path or "",
                "[green]✓[/green]" if hit else "",
            )
        console.print(t)
        out["hits_at_5"] += int(found)
        out["examples"].append({"task": q.task_id, "qid": q.qid, "found_in_top5": found})
    if rated:
        out["hit_rate"] = hit_rate(
            embedder, data, rated, index, lambda q: query_instruction(q, table, fixed=0)
        )
        r = out["hit_rate"]
        console.print(
            f"\nhit rate: a positive in the top {TOP} for {r['hits']} of {r['queries']} test "
            f"queries drawn with seed {seed} ({100 * r['rate']:.1f} %; every task, this pool)"
        )
    console.print(
        f"\na positive was in the top {TOP} for {out['hits_at_5']} of {len(examples)} "
        "example queries.\nYour own folders: `mmembed index ~/Pictures ~/notes`, then "
        '`mmembed search "a red bicycle"` or `mmembed serve`.'
    )
    return out
