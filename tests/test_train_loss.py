"""InfoNCE from embeddings, positive masking, in-batch switch, learnable temperature, GradCache
vs plain loss (value and gradients), and gather-with-gradient over two real processes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmembed.train.distributed import DistInfo, gather_with_grad, id64
from mmembed.train.gradcache import grad_cache_step, split
from mmembed.train.loss import InfoNCELoss, PairMeta, info_nce, valid_mask

torch.set_num_threads(1)


def _meta(labels, cand_dids, pos, own_pairs, in_batch):
    b, n = len(labels), len(cand_dids)
    p = max(len(x) for x in pos)
    pos_ids = torch.zeros((b, p), dtype=torch.long)
    pos_valid = torch.zeros((b, p), dtype=torch.bool)
    for i, dids in enumerate(pos):
        for k, d in enumerate(dids):
            pos_ids[i, k] = id64(d)
            pos_valid[i, k] = True
    own = torch.zeros((b, n), dtype=torch.bool)
    for i, j in own_pairs:
        own[i, j] = True
    return PairMeta(
        torch.tensor(labels),
        torch.tensor([id64(d) for d in cand_dids]),
        pos_ids,
        pos_valid,
        own,
        torch.tensor(in_batch),
    )


def test_info_nce_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    q = nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)
    c = nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    labels = torch.tensor([0, 2, 4])
    out = info_nce(q, c, labels, None, 10.0)
    s = 10.0 * (q @ c.T)
    want = sum(-(s[i, labels[i]] - torch.logsumexp(s[i], 0)) for i in range(3)) / 3
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert out.accuracy == pytest.approx(((s.argmax(1) == labels).float().mean()).item())


def test_other_positives_are_masked_never_negatives():
    # query 0: positives a and b; b is in the batch as query 1's positive -> masked for query 0.
    meta = _meta(
        [0, 1],
        ["1:1", "1:2", "1:3"],
        [["1:1", "1:2"], ["1:2"]],
        [(0, 0), (1, 1), (1, 2)],
        [True, True],
    )
    v = valid_mask(
        meta.labels, meta.cand_ids, meta.pos_ids, meta.pos_valid, meta.own, meta.in_batch
    )
    assert v.tolist() == [[True, False, True], [True, True, True]]
    # the masked column cannot change query 0's loss
    q = torch.randn(2, 4)
    c = torch.randn(3, 4)
    loss = InfoNCELoss(0.1)
    a = loss(q, c, meta).logits[0]
    c2 = c.clone()
    c2[1] = 100 * q[0]  # make the other positive score enormously for query 0
    b = loss(q, c2, meta).logits[0]
    assert torch.isinf(b[1]) and a[0] == b[0] and a[2] == b[2]


def test_in_batch_negatives_off_keeps_only_own_candidates():
    meta = _meta(
        [0, 2],
        ["1:1", "1:9", "1:2", "1:8"],
        [["1:1"], ["1:2"]],
        [(0, 0), (0, 1), (1, 2), (1, 3)],
        [False, True],
    )
    v = valid_mask(
        meta.labels, meta.cand_ids, meta.pos_ids, meta.pos_valid, meta.own, meta.in_batch
    )
    assert v.tolist() == [[True, True, False, False], [True, True, True, True]]


def test_learnable_temperature_gets_gradient_and_clamps():
    loss = InfoNCELoss(0.05, learnable=True)
    assert loss.temperature == pytest.approx(0.05)
    meta = _meta([0, 1], ["1:1", "1:2"], [["1:1"], ["1:2"]], [(0, 0), (1, 1)], [True, True])
    out = loss(torch.randn(2, 4), torch.randn(2, 4), meta)
    out.loss.backward()
    assert loss.log_scale.grad is not None and loss.log_scale.grad.abs() > 0
    assert isinstance(loss.log_scale, nn.Parameter)
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1e6))
    assert loss.scale.item() == pytest.approx(100.0)
    assert "log_scale" not in dict(InfoNCELoss(0.05).named_parameters())


class _Enc(nn.Module):
    """A small encoder over variable-length token chunks (padding differs per chunk)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))

    def forward(self, f):
        h = self.emb(f["ids"])  # (n, L, 16)
        m = f["mask"].unsqueeze(-1).float()  # (n, L, 1)
        pooled = (h * m).sum(1) / m.sum(1)  # (n, 16)
        return nn.functional.normalize(self.mlp(pooled), dim=-1)  # (n, 8)


def _collate(seqs):
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return {"ids": ids, "mask": mask}


@pytest.mark.parametrize("learnable", [False, True])
def test_grad_cache_equals_plain_loss_and_gradients(learnable):
    g = torch.Generator().manual_seed(1)
    qs = [
        torch.randint(1, 50, (int(n),), generator=g).tolist()
        for n in torch.randint(2, 9, (10,), generator=g)
    ]
    cs = [
        torch.randint(1, 50, (int(n),), generator=g).tolist()
        for n in torch.randint(2, 9, (17,), generator=g)
    ]
    labels = [0, 2, 4, 6, 8, 10, 12, 14, 16, 1]
    dids = [f"1:{j}" for j in range(17)]
    meta = _meta(
        labels, dids, [[dids[j]] for j in labels], [(i, labels[i]) for i in range(10)], [True] * 10
    )

    def run(cached: bool):
        model = _Enc()
        loss = InfoNCELoss(0.05, learnable=learnable)
        fn = lambda q, c: loss(q, c, meta)  # noqa: E731
        if cached:
            out = grad_cache_step(
                model, [_collate(x) for x in split(qs, 3)], [_collate(x) for x in split(cs, 4)], fn
            )
        else:
            out = fn(model(_collate(qs)), model(_collate(cs)))
            out.loss.backward()
        grads = {
            k: p.grad.clone() for k, p in [*model.named_parameters(), *loss.named_parameters()]
        }
        return out.loss.item(), grads

    plain_loss, plain_grads = run(False)
    cached_loss, cached_grads = run(True)
    assert cached_loss == pytest.approx(plain_loss, abs=1e-5)
    assert plain_grads.keys() == cached_grads.keys()
    for k in plain_grads:
        assert torch.allclose(plain_grads[k], cached_grads[k], atol=1e-5, rtol=0), k
    assert any(v.abs().sum() > 0 for v in plain_grads.values())


def test_grad_cache_replays_dropout_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5))
    x = torch.randn(8, 6)
    chunks = [x[:4], x[4:]]
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    grad_cache_step(model, chunks, chunks, lambda q, c: info_nce(q, c, torch.arange(8), None, 1.0))
    # 4 no-grad passes then 4 recomputed passes: each recomputation saw the same dropout mask
    for a, b in zip(seen[:4], seen[4:], strict=True):
        assert torch.equal(a, b)


def test_gather_with_grad_is_identity_on_one_process():
    t = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(t, DistInfo(0, 1)) is t


def _worker(
    rank: int, world: int, init: str, q, c, meta_args, out
):  # pragma: no cover - subprocess
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    bq = q.shape[0] // world
    nc = c.shape[0] // world
    ql = q[rank * bq : (rank + 1) * bq].clone().requires_grad_()
    cl = c[rank * nc : (rank + 1) * nc].clone().requires_grad_()
    labels, dids, pos, own = meta_args
    meta = _meta(
        [labels[i] - rank * nc for i in range(rank * bq, (rank + 1) * bq)],
        dids[rank * nc : (rank + 1) * nc],
        pos[rank * bq : (rank + 1) * bq],
        [(i - rank * bq, j - rank * nc) for i, j in own if rank * bq <= i < (rank + 1) * bq],
        [True] * bq,
    )
    outl = InfoNCELoss(0.1, dist_info=DistInfo(rank, world))(ql, cl, meta)
    outl.loss.backward()
    out.put((rank, outl.loss.item(), ql.grad.tolist(), cl.grad.tolist()))
    dist.barrier()
    dist.destroy_process_group()


def test_gather_with_grad_two_processes_matches_one_big_batch(tmp_path):
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(3)
    q = nn.functional.normalize(torch.randn(4, 6, generator=g), dim=-1)
    c = nn.functional.normalize(torch.randn(6, 6, generator=g), dim=-1)
    labels = [
        0,
        1,
        3,
        4,
    ]  # queries 0,1 on rank 0 own candidates 0..2; queries 2,3 on rank 1 own 3..5
    dids = [f"2:{j}" for j in range(6)]
    pos = [["2:0"], ["2:1", "2:4"], ["2:3"], ["2:4"]]  # query 1's second positive lives on rank 1
    own = [(0, 0), (1, 1), (1, 2), (2, 3), (3, 4), (3, 5)]
    meta = _meta(labels, dids, pos, own, [True] * 4)
    qf, cf = q.clone().requires_grad_(), c.clone().requires_grad_()
    full = InfoNCELoss(0.1)(qf, cf, meta)
    full.loss.backward()

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    init = f"file://{tmp_path}/pg"
    procs = [
        ctx.Process(target=_worker, args=(r, 2, init, q, c, (labels, dids, pos, own), out))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    res = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    # the mean of the per-process losses is the one-batch loss; gradients are world_size x the
    # one-batch gradients (DDP's gradient averaging divides them back)
    assert (res[0][1] + res[1][1]) / 2 == pytest.approx(full.loss.item(), abs=1e-6)
    gq = torch.tensor(res[0][2] + res[1][2]) / 2
    gc = torch.tensor(res[0][3] + res[1][3]) / 2
    assert torch.allclose(gq, qf.grad, atol=1e-6)
    assert torch.allclose(gc, cf.grad, atol=1e-6)
