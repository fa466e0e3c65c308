"""Poolers against hand computation, and the causal/bidirectional switch of decoder LMs."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmembed.model.poolers import (
    LastTokenPooler,
    LatentAttentionConfig,
    LatentAttentionPooler,
    MeanPooler,
    build_pooler,
)

torch.set_num_threads(1)


def test_mean_pooler_matches_hand_mean():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 5, 3, generator=g)
    pool = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    attn = torch.ones(2, 5, dtype=torch.long)
    out = MeanPooler(3)(h, attn, pool)
    assert torch.allclose(out[0], (h[0, 1] + h[0, 2]) / 2)
    assert torch.allclose(out[1], h[1].mean(0))
    # an all-zero mask gives zeros, not NaN
    assert torch.equal(MeanPooler(3)(h, attn, torch.zeros_like(pool))[0], torch.zeros(3))


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_token_pooler_is_padding_side_aware(side):
    h = torch.arange(2 * 4 * 2, dtype=torch.float).view(2, 4, 2)
    if side == "right":
        attn = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
        want = torch.stack([h[0, 1], h[1, 3]])
    else:
        attn = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
        want = torch.stack([h[0, 3], h[1, 3]])
    assert torch.equal(LastTokenPooler(2)(h, attn, attn), want)


def _hand_latent(p: LatentAttentionPooler, h: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Latent attention written out with explicit loops over heads (no SDPA, no reshapes)."""
    attn_block, ff_block = p.cross_attend_blocks
    a = attn_block.fn
    x = F.layer_norm(h, (h.shape[-1],), attn_block.norm.weight, attn_block.norm.bias)
    lat = F.layer_norm(
        p.latents,
        (p.latents.shape[-1],),
        attn_block.norm_context.weight,
        attn_block.norm_context.bias,
    )
    q = x @ a.to_q.weight.T  # (B, L, H*Dh)
    kv = lat @ a.to_kv.weight.T  # (R, 2*H*Dh)
    inner = q.shape[-1]
    k, v = kv[:, :inner], kv[:, inner:]
    dh = inner // a.heads
    heads = []
    for i in range(a.heads):
        sl = slice(i * dh, (i + 1) * dh)
        scores = q[..., sl] @ k[:, sl].T / math.sqrt(dh)  # (B, L, R)
        heads.append(torch.softmax(scores, dim=-1) @ v[:, sl])  # (B, L, Dh)
    y = torch.cat(heads, dim=-1) @ a.to_out.weight.T + h  # residual
    z = F.layer_norm(y, (y.shape[-1],), ff_block.norm.weight, ff_block.norm.bias)
    lin1, lin2 = ff_block.fn.net[0], ff_block.fn.net[2]
    u = z @ lin1.weight.T + lin1.bias
    half = u.shape[-1] // 2
    g = u[..., :half] * F.gelu(u[..., half:])
    y = g @ lin2.weight.T + lin2.bias + y  # residual
    m = pool.float().unsqueeze(-1)
    return (y * m).sum(1) / m.sum(1)


def test_latent_attention_matches_hand_computation():
    torch.manual_seed(0)
    cfg = LatentAttentionConfig(num_latents=6, latent_dim=10, heads=2, dim_head=5, ff_mult=2)
    p = LatentAttentionPooler(8, cfg)
    for mod in p.modules():  # non-trivial norms
        if isinstance(mod, torch.nn.LayerNorm):
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    h = torch.randn(3, 7, 8)
    pool = torch.ones(3, 7, dtype=torch.long)
    pool[0, :3] = 0
    pool[2, 5:] = 0
    out = p(h, torch.ones_like(pool), pool)
    assert out.shape == (3, 8)
    assert torch.allclose(out, _hand_latent(p, h, pool), atol=1e-5)


def test_latent_attention_names_follow_nvembed_layout():
    p = build_pooler(
        8,
        {
            "type": "latent_attention",
            "latent": {"num_latents": 4, "latent_dim": 8, "heads": 2, "dim_head": 4},
        },
    )
    names = set(p.state_dict())
    for want in [
        "latents",
        "cross_attend_blocks.0.norm.weight",
        "cross_attend_blocks.0.norm_context.weight",
        "cross_attend_blocks.0.fn.to_q.weight",
        "cross_attend_blocks.0.fn.to_kv.weight",
        "cross_attend_blocks.0.fn.to_out.weight",
        "cross_attend_blocks.1.norm.weight",
        "cross_attend_blocks.1.fn.net.0.weight",
        "cross_attend_blocks.1.fn.net.2.weight",
    ]:
        assert want in names


def test_mmembed_preset_sizes_on_the_meta_device():
    cfg = LatentAttentionConfig.mmembed()
    with torch.device("meta"):  # shapes without memory
        pooler = LatentAttentionPooler(4096, cfg)
    shapes = {n: tuple(p.shape) for n, p in pooler.named_parameters()}
    # MM-Embed's pooler (docs/models.md): 512 latents of width 4096; 8 heads of dim 4096 (inner 32768); GEGLU MLP
    # 4096 -> 32768 -> (16384) -> 4096
    assert shapes["latents"] == (512, 4096)
    assert shapes["cross_attend_blocks.0.fn.to_q.weight"] == (32768, 4096)
    assert shapes["cross_attend_blocks.0.fn.to_kv.weight"] == (2 * 32768, 4096)
    assert shapes["cross_attend_blocks.0.fn.to_out.weight"] == (4096, 32768)
    assert shapes["cross_attend_blocks.1.fn.net.0.weight"] == (32768, 4096)
    assert shapes["cross_attend_blocks.1.fn.net.2.weight"] == (4096, 16384)


def test_unknown_pooler_is_named():
    with pytest.raises(ValueError, match="unknown pooler 'max'"):
        build_pooler(4, {"type": "max"})


@pytest.mark.parametrize("bidirectional", [True, False])
def test_later_token_changes_earlier_output_only_when_bidirectional(bidirectional):
    from mmembed.model.composed import set_causal
    from mmembed.testing.tiny_embedders import tiny_embedder

    emb = tiny_embedder(0, "decoder")
    lm = emb.backbone.language_model
    set_causal(lm, causal=not bidirectional)
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    ids2 = ids.clone()
    ids2[0, 5] = 99  # change the last token
    mask = torch.ones_like(ids)
    with torch.no_grad():
        a = lm(input_ids=ids, attention_mask=mask).last_hidden_state
        b = lm(input_ids=ids2, attention_mask=mask).last_hidden_state
    earlier_changed = not torch.allclose(a[0, :5], b[0, :5], atol=1e-6)
    assert earlier_changed == bidirectional
    assert not torch.allclose(a[0, 5], b[0, 5])


def test_encoder_models_refuse_causal():
    from mmembed.model.composed import set_causal
    from mmembed.testing.tiny_embedders import tiny_embedder

    with pytest.raises(ValueError, match="encoder model"):
        set_causal(tiny_embedder(0, "composed").backbone.language_model, causal=True)
