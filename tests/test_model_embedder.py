"""The Embedder contract on tiny random models: shapes and normalisation, batching and padding
invariances, instruction masking, vision-feature caching, save/load and fingerprints."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.images import ImageLoadError
from mmembed.data.records import Candidate, Item, Modality, Query
from mmembed.model.embedder import Embedder, WeightsMismatchError
from mmembed.model.prompts import format_prompt
from mmembed.testing.tiny_embedders import tiny_embedder

torch.set_num_threads(1)


def _img(color, size=(20, 14)):
    return Image.new("RGB", size, color)


ITEMS = [
    Item("a red square"),
    Item(None, _img((255, 0, 0))),
    Item("the same but blue and much longer than the others", _img((0, 0, 255))),
    Item("x"),
    Item("green", _img((0, 255, 0), (40, 40))),
]
INSTR = [
    "Find an image.",
    None,
    "Find the matching picture for this text please.",
    None,
    "Find it.",
]


@pytest.mark.parametrize("kind", ["composed", "decoder", "composed_last", "decoder_causal"])
def test_batched_equals_one_at_a_time_and_normalised(kind):
    emb = tiny_embedder(1, kind)
    full = emb.encode_queries(ITEMS, instructions=INSTR, batch_size=3, show_progress=False)
    assert full.shape == (len(ITEMS), emb.dim) and full.dtype == np.float32
    assert np.allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
    for i, it in enumerate(ITEMS):
        one = emb.encode_queries([it], instructions=[INSTR[i]], show_progress=False)
        assert np.abs(one[0] - full[i]).max() < 1e-5, i


@pytest.mark.parametrize("kind", ["composed", "decoder", "decoder_causal"])
def test_padding_side_invariance(kind):
    right = tiny_embedder(2, kind, padding_side="right")
    left = tiny_embedder(2, kind, padding_side="left")
    a = right.encode_candidates(ITEMS, show_progress=False)
    b = left.encode_candidates(ITEMS, show_progress=False)
    assert np.abs(a - b).max() < 1e-5
    batch = left.collate(ITEMS[:2], is_query=False)
    assert batch["attention_mask"][:, -1].all() and not batch["attention_mask"][:, 0].all()


def test_batch_order_invariance():
    emb = tiny_embedder(3)
    perm = [3, 0, 4, 2, 1]
    a = emb.encode_candidates(ITEMS, batch_size=2, show_progress=False)
    b = emb.encode_candidates([ITEMS[i] for i in perm], batch_size=2, show_progress=False)
    assert np.abs(a[perm] - b).max() < 1e-5


def test_instruction_tokens_excluded_from_pooling():
    emb = tiny_embedder(4, "composed_mean")
    ins = "Find the picture."
    batch = emb.collate([Item("cat", _img((9, 9, 9)))], instructions=[ins], is_query=True)
    prompt, n_chars = format_prompt("cat", True, instruction=ins)
    assert prompt == f"Instruct: {ins}\nQuery: <image>\ncat" and n_chars == len(
        f"Instruct: {ins}\nQuery: "
    )
    attn, pool = batch["attention_mask"][0], batch["pool_mask"][0]
    # byte tokenizer: <s> + one token per byte of the instruction prefix are excluded
    n_excluded = int((attn - pool).sum())
    assert n_excluded == 1 + len(f"Instruct: {ins}\nQuery: ".encode())
    assert pool[:n_excluded].sum() == 0 and pool[n_excluded:].all()
    with torch.no_grad():
        hidden = emb.backbone(**{k: v for k, v in batch.items() if k != "pool_mask"})  # (1, L, D)
        got = emb(batch)[0]
    want = hidden[0, n_excluded:].mean(0)
    assert torch.allclose(got, want / want.norm(), atol=1e-6)
    # the instruction still conditions the rest (present in attention): embeddings differ
    other = emb.encode_queries(
        [Item("cat", _img((9, 9, 9)))], instructions="Something else entirely.", show_progress=False
    )
    same = emb.encode_queries([Item("cat", _img((9, 9, 9)))], instructions=ins, show_progress=False)
    assert np.abs(other - same).max() > 1e-4


def test_prompts_are_mmembed_format():
    assert format_prompt("dog", False, instruction="Do X.") == (
        "Instruct: Do X.\nQuery: dog",
        len("Instruct: Do X.\nQuery: "),
    )
    assert format_prompt("dog", True) == ("Query: <image>\ndog", 0)
    assert format_prompt(None, True, is_query=False) == ("<image>\n", 0)
    assert format_prompt("dog", True, is_query=False) == ("<image>\ndog", 0)


def test_visual_tokens_replace_the_image_token():
    emb = tiny_embedder(0)
    batch = emb.collate([Item("hi", _img((1, 2, 3))), Item("hi")], is_query=False)
    n_img = int((batch["input_ids"] == emb.image_token_id).sum())
    assert n_img == emb.num_image_tokens == 4
    assert batch["pixel_values"].shape == (1, 3, 16, 16)
    # a different image changes the embedding, the same image does not
    a = emb.encode_candidates([Item("hi", _img((1, 2, 3)))], show_progress=False)
    b = emb.encode_candidates([Item("hi", _img((250, 2, 3)))], show_progress=False)
    c = emb.encode_candidates([Item("hi", _img((1, 2, 3)))], show_progress=False)
    assert np.abs(a - b).max() > 1e-4 and np.abs(a - c).max() == 0


def test_cached_vision_features_equal_pixels():
    emb = tiny_embedder(5)
    batch = emb.collate(ITEMS, instructions=INSTR)
    with torch.no_grad():
        ref = emb(batch)
        feats = emb.backbone.vision_features(batch["pixel_values"])  # (M, N, C)
        cached = {k: v for k, v in batch.items() if k != "pixel_values"} | {
            "vision_features": feats
        }
        assert torch.allclose(emb(cached), ref, atol=1e-6)


def test_forward_is_differentiable():
    emb = tiny_embedder(6).train()
    out = emb(emb.collate(ITEMS[:3]))
    out.sum().backward()
    # gradients reach the projector and the pooler's latents (not None, and not all zero)
    assert emb.backbone.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0
    assert emb.pooler.latents.grad.abs().sum() > 0


def test_records_resolve_images_and_convert_to_tensor(tmp_path):
    emb = tiny_embedder(7)
    _img((10, 200, 30)).save(tmp_path / "a.png")
    q = Query("9:1", "find", "a.png", Modality.IMAGE_TEXT, 7, ["9:2"])
    c = Candidate("9:2", None, "a.png", Modality.IMAGE)
    vq = emb.encode_queries([q], image_root=tmp_path, convert_to_tensor=True, show_progress=False)
    vc = emb.encode_candidates([c], image_root=tmp_path, show_progress=False)
    assert isinstance(vq, torch.Tensor) and vq.shape == (1, emb.dim)
    ref = emb.encode_candidates([Item(None, tmp_path / "a.png")], show_progress=False)
    assert np.abs(vc - ref).max() == 0


def test_bad_image_error_names_the_record(tmp_path):
    emb = tiny_embedder(0)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    c = Candidate("9:7", None, "bad.png", Modality.IMAGE)
    with pytest.raises(ImageLoadError, match=r"bad.png.*did 9:7"):
        emb.encode_candidates([c], image_root=tmp_path, show_progress=False)


def test_instruction_count_mismatch_is_clear():
    with pytest.raises(ValueError, match="2 instructions for 5 items"):
        tiny_embedder(0).encode_queries(ITEMS, instructions=["a", "b"], show_progress=False)


def test_text_only_model_refuses_images():
    with pytest.raises(ValueError, match="no vision tower"):
        tiny_embedder(0, "text").encode_candidates(
            [Item(None, _img((0, 0, 0)))], show_progress=False
        )


def test_truncation_keeps_image_and_eos():
    emb = tiny_embedder(0, "decoder", max_length=20)
    batch = emb.collate([Item("y" * 100, _img((3, 3, 3)))], is_query=False)
    ids = batch["input_ids"][0].tolist()
    assert len(ids) == 20 - 1 + emb.num_image_tokens  # the image token counts once before expansion
    assert (
        ids[-1] == emb.tokenizer.eos_token_id
        and ids.count(emb.image_token_id) == emb.num_image_tokens
    )


@pytest.mark.parametrize("kind", ["composed", "decoder"])
def test_save_load_round_trip(tmp_path, kind):
    emb = tiny_embedder(8, kind)
    a = emb.encode_queries(ITEMS, instructions=INSTR, show_progress=False)
    emb.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer",
    ]
    back = Embedder.from_pretrained(tmp_path / "m")
    b = back.encode_queries(ITEMS, instructions=INSTR, show_progress=False)
    assert np.array_equal(a, b)
    assert back.fingerprint == emb.fingerprint
    emb.save_pretrained(tmp_path / "m")  # overwriting an existing save works
    assert Embedder.from_pretrained(tmp_path / "m").fingerprint == emb.fingerprint


def test_fingerprint_is_stable_and_tracks_weights():
    a, b = tiny_embedder(9), tiny_embedder(9)
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("sha256:")
    assert tiny_embedder(10).fingerprint != a.fingerprint
    with torch.no_grad():
        b.pooler.latents[0, 0] += 1.0
    assert b.fingerprint != a.fingerprint


def test_tiny_embedder_leaves_global_rng_alone():
    torch.manual_seed(123)
    x = torch.rand(1)
    torch.manual_seed(123)
    tiny_embedder(0)
    assert torch.equal(torch.rand(1), x)


def test_load_state_lists_every_mismatch(tmp_path):
    from mmembed.model.embedder import load_state_checked

    emb = tiny_embedder(0)
    state = dict(emb.state_dict())
    state.pop("pooler.latents")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        WeightsMismatchError,
        match=r"(?s)missing \(1\): pooler.latents.*unexpected \(1\): extra.weight",
    ):
        load_state_checked(emb, state, source="x")


def test_empty_input_gives_empty_array():
    out = tiny_embedder(0).encode_candidates([], show_progress=False)
    assert out.shape == (0, 32)
