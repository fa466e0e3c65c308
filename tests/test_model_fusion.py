"""Score fusion (the CLIP_SF baseline over the composed towers) on tiny random models: the fast
path (one pass, modalities pooled apart) equals the slow reference (text alone and image alone,
encoded separately, normalised and summed); it shares the early model's text path; it trains,
caches features, saves and loads like any Embedder."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.records import Item
from mmembed.model.embedder import Embedder
from mmembed.testing.tiny_embedders import byte_tokenizer, tiny_config, tiny_embedder

torch.set_num_threads(1)


def _img(color, size=(20, 14)):
    return Image.new("RGB", size, color)


def _sf(seed=0, kind="score_fusion"):
    # "<image>" with no newline after it: the text part of "<image>text" is then exactly "text"
    # for the byte tokeniser too (MiniLM's drops the newline anyway)
    return tiny_embedder(seed, kind, image_text="<image>")


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


COMPOSED = [
    Item("a red square", _img((255, 0, 0))),
    Item("blue, and a much longer text than the other one", _img((0, 0, 255), (40, 40))),
    Item("g", _img((0, 255, 0))),
]
INSTR = ["Find it.", None, "Find the matching picture for this text please."]


@pytest.mark.parametrize("kind", ["score_fusion", "score_fusion_decoder"])
def test_fast_path_equals_text_and_image_encoded_apart(kind):
    emb = _sf(3, kind)
    fused = emb.encode_queries(COMPOSED, instructions=INSTR, show_progress=False)
    text = emb.encode_queries(
        [Item(it.text) for it in COMPOSED], instructions=INSTR, show_progress=False
    )
    image = emb.encode_candidates([Item(None, it.image) for it in COMPOSED], show_progress=False)
    assert np.abs(fused - _unit(text + image)).max() < 1e-5
    # and candidates (no instruction) the same way
    fused_c = emb.encode_candidates(COMPOSED, show_progress=False)
    text_c = emb.encode_candidates([Item(it.text) for it in COMPOSED], show_progress=False)
    assert np.abs(fused_c - _unit(text_c + image)).max() < 1e-5
    # the image part is not the text part: a real sum of two different vectors
    assert np.abs(text_c - image).max() > 1e-3


def test_image_part_never_sees_the_text():
    emb = _sf(4)
    a = emb.encode_candidates([Item(None, _img((9, 9, 9)))], show_progress=False)
    b = emb.encode_queries([Item(None, _img((9, 9, 9)))], show_progress=False)  # "Query: " prefix
    assert np.abs(a - b).max() < 1e-6  # no instruction, no text: the image vector alone
    c = emb.encode_queries([Item(None, _img((9, 9, 9)))], instructions=["Find it."])
    assert np.abs(a - c).max() > 1e-3  # an instruction is a text part (UniIR prefixes it)


def test_text_only_items_match_the_early_fusion_model_with_the_same_weights():
    sf = _sf(5)
    cfg = tiny_config("score_fusion")
    cfg.backbone["fusion"] = "early"
    cfg.prompt["image_text"] = "<image>"
    early = Embedder.build(cfg, tokenizer=byte_tokenizer(), pretrained=False)
    early.load_state_dict(sf.state_dict())
    texts = [Item("a red square"), Item("x")]
    a = sf.encode_queries(texts, instructions=["Find it.", None], show_progress=False)
    b = early.encode_queries(texts, instructions=["Find it.", None], show_progress=False)
    assert np.abs(a - b).max() < 1e-6
    a = sf.encode_candidates(COMPOSED, show_progress=False)
    b = early.encode_candidates(COMPOSED, show_progress=False)
    assert np.abs(a - b).max() > 1e-3  # with images the two architectures differ


def test_batched_equals_one_at_a_time_and_padding_side():
    emb = _sf(6)
    items = [*COMPOSED, Item("text only"), Item(None, _img((1, 2, 3)))]
    instr = [*INSTR, "Find it.", None]
    full = emb.encode_queries(items, instructions=instr, batch_size=2, show_progress=False)
    assert np.allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
    for i, it in enumerate(items):
        one = emb.encode_queries([it], instructions=[instr[i]], show_progress=False)
        assert np.abs(one[0] - full[i]).max() < 1e-5, i
    left = tiny_embedder(6, "score_fusion", image_text="<image>", padding_side="left")
    other = left.encode_queries(items, instructions=instr, show_progress=False)
    assert np.abs(other - full).max() < 1e-5


def test_cached_vision_features_and_gradients():
    emb = _sf(7).train()
    batch = emb.collate(COMPOSED, instructions=INSTR)
    assert batch["has_text"].tolist() == [True, True, True]
    with torch.no_grad():
        feats = emb.backbone.vision_features(batch["pixel_values"])  # (M, N, C)
        cached = {k: v for k, v in batch.items() if k != "pixel_values"}
        assert torch.allclose(emb(cached | {"vision_features": feats}), emb(batch), atol=1e-6)
    emb(batch).sum().backward()
    assert emb.backbone.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert emb.pooler.latents.grad.abs().sum() > 0


def test_save_load_keeps_the_fusion(tmp_path):
    emb = _sf(8)
    emb.save_pretrained(tmp_path / "m")
    back = Embedder.from_pretrained(tmp_path / "m", device="cpu")
    assert back.fusion == "score" and back.fingerprint == emb.fingerprint
    a = emb.encode_candidates(COMPOSED, show_progress=False)
    b = back.encode_candidates(COMPOSED, show_progress=False)
    assert np.abs(a - b).max() < 1e-6


def test_refuses_a_pooler_that_mixes_positions_and_unknown_fusions():
    cfg = tiny_config("score_fusion")
    cfg.pooler = {"type": "last_token"}
    with pytest.raises(ValueError, match="token by token"):
        Embedder.build(cfg, tokenizer=byte_tokenizer(), pretrained=False)
    cfg = tiny_config("score_fusion")
    cfg.backbone["fusion"] = "late"
    with pytest.raises(ValueError, match="unknown fusion 'late'"):
        Embedder.build(cfg, tokenizer=byte_tokenizer(), pretrained=False)
    cfg = tiny_config("llava_next")
    cfg.backbone["fusion"] = "score"
    with pytest.raises(ValueError, match="for the composed backbone"):
        Embedder.build(cfg, tokenizer=byte_tokenizer(), pretrained=False)


def test_late_fusion_equals_its_slow_reference(tmp_path):
    """LateFusion (halves of every item in one batched pass) == each item alone: its text and its
    image encoded one at a time, summed and normalised; one-modality items unchanged."""
    from mmembed.data.records import Candidate, Modality
    from mmembed.model.fusion import LateFusion

    emb = tiny_embedder(1)
    lf = LateFusion(emb)
    items = [Item("red fox", None), Item(None, _img((200, 10, 10))), *COMPOSED]
    instr = ["Find it.", None, *INSTR]
    got = lf.encode_queries(items, instructions=instr, show_progress=False, batch_size=2)
    assert got.shape == (len(items), emb.dim)

    def one(it, ins):  # the slow reference
        if it.image is None or not it.text:
            return emb.encode_queries([it], instructions=[ins], show_progress=False)[0]
        t = emb.encode_queries([Item(it.text, None)], instructions=[ins], show_progress=False)
        v = emb.encode_queries([Item(None, it.image)], instructions=[ins], show_progress=False)
        return _unit(t[0] + v[0])

    ref = np.stack([one(it, ins) for it, ins in zip(items, instr, strict=True)])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    joint = emb.encode_queries(COMPOSED[:1], instructions=INSTR[:1], show_progress=False)[0]
    assert np.abs(joint - got[2]).max() > 1e-3  # early fusion is a different embedding
    assert lf.fingerprint != emb.fingerprint and lf.dim == emb.dim

    # records with relative image paths: every one resolves against image_root, not just the first
    for i, c in enumerate([(200, 10, 10), (10, 200, 40), (30, 30, 220)]):
        _img(c).save(tmp_path / f"{i}.png")
    recs = [Candidate(f"1:{i}", "a thing", f"{i}.png", Modality.IMAGE_TEXT) for i in range(3)]
    cands = lf.encode_candidates(recs, image_root=tmp_path, show_progress=False)
    abs_items = [Item("a thing", str(tmp_path / f"{i}.png")) for i in range(3)]
    np.testing.assert_allclose(
        cands, lf.encode_candidates(abs_items, show_progress=False), atol=1e-5
    )
