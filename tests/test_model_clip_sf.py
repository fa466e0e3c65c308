"""CLIP score fusion: a UniIR CLIP_SF checkpoint written by UniIR's code loads and reproduces
UniIR's embeddings (golden fixture, tests/fixtures/uniir_clip_sf/README.md); the name table both
ways; the weights spec (pretrained tag by default, loud random, one-line offline error)."""

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.records import Item
from mmembed.model import load_embedder

torch.set_num_threads(1)
import open_clip  # noqa: E402,F401  (a core dependency: a broken install fails, never skips)

FIXTURE = Path(__file__).parent / "fixtures" / "uniir_clip_sf"

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _random(arch=TINY, **kw):
    from mmembed.model.clip_sf import load_clip_sf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_clip_sf(arch, weights="random", device="cpu", **kw)


@pytest.fixture(scope="module")
def sf():
    torch.manual_seed(0)
    return _random()


# --------------------------------------------------------------------------- the fusion rule


def test_score_fusion_is_the_normalised_raw_sum(sf):
    """UniIR adds the raw tower outputs and L2-normalises the sum (at retrieval)."""
    img = Image.new("RGB", (40, 30), (10, 200, 90))
    batch = sf.collate([Item("a green box", img)], is_query=False)
    with torch.no_grad():
        t = sf.model.encode_text(batch["text_tokens"]).numpy()[0]
        v = sf.model.encode_image(batch["pixel_values"]).numpy()[0]
    t_only, v_only, c = sf.encode_candidates(
        [Item("a green box"), Item(None, img), Item("a green box", img)], show_progress=False
    )
    assert np.allclose(np.linalg.norm([t_only, v_only, c], axis=1), 1, atol=1e-5)
    assert np.abs(c - (t + v) / np.linalg.norm(t + v)).max() < 1e-5
    # the option: normalise each tower first
    sf.fusion = "normalized_sum"
    try:
        c2 = sf.encode_candidates([Item("a green box", img)], show_progress=False)[0]
    finally:
        sf.fusion = "sum"
    want = t_only + v_only
    assert np.abs(c2 - want / np.linalg.norm(want)).max() < 1e-5
    assert np.abs(c2 - c).max() > 1e-3  # the two rules differ on composed items


def test_uniir_text_cleanup():
    from mmembed.model.clip_sf import uniir_text

    assert uniir_text("a dog") == "A dog."
    assert uniir_text(' "Quoted"  caption\r\n') == 'Quoted"  caption.'
    assert uniir_text("Is it red?") == "Is it red?"
    assert uniir_text("   ") == "" and uniir_text(None) == ""


def test_instruction_prefixes_query_text_only(sf):
    q = sf.encode_queries([Item("cats")], instructions="find a photo", show_progress=False)
    plain = sf.encode_candidates([Item("Find a photo. cats")], show_progress=False)
    assert np.abs(q - plain).max() < 1e-5
    # text_format="plain" keeps the text as given
    assert sf.text_of("cats", "find a photo", True) == "Find a photo. cats."
    sf.text_format = "plain"
    try:
        assert sf.text_of("cats", "find a photo", True) == "find a photo cats"
    finally:
        sf.text_format = "uniir"


def test_save_load_and_weights_file(sf, tmp_path):
    items = [Item("x"), Item(None, Image.new("RGB", (8, 8), (1, 2, 3)))]
    a = sf.encode_candidates(items, show_progress=False)
    sf.save_pretrained(tmp_path / "sf")
    back = load_embedder(tmp_path / "sf", device="cpu")
    assert np.array_equal(back.encode_candidates(items, show_progress=False), a)
    assert back.fingerprint == sf.fingerprint
    assert (back.fusion, back.text_format) == ("sum", "uniir")
    # weights from a local open_clip-style checkpoint (plain state dict, no 'model.' prefix)
    torch.save(sf.model.state_dict(), tmp_path / "w.pt")
    from mmembed.model.clip_sf import load_clip_sf

    again = load_clip_sf(TINY, weights=tmp_path / "w.pt", device="cpu")
    assert np.array_equal(again.encode_candidates(items, show_progress=False), a)


def test_folder_saved_before_the_options_keeps_its_rules(sf, tmp_path):
    sf.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    for k in ("fusion", "text_format", "preprocess"):
        cfg.pop(k)
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    old = load_embedder(tmp_path / "old", device="cpu")
    assert (old.fusion, old.text_format) == ("normalized_sum", "plain")


def test_builtin_architecture_name_resolves():
    from mmembed.model.clip_sf import model_config

    assert model_config("ViT-B-32")["embed_dim"] == 512
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        model_config("no-such-arch")


# --------------------------------------------------------------------------- UniIR golden


@pytest.fixture(scope="module")
def uniir(tmp_path_factory):
    """The fixture checkpoint, un-gzipped to the .pth UniIR wrote, plus cases and embeddings."""
    path = tmp_path_factory.mktemp("uniir") / "clip_sf_tiny.pth"
    path.write_bytes(gzip.decompress((FIXTURE / "clip_sf_tiny.pth.gz").read_bytes()))
    cases = json.loads((FIXTURE / "cases.json").read_text())
    golden = dict(np.load(FIXTURE / "embeddings.npz"))
    return path, cases, golden


def _items(rows, text_key, img_key):
    return [Item(r[text_key], str(FIXTURE / r[img_key]) if r[img_key] else None) for r in rows]


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def uniir_model(uniir):
    return load_embedder(f"clip-sf:auto:{uniir[0]}", device="cpu", dtype="float32")


def test_uniir_checkpoint_reproduces_uniir_embeddings(uniir, uniir_model):
    _, cases, golden = uniir
    m = uniir_model
    assert m.model_cfg["quick_gelu"] is True and m.model_cfg["text_cfg"]["heads"] == 2
    queries = _items(cases["queries"], "query_txt", "query_img_path")
    cands = _items(cases["candidates"], "txt", "img_path")
    got = {
        "queries_instruct": m.encode_queries(
            queries, instructions=cases["instruction"], show_progress=False
        ),
        "queries_plain": m.encode_queries(queries, show_progress=False),
        "candidates": m.encode_candidates(cands, batch_size=4, show_progress=False),
    }
    for key, emb in got.items():
        err = np.abs(emb - _unit(golden[key])).max()
        assert err <= 1e-5, f"{key}: max abs difference {err:.2e} from UniIR"


def test_uniir_texts_and_tokens_match(uniir, uniir_model):
    _, cases, golden = uniir
    m = uniir_model
    rows = {
        "queries_instruct": [
            (q["query_txt"], cases["instruction"], True) for q in cases["queries"]
        ],
        "queries_plain": [(q["query_txt"], None, True) for q in cases["queries"]],
        "candidates": [(c["txt"], None, False) for c in cases["candidates"]],
    }
    for key, args in rows.items():
        texts = [m.text_of(*a) for a in args]
        assert texts == cases["uniir_texts"][key]
        assert np.array_equal(m.tokenizer(texts).numpy(), golden[key + "_tokens"])


def test_uniir_name_table_both_ways(uniir, uniir_model, tmp_path):
    from mmembed.model.clip_sf import load_clip_sf, save_uniir_checkpoint
    from mmembed.model.clip_sf_checkpoint import (
        from_uniir_state,
        read_torch_checkpoint,
        to_uniir_state,
    )

    theirs = read_torch_checkpoint(uniir[0])["model"]
    ours = uniir_model.state_dict()
    assert sorted(from_uniir_state(theirs)) == sorted(ours)
    assert sorted(to_uniir_state(ours)) == sorted(theirs)
    assert to_uniir_state(from_uniir_state(theirs)).keys() == theirs.keys()
    # export: our model written back in UniIR's layout is UniIR's state, tensor for tensor
    save_uniir_checkpoint(uniir_model, tmp_path / "back.pth")
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    assert back.keys() == theirs.keys()
    assert all(torch.equal(back[k], theirs[k]) for k in theirs)
    again = load_clip_sf("auto", weights=tmp_path / "back.pth", device="cpu")
    items = [Item("a red car", str(FIXTURE / "images" / "d.png"))]
    assert np.array_equal(
        again.encode_candidates(items, show_progress=False),
        uniir_model.encode_candidates(items, show_progress=False),
    )


def test_uniir_checkpoint_keeps_its_config_inert(uniir):
    """UniIR pickles an OmegaConf config beside the weights; it loads as a placeholder with
    weights_only, whether or not omegaconf is installed, and runs none of its code."""
    from mmembed.model.clip_sf_checkpoint import _Opaque, read_torch_checkpoint

    ck = read_torch_checkpoint(uniir[0])
    assert set(ck) == {"model", "optimizer", "scheduler", "config", "epoch", "scaler"}
    assert isinstance(ck["config"], _Opaque)


def test_uniir_mismatch_is_one_error_listing_names(uniir, tmp_path):
    from mmembed.model.clip_sf import load_clip_sf
    from mmembed.model.clip_sf_checkpoint import read_torch_checkpoint
    from mmembed.model.embedder import WeightsMismatchError

    ck = read_torch_checkpoint(uniir[0])
    state = dict(ck["model"])
    state.pop("clip_model.visual.ln_post.bias")
    state["clip_model.visual.extra_head.weight"] = torch.zeros(2)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(WeightsMismatchError) as e:
        load_clip_sf("auto", weights=tmp_path / "bad.pth", device="cpu")
    msg = str(e.value)
    assert "model.visual.ln_post.bias" in msg and "model.visual.extra_head.weight" in msg
    assert "clip_model.* -> model.*" in msg
    # a named architecture that is not the checkpoint's: one error naming the differing fields
    with pytest.raises(ValueError, match=r"embed_dim 32 \(checkpoint\) vs 512.*clip-sf:auto"):
        load_clip_sf("ViT-B-32", weights=uniir[0], device="cpu")


# --------------------------------------------------------------------------- weights spec


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """open_clip with one tiny architecture 'tiny-test' and a pretrained tag 'fake' whose file
    is local; the download function is what a test replaces to be offline."""

    torch.manual_seed(1)
    src = _random()
    torch.save(src.model.state_dict(), tmp_path / "fake.bin")
    real_cfg = open_clip.get_model_config
    monkeypatch.setattr(
        open_clip, "get_model_config", lambda a: dict(TINY) if a == "tiny-test" else real_cfg(a)
    )
    monkeypatch.setattr(open_clip, "list_pretrained_tags_by_model", lambda a: ["fake"])
    tag_cfg = {"hf_hub": "nobody/fake/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    monkeypatch.setattr(
        open_clip, "get_pretrained_cfg", lambda a, t: tag_cfg if t == "fake" else {}
    )
    monkeypatch.setattr(
        open_clip, "download_pretrained", lambda cfg, **k: str(tmp_path / "fake.bin")
    )
    return src


def test_default_weights_are_the_pretrained_tag(fake_hub):

    from mmembed.model.clip_sf_checkpoint import default_pretrained_tag

    m = load_embedder("clip-sf:tiny-test", device="cpu")
    assert m.name == "clip-sf:tiny-test:fake"
    assert m.preprocess_cfg == {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    for k, v in fake_hub.state_dict().items():
        assert torch.equal(m.state_dict()[k], v)
    assert default_pretrained_tag(open_clip, "tiny-test") == "fake"  # the only tag: the default


def test_openai_is_the_default_tag_where_open_clip_has_it():

    from mmembed.model.clip_sf_checkpoint import default_pretrained_tag

    assert default_pretrained_tag(open_clip, "ViT-B-32") == "openai"
    assert open_clip.get_pretrained_cfg("ViT-B-32", "openai").get("quick_gelu") is True


def test_offline_without_cache_is_one_line_naming_what_to_do(fake_hub, monkeypatch):

    def offline(cfg, **kw):
        raise FileNotFoundError("An error happened while trying to locate the file on the Hub\nx")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(FileNotFoundError) as e:
        load_embedder("clip-sf:tiny-test", device="cpu")
    msg = str(e.value)
    assert "\n" not in msg
    assert "'fake'" in msg and "clip-sf:tiny-test:random" in msg and "/path/to/" in msg


def test_random_weights_warn_loudly_and_bad_specs_are_clear(fake_hub):
    with pytest.warns(UserWarning, match="RANDOM"):
        m = load_embedder("clip-sf:tiny-test:random", device="cpu")
    assert m.name.endswith(":random")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_embedder("clip-sf:tiny-test:/no/such/w.pt", device="cpu")
    with pytest.raises(ValueError, match="no pretrained tag 'nope'.*fake"):
        load_embedder("clip-sf:tiny-test:nope", device="cpu")
    with pytest.raises(ValueError, match="needs a weights file"):
        load_embedder("clip-sf:auto:random", device="cpu")


def test_released_vit_l14_shapes_read_as_open_clip_vit_l14():
    """UniIR's release is CLIP ViT-L/14: its names and shapes (built on the meta device) read
    back as open_clip's ViT-L-14, so clip-sf:ViT-L-14:clip_sf_large.pth and clip-sf:auto:... agree."""
    from mmembed.model.clip_sf import ClipScoreFusion, model_config
    from mmembed.model.clip_sf_checkpoint import (
        config_differences,
        from_uniir_state,
        openai_clip_config,
        to_uniir_state,
    )

    named = model_config("ViT-L-14")
    with torch.device("meta"):
        ref = ClipScoreFusion({**named, "quick_gelu": True})
        released = to_uniir_state(ref.state_dict())  # clip_model.* names, ViT-L/14 shapes
        found = openai_clip_config(
            {k.removeprefix("model."): v for k, v in from_uniir_state(released).items()}
        )
        assert config_differences(found, named) == []
        ours = ClipScoreFusion(found)
    assert found["vision_cfg"]["width"] == 1024 and found["text_cfg"]["heads"] == 12
    theirs = {k: tuple(v.shape) for k, v in from_uniir_state(released).items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs
    assert sum(p.numel() for p in ours.parameters()) == 427_616_513
