"""mmembed.testing: tiny models and fixtures built in memory (no files, no downloads) for the
project's tests, its benchmarks (scripts/bench_*.py, scripts/gpu_check.py) and users' own tests.
Part of the installed package so those scripts and users can import it; nothing in the library
imports it. Outputs are random but deterministic for a seed, except the colour embedder, which is
transparent by design.

- ``tiny_embedders``: tiny composed, decoder, text and LLaVA-Next Embedders (``tiny_embedder``).
- ``tiny_qwen_vl``: tiny Qwen2-VL / Qwen2.5-VL / Qwen3-VL Embedders (``tiny_qwen_embedder``).
- ``tiny_rerankers``: tiny LLaVA-Next and Llama rerankers (``tiny_llava_reranker``).
- ``colour_embedder``: ``ColourEmbedder``, whose colour words find pictures of that colour, and
  ``draw_corpus`` to draw such pictures.
"""
