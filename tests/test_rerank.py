"""Zero-shot reranker: templates, answer tokens, scores against hand computation, batching,
top-k-only reordering, unreadable images, text-only models, truncation. Tiny random models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch  # core dependencies: a broken install fails here, never skips
import transformers  # noqa: F401

from mmembed.data.records import Candidate, Modality, Query  # noqa: E402
from mmembed.rerank.pipeline import reorder, rerank_run  # noqa: E402
from mmembed.rerank.prompts import (  # noqa: E402
    IMAGE_MARKER,
    TemplateError,
    format_item,
    load_prompts,
    parse_prompts,
)
from mmembed.rerank.scorer import answer_token_id  # noqa: E402
from mmembed.testing.tiny_rerankers import tiny_llava_reranker, tiny_text_reranker, tiny_tokenizer  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def llava():
    return tiny_llava_reranker(seed=0)


@pytest.fixture(scope="module")
def text_lm():
    return tiny_text_reranker(seed=0)


def _png(path: Path, seed: int, size=(36, 28)) -> str:
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    Image.fromarray((rng.rand(size[1], size[0], 3) * 255).astype("uint8")).save(path)
    return path.name


@pytest.fixture()
def world(tmp_path: Path):
    """Three queries (text->image, text->text, composed->image) and their candidates on disk."""
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    q = {
        "9:1": Query("9:1", "a red cat on the mat", None, Modality.TEXT, 0, ["9:100"]),
        "2:1": Query("2:1", "what is a dog", None, Modality.TEXT, 1, ["2:100"]),
        "8:1": Query(
            "8:1",
            "with a blue sky",
            _png(tmp_path / "q8.png", 99),
            Modality.IMAGE_TEXT,
            7,
            ["8:100"],
        ),
    }
    c: dict[str, Candidate] = {}
    for i in range(14):
        c[f"9:{100 + i}"] = Candidate(
            f"9:{100 + i}", None, _png(tmp_path / f"c9_{i}.png", i), Modality.IMAGE
        )
        c[f"2:{100 + i}"] = Candidate(
            f"2:{100 + i}", f"passage {i} about a dog and a tree", None, Modality.TEXT
        )
        c[f"8:{100 + i}"] = Candidate(
            f"8:{100 + i}", None, _png(tmp_path / f"c8_{i}.png", 50 + i), Modality.IMAGE
        )
    c["9:102"].image_path = "broken.png"  # rank 3 of query 9:1 cannot be read
    run = {
        qid: [(f"{qid.split(':')[0]}:{100 + i}", 1.0 - 0.05 * i) for i in range(14)] for qid in q
    }
    return tmp_path, q, c, run


# --------------------------------------------------------------------------- templates


def test_packaged_templates_cover_every_task_type():
    prompts = load_prompts()
    assert sorted(prompts.tasks) == [0, 1, 2, 3, 4, 6, 7, 8]
    for t in prompts.tasks.values():
        text = t.render(None, "QQ", "CC")
        assert text.index("QQ") < text.index("CC") and t.instruction in text
        assert text == text.rstrip()


def test_composed_pair_puts_query_image_before_candidate_image():
    t = load_prompts().for_task(8)
    text = t.render("find it", format_item("as a firefighter", True), format_item("fire", True))
    assert text.count(IMAGE_MARKER) == 2
    assert text.index(IMAGE_MARKER) < text.index("as a firefighter") < text.rindex(IMAGE_MARKER)


def test_bad_templates_name_file_and_task(tmp_path):
    with pytest.raises(TemplateError, match=r"tasks\.3: template lacks the \{candidate\}"):
        parse_prompts({"tasks": {3: {"template": "Q {query} Answer:"}}}, "x.yaml")
    with pytest.raises(TemplateError, match="bad placeholder"):
        parse_prompts({"tasks": {1: {"template": "{query} {candidate} {nope}"}}}, "x.yaml")
    with pytest.raises(TemplateError, match="no reranking template for task 5"):
        load_prompts().for_task(5)
    bad = tmp_path / "t.yaml"
    bad.write_text("tasks: [1, 2")
    with pytest.raises(TemplateError, match="t.yaml: not valid YAML"):
        load_prompts(bad)


# --------------------------------------------------------------------------- answer tokens


def test_answer_token_depends_on_what_precedes_it():
    tok = tiny_tokenizer()
    after_colon = answer_token_id(tok, "Answer True or False. Answer:", "True")
    after_newline = answer_token_id(tok, "Answer True or False.\nAnswer:\n", "True")
    assert tok.convert_ids_to_tokens(after_colon) == "ĠTrue"  # " True" continues the text
    assert tok.convert_ids_to_tokens(after_newline) == "True"  # a fresh line starts bare
    assert after_colon != after_newline


def test_answer_merging_into_prompt_is_refused():
    class Greedy:  # merges ": T" into one token, so the prompt is no prefix of prompt+answer
        def __call__(self, text, add_special_tokens=False):
            ids, i = [], 0
            while i < len(text):
                if text.startswith(": T", i):
                    ids.append(1000)
                    i += 3
                else:
                    ids.append(ord(text[i]))
                    i += 1
            return {"input_ids": ids}

    with pytest.raises(TemplateError, match="merges the end of the prompt"):
        answer_token_id(Greedy(), "Answer:", "True")


def test_chat_template_is_used_and_answer_follows_it():
    r = tiny_text_reranker(seed=0)
    r.tokenizer.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:\n{% endif %}"
    )
    r._chat_template = r.tokenizer.chat_template
    wrapped = r.wrap("Query: dog\nAnswer:")
    assert wrapped.startswith("<s>user: Query: dog") and wrapped.endswith("assistant:\n")
    yes, no = r.answer_ids(wrapped)
    assert r.tokenizer.convert_ids_to_tokens([yes, no]) == ["True", "False"]
    # the score is the True/False share after the wrapped prompt, not after the bare one
    enc = r.tokenizer(wrapped, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        row = r.model(**enc).logits[0, -1]
    want = _hand_prob(row, r.tokenizer, wrapped)
    assert r.score_batch(["Query: dog\nAnswer:"]).probs[0] == pytest.approx(want, abs=1e-5)


# --------------------------------------------------------------------------- scores


def _hand_prob(logits_row, tok, text) -> float:
    yes = answer_token_id(tok, text, "True")
    no = answer_token_id(tok, text, "False")
    p = torch.softmax(logits_row.double(), -1)
    return float(p[yes] / (p[yes] + p[no]))


def test_text_scores_equal_hand_computation_and_batching(text_lm):
    prompts = [
        "Query: a red cat\nCandidate: the dog\nAnswer:",
        "Query: what is a tree\nCandidate: a passage with many words about a green tree and sun\nAnswer:",
    ]
    got = text_lm.score_batch(prompts)
    for text, p in zip(prompts, got.probs, strict=True):
        enc = text_lm.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            row = text_lm.model(**enc).logits[0, -1]
        assert p == pytest.approx(_hand_prob(row, text_lm.tokenizer, text), abs=1e-5)
        assert text_lm.score_batch([text]).probs[0] == pytest.approx(p, abs=1e-5)  # batch-invariant
    assert all(0.0 <= p <= 1.0 for p in got.probs) and all(0.0 < m < 1.0 for m in got.mass)


def test_llava_scores_equal_hand_computation_with_two_images(llava):
    from PIL import Image

    ims = [Image.new("RGB", (30 + 9 * i, 28), (40 * i, 200 - 30 * i, 90)) for i in range(3)]
    prompts = [
        f"Query: {IMAGE_MARKER}\nas a firefighter\nCandidate: {IMAGE_MARKER}\nAnswer:",
        f"Query: {IMAGE_MARKER}\nCandidate: {IMAGE_MARKER}\na blue car in the sun\nAnswer:",
    ]
    images = [[ims[0], ims[1]], [ims[2], ims[0]]]
    got = llava.score_batch(prompts, images)
    for text, im, p in zip(prompts, images, got.probs, strict=True):
        enc = llava.processor(images=[im], text=[text], return_tensors="pt")
        with torch.no_grad():
            row = llava.model(**enc).logits[0, -1]
        assert p == pytest.approx(_hand_prob(row, llava.tokenizer, text), abs=1e-5)
        assert llava.score_batch([text], [im]).probs[0] == pytest.approx(p, abs=1e-5)
    # the images matter: swapping the candidate image changes the score
    swapped = llava.score_batch(prompts[:1], [[ims[0], ims[2]]]).probs[0]
    assert abs(swapped - got.probs[0]) > 1e-7


def test_scores_are_deterministic_across_instances(world):
    root, q, c, run = world
    a = rerank_run(
        run, q, c, tiny_llava_reranker(seed=3), k=5, image_root=root, show_progress=False
    )
    b = rerank_run(
        run, q, c, tiny_llava_reranker(seed=3), k=5, image_root=root, show_progress=False
    )
    assert [p.prob for p in a.pairs] == [p.prob for p in b.pairs]
    assert a.run == b.run


def test_image_count_mismatch_and_text_only_images_are_refused(llava, text_lm):
    from PIL import Image

    with pytest.raises(ValueError, match="image markers"):
        llava.score_batch([f"{IMAGE_MARKER} Answer:"], [[]])
    with pytest.raises(ValueError, match="reads text only"):
        text_lm.score_batch([f"{IMAGE_MARKER} Answer:"], [[Image.new("RGB", (28, 28))]])


# --------------------------------------------------------------------------- reordering


def test_reorder_keeps_unscored_slots_and_monotone_scores():
    top = [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6)]
    new, order = reorder(top, [0.1, 0.5, None, 0.7], "first-stage")
    assert [d for d, _ in new] == ["d", "b", "c", "a"] and order == [3, 1, 2, 0]
    assert [s for _, s in new] == [0.9, 0.8, 0.7, 0.6]
    new, _ = reorder(top, [0.1, 0.5, None, 0.7], "rerank")
    assert [s for _, s in new] == [0.7, 0.5, 0.5, 0.1]
    new, _ = reorder(top, [None, 0.2, 0.2, 0.3], "rerank")  # ties keep first-stage order
    assert [d for d, _ in new] == ["a", "d", "b", "c"] and new[0][1] == 1.0
    with pytest.raises(ValueError, match="score_mode"):
        reorder(top, [None] * 4, "other")


def test_only_top_k_reordered_and_unreadable_image_keeps_rank(world, llava):
    root, q, c, run = world
    k = 6
    res = rerank_run(run, q, c, llava, k=k, image_root=root, batch_size=4, show_progress=False)
    for qid, ranked in run.items():
        new = res.run[qid]
        assert new[k:] == ranked[k:]  # below k: same candidates, same scores, same ranks
        assert sorted(d for d, _ in new[:k]) == sorted(d for d, _ in ranked[:k])
        assert [s for _, s in new[:k]] == [
            s for _, s in ranked[:k]
        ]  # first-stage scores reassigned
        pairs = [p for p in res.pairs if p.qid == qid]
        assert len(pairs) == k
        scored = sorted((p for p in pairs if p.prob is not None), key=lambda p: p.new_rank)
        assert all(0.0 <= p.prob <= 1.0 for p in scored)
        assert [p.prob for p in scored] == sorted((p.prob for p in scored), reverse=True)
        for p in pairs:
            assert new[p.new_rank - 1][0] == p.did
    assert any(res.run[qid][:k] != run[qid][:k] for qid in run)  # the model did reorder something
    broken = next(p for p in res.pairs if p.did == "9:102")
    assert broken.prob is None and broken.new_rank == broken.old_rank == 3
    assert res.run["9:1"][2][0] == "9:102"
    assert "image unreadable" in broken.status and "broken.png" in broken.status
    assert any(d == "9:102" and "broken.png" in why for _, d, why in res.report.problems)
    assert res.report.scored == 3 * k - 1 and res.report.reranked_queries == 3
    assert "9:102" in res.report.summary()


def test_unreadable_query_image_keeps_whole_ranking(world, llava):
    root, q, c, run = world
    q["8:1"].image_path = "missing.png"
    res = rerank_run(run, q, c, llava, k=4, image_root=root, show_progress=False)
    assert res.run["8:1"] == run["8:1"]
    assert all(p.prob is None and "missing.png" in p.status for p in res.pairs if p.qid == "8:1")
    assert res.report.reranked_queries == 2


def test_text_model_reranks_text_pairs_and_reports_image_pairs(world, text_lm):
    root, q, c, run = world
    res = rerank_run(run, q, c, text_lm, k=5, image_root=root, show_progress=False)
    assert all(p.prob is not None for p in res.pairs if p.qid == "2:1")
    others = [p for p in res.pairs if p.qid != "2:1"]
    assert others and all(p.prob is None and "text only" in p.status for p in others)
    assert res.run["9:1"] == run["9:1"] and res.run["8:1"] == run["8:1"]


def test_unknown_ids_are_reported_not_fatal(world, text_lm):
    root, q, c, run = world
    run = {**run, "7:9": [("7:1", 1.0)]}
    del c["2:101"]
    res = rerank_run(run, q, c, text_lm, k=3, image_root=root, show_progress=False)
    assert res.run["7:9"] == [("7:1", 1.0)]
    reasons = {(qq, d): why for qq, d, why in res.report.problems}
    assert "not found" in reasons[("7:9", None)] and "not found" in reasons[("2:1", "2:101")]
    assert res.run["2:1"][1][0] == "2:101"  # kept its slot


def test_long_text_is_truncated_and_reported(world, text_lm):
    root, q, c, run = world
    c["2:100"].text = "tree " * 400
    res = rerank_run(
        {"2:1": run["2:1"]}, q, c, text_lm, k=3, max_text_tokens=32, show_progress=False
    )
    assert res.report.truncated == ["d:2:100"]
    assert "truncated" in res.report.summary()
    # the truncated pair is scored exactly as the prompt built from the cut text
    cut, was_cut = text_lm.truncate("tree " * 400, 32)
    assert was_cut and len(text_lm.tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 32
    prompt = text_lm.prompts.for_task(1).render(None, "what is a dog", cut)
    p = next(p for p in res.pairs if p.did == "2:100").prob
    assert p == pytest.approx(text_lm.score_batch([prompt]).probs[0], abs=1e-6)


def test_probabilities_are_not_nan_in_reduced_precision(text_lm):
    r = tiny_text_reranker(seed=1)
    prompt = ["Query: cat\nCandidate: dog\nAnswer:"]
    p32 = r.score_batch(prompt).probs[0]
    r.model.to(torch.bfloat16)
    p = r.score_batch(prompt).probs[0]
    assert not math.isnan(p) and p == pytest.approx(p32, abs=0.02)  # bf16 keeps ~3 digits


def test_out_of_memory_batches_are_split_not_fatal(world, text_lm, monkeypatch):
    root, q, c, run = world
    run = {"2:1": run["2:1"]}
    plain = rerank_run(run, q, c, text_lm, k=8, batch_size=8, show_progress=False)
    real = text_lm.score_batch
    sizes: list[int] = []

    def small_memory(prompts, images=None):
        sizes.append(len(prompts))
        if len(prompts) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(prompts, images)

    monkeypatch.setattr(text_lm, "score_batch", small_memory)
    split = rerank_run(run, q, c, text_lm, k=8, batch_size=8, show_progress=False)
    assert sizes[0] == 8 and max(sizes[1:]) <= 4 and split.run == plain.run
    assert [p.prob for p in split.pairs] == pytest.approx([p.prob for p in plain.pairs], abs=1e-5)

    def broken(prompts, images=None):
        raise RuntimeError("shape mismatch")  # other errors are not swallowed

    monkeypatch.setattr(text_lm, "score_batch", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        rerank_run(run, q, c, text_lm, k=3, show_progress=False)


def test_chunked_scoring_equals_one_pass(world, llava, monkeypatch):
    import mmembed.rerank.pipeline as pipeline

    root, q, c, run = world
    whole = rerank_run(run, q, c, llava, k=4, image_root=root, show_progress=False)
    monkeypatch.setattr(pipeline, "CHUNK_QUERIES", 1)
    chunked = rerank_run(run, q, c, llava, k=4, image_root=root, show_progress=False)
    assert chunked.run == whole.run
    assert [p.prob for p in chunked.pairs] == pytest.approx([p.prob for p in whole.pairs], abs=1e-6)
    assert chunked.report.scored == whole.report.scored == 11
    assert chunked.report.mean_answer_mass == pytest.approx(whole.report.mean_answer_mass, rel=1e-6)
