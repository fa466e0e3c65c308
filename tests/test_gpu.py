"""GPU checks (marker ``gpu``, deselected in CI): half-precision encoding agrees with fp32, the
device encodes what the CPU encodes, GPU search equals the CPU index, and search over two shards
equals search over one pool. ``MMEMBED_TEST_DEVICE`` (default cuda) picks the device;
``scripts/gpu_check.py --tiny`` runs these same tests with it set to cpu.

No fixtures or parametrisation: scripts/gpu_check.py can call each test function directly on a
machine without pytest."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

DEVICE = os.environ.get("MMEMBED_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE.startswith("cuda") and not torch.cuda.is_available(),
        reason="needs a CUDA device (or MMEMBED_TEST_DEVICE=cpu)",
    ),
]


def _items():
    from PIL import Image

    from mmembed.data.records import Item

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)) for _ in range(4)]
    return [
        Item("a red apple on a wooden table", None),
        Item("quarterly report, page two", None),
        Item(None, images[0]),
        Item(None, images[1]),
        Item("the same dress in blue", images[2]),
        Item("make it a night scene", images[3]),
    ]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))  # (N,)


def _encode(emb, items) -> np.ndarray:
    q = emb.encode_queries(
        items, instructions="Find the matching item.", batch_size=3, show_progress=False
    )
    c = emb.encode_candidates(items, batch_size=3, show_progress=False)
    return np.concatenate([q, c])  # (2N, dim) float32


def test_half_precision_encode_matches_fp32():
    """bf16 and fp16 embeddings of the MM-Embed architecture (LLaVA-Next, bidirectional Mistral,
    latent attention; tiny) point where the fp32 ones do."""
    from mmembed.testing.tiny_embedders import tiny_embedder

    items = _items()
    for kind in ("llava_next", "composed"):
        emb = tiny_embedder(seed=1, kind=kind).to(DEVICE)
        ref = _encode(emb, items)
        for dtype, floor in ((torch.bfloat16, 0.99), (torch.float16, 0.999)):
            half = _encode(emb.to(dtype), items)
            cos = _cosines(ref, half)
            assert half.dtype == np.float32 and half.shape == ref.shape
            assert cos.min() > floor, (kind, dtype, cos.min())
            emb = emb.float()
        # a model that lost its weights would fail the bound above; so would one that ignores
        # the image: the composed items must differ from their text alone
        assert _cosines(ref[4:5], ref[0:1])[0] < 0.999


def test_device_encode_matches_cpu():
    """fp32 on the device gives the CPU's fp32 embeddings."""
    from mmembed.testing.tiny_embedders import tiny_embedder

    items = _items()
    cpu = _encode(tiny_embedder(seed=2, kind="llava_next"), items)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # true fp32
    try:
        dev = _encode(tiny_embedder(seed=2, kind="llava_next").to(DEVICE), items)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    np.testing.assert_allclose(dev, cpu, atol=2e-4)


def _pool(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)  # (n, d)


def assert_same_topk(pool, queries, got_s, got_i, ref_s, ref_i, tol=1e-4):
    """Equal scores, and equal rows except where two rows tie within ``tol`` (then the row
    returned must really score what the reference says at that rank)."""
    got_s, got_i = np.asarray(got_s), np.asarray(got_i)
    np.testing.assert_allclose(got_s, ref_s, atol=tol)
    differ = got_i != ref_i
    if differ.any():
        qi, _ = np.nonzero(differ)
        true = np.einsum("nd,nd->n", pool[got_i[differ]].astype(np.float32), queries[qi])
        np.testing.assert_allclose(true, ref_s[differ], atol=tol)
    assert differ.mean() < 0.01  # ties are rare in random data; many swaps mean a real bug


def test_gpu_search_matches_cpu_index():
    """Exact top-k on the device (torch; and faiss-gpu when importable) equals the CPU index:
    faiss Flat on the CPU when faiss is importable, and always the numpy streaming reference."""
    from reference_metrics import streaming_topk

    from mmembed.index.torch_search import exact_topk

    pool = _pool(40_000, 96, seed=3)
    queries = _pool(64, 96, seed=4).astype(np.float32)
    k = 20
    ref_s, ref_i = streaming_topk(queries, pool, k)
    on_dev = torch.from_numpy(pool).to(DEVICE)
    s, i = exact_topk(torch.from_numpy(queries), on_dev, k, pool_chunk=7_000)
    assert s.device.type == on_dev.device.type
    assert_same_topk(pool, queries, s.cpu(), i.cpu(), ref_s, ref_i)
    try:
        from mmembed.index import Index
        from mmembed.index.device import num_gpus
    except ImportError:
        return
    try:
        ids = [str(j) for j in range(len(pool))]
        cpu_index = Index.build(pool, ids, gpu=False)
    except ImportError:  # no faiss on this machine: the numpy reference above stands
        return
    cs, cids = cpu_index.search(queries, k)
    assert_same_topk(pool, queries, cs, np.array(cids, dtype=np.int64), ref_s, ref_i)
    if DEVICE.startswith("cuda") and num_gpus() > 0:
        gs, gids = Index.build(pool, ids, gpu=True).search(queries, k)
        assert_same_topk(pool, queries, gs, np.array(gids, dtype=np.int64), ref_s, ref_i)


def test_sharded_search_equals_one_pool():
    """Two index shards searched apart and merged give the one-pool result (torch shards on the
    device; faiss IndexShards too when faiss is importable)."""
    from mmembed.index.torch_search import exact_topk, sharded_topk

    pool = _pool(30_000, 64, seed=5)
    queries = _pool(48, 64, seed=6).astype(np.float32)
    k = 15
    q = torch.from_numpy(queries)
    whole = torch.from_numpy(pool).to(DEVICE)
    one_s, one_i = exact_topk(q, whole, k, pool_chunk=5_000)
    cut = 17_345  # uneven shards
    two_s, two_i = sharded_topk(q, [whole[:cut], whole[cut:]], k, pool_chunk=5_000)
    assert torch.equal(two_i.cpu(), one_i.cpu())
    torch.testing.assert_close(two_s.cpu(), one_s.cpu(), atol=1e-6, rtol=0)
    assert (one_i.cpu() >= cut).any() and (one_i.cpu() < cut).any()  # both shards contribute
    try:
        from mmembed.index.device import import_faiss, num_gpus

        faiss = import_faiss()
    except ImportError:
        return
    x = pool.astype(np.float32)
    single = faiss.IndexFlatIP(x.shape[1])
    single.add(x)
    shards = faiss.IndexShards(x.shape[1], True, True)  # threaded, successive ids
    parts = [faiss.IndexFlatIP(x.shape[1]), faiss.IndexFlatIP(x.shape[1])]
    parts[0].add(x[:cut])
    parts[1].add(x[cut:])
    if DEVICE.startswith("cuda") and num_gpus() > 0:
        res = faiss.StandardGpuResources()
        parts = [faiss.index_cpu_to_gpu(res, 0, p) for p in parts]
    for p in parts:
        shards.add_shard(p)
    s1, i1 = single.search(queries, k)
    s2, i2 = shards.search(queries, k)
    assert_same_topk(pool, queries, s2, i2, s1, i1, tol=1e-5)
    assert_same_topk(pool, queries, one_s.cpu(), one_i.cpu(), s1, i1, tol=1e-4)
