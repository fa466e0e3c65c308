"""Per-preset M-BEIR instructions (mmembed/model/preset_instructions.tsv): every Qwen preset has a
row for each of M-BEIR's sixteen tasks with its source, and `eval mbeir` feeds the preset's own
instruction to the tokenizer (M-BEIR's UniIR table where the authors published none)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmembed.data.instructions import InstructionRow, InstructionTable, write_instructions
from mmembed.data.mbeir import Layout, write_pool, write_qrels, write_queries
from mmembed.data.records import DATASETS, TASKS, Candidate, Modality, Query
from mmembed.model.preset_instructions import (
    FAMILIES,
    family_rows,
    preset_family,
    preset_instruction,
    read_table,
)
from mmembed.model.registry import PRESETS

# M-BEIR's sixteen (dataset, task) pairs, as the UniIR paper lists them
MBEIR_SIXTEEN = [
    ("VisualNews", 0), ("VisualNews", 3), ("MSCOCO", 0), ("MSCOCO", 3), ("Fashion200K", 0),
    ("Fashion200K", 3), ("WebQA", 1), ("WebQA", 2), ("EDIS", 2), ("NIGHTS", 4), ("OVEN", 6),
    ("OVEN", 8), ("InfoSeek", 6), ("InfoSeek", 8), ("FashionIQ", 7), ("CIRR", 7),
]  # fmt: skip
SIXTEEN = {(DATASETS[name], *TASKS[task]) for name, task in MBEIR_SIXTEEN}
FIXTURE = Path(__file__).parent / "fixtures" / "vlm2vec_qwen2_vl"
VLM2VEC = f"vlm2vec-qwen2-vl-2b:{FIXTURE / 'adapter'},{FIXTURE / 'base'}"


def test_every_qwen_preset_covers_the_sixteen_tasks_with_sources():
    assert len(SIXTEEN) == 16
    qwen = {n for n in PRESETS if n.startswith(("gme-", "qwen3-vl-embedding-", "vlm2vec-"))}
    assert qwen == set(FAMILIES) and len(qwen) == 6
    for family in set(FAMILIES.values()):
        rows = family_rows(family)
        assert set(rows) == SIXTEEN, family
        for r in rows.values():
            assert r.source, (family, r.dataset, r.task_id)
            if r.origin != "none":
                # a file at a commit, or a paper by its arXiv id
                at_commit = "github.com/" in r.source and "/blob/" in r.source
                assert at_commit or "arXiv:" in r.source, (family, r.dataset, r.task_id)
    assert len(read_table()) == 48  # no duplicate rows


def test_published_counts_and_one_row_each():
    by_origin = {
        f: sorted(r.origin for r in family_rows(f).values()) for f in set(FAMILIES.values())
    }
    assert by_origin["gme"].count("published") == 16
    assert by_origin["vlm2vec"].count("published") == 10
    assert by_origin["qwen3-vl-embedding"].count("assumed") == 10


def test_preset_instruction_lookup():
    coco_t2i = (DATASETS["MSCOCO"], "text", "image")
    assert preset_family("vlm2vec-qwen2-vl-7b:/some/folder") == "vlm2vec"
    assert preset_family("mmembed-mini") is None
    assert (
        preset_instruction("vlm2vec-qwen2-vl-2b", coco_t2i)
        == "Find me an everyday image that matches the given caption:"
    )
    assert preset_instruction("gme-qwen2-vl-7b:x", coco_t2i) == (
        "Identify the image showcasing the described everyday scene."
    )
    assert preset_instruction("vlm2vec-qwen2-vl-2b", (DATASETS["WebQA"], "text", "text")) is None
    with pytest.raises(KeyError):
        preset_instruction("mmembed-mini", coco_t2i)
    with pytest.raises(KeyError):
        preset_instruction("gme-qwen2-vl-2b", (DATASETS["NIGHTS"], "text", "text"))


def _tree(root: Path) -> Path:
    """WebQA task 1 (text -> text; VLM2Vec published no instruction) and VisualNews task 0
    (text -> image; it did), with M-BEIR's own instruction table."""
    lay = Layout(root)
    (root / "img").mkdir(parents=True)
    vn = []
    for i in range(2):
        Image.new("RGB", (40, 30), (60 * i, 90, 30)).save(root / "img" / f"{i}.png")
        vn.append(Candidate(f"0:{i}", None, f"img/{i}.png", Modality.IMAGE))
    wq = [Candidate(f"2:{i}", f"passage {i}", None, Modality.TEXT) for i in range(3)]
    write_pool(lay.pool_file("visualnews", 0), vn)
    write_pool(lay.pool_file("webqa", 1), wq)
    write_pool(lay.global_pool_file("test"), vn + wq)
    queries = {
        ("visualnews", 0): [Query("0:9", "a news caption", None, Modality.TEXT, 0, ["0:1"])],
        ("webqa", 1): [Query("2:9", "who built it", None, Modality.TEXT, 1, ["2:2"])],
    }
    for (name, task), qs in queries.items():
        write_queries(lay.query_file(name, task, "test"), qs)
        write_qrels(lay.qrels_file(name, task, "test"), qs)
    write_instructions(
        lay.instructions_file,
        InstructionTable(
            [
                InstructionRow("text", "image", "VisualNews", 0, ["UniIR news instruction."]),
                InstructionRow("text", "text", "WebQA", 2, ["UniIR webqa instruction."]),
            ]
        ),
    )
    return root


class _Recorder:
    """The embedder's tokenizer, recording every batch of prompts it is given."""

    def __init__(self, tok) -> None:
        self._tok, self.prompts = tok, []

    def __call__(self, texts, *a, **k):
        self.prompts.extend(texts)
        return self._tok(texts, *a, **k)

    def __getattr__(self, name):
        return getattr(self._tok, name)


@pytest.fixture(scope="module")
def vlm2vec():
    from mmembed.model import load_embedder

    return load_embedder(VLM2VEC, device="cpu", dtype="float32")


@pytest.mark.parametrize(
    ("mode", "news", "webqa"),
    [
        # VLM2Vec's MMEB strings end an instructed item with a newline (docs/models.md)
        ("preset", "Retrieve an image of this news caption. a news caption\n", "UniIR webqa"),
        ("uniir", "UniIR news instruction. a news caption\n", "UniIR webqa"),
        ("off", "a news caption", None),
    ],
)
def test_eval_feeds_the_preset_instruction_to_the_tokenizer(tmp_path, vlm2vec, mode, news, webqa):
    from mmembed.eval.mbeir_run import evaluate_model

    root = _tree(tmp_path / "data")
    rec = _Recorder(vlm2vec.tokenizer)
    vlm2vec.tokenizer = rec
    try:
        report = evaluate_model(
            root,
            vlm2vec,
            out_dir=tmp_path / "out",
            pools=("local",),
            instructions=mode != "off",
            preset=VLM2VEC if mode == "preset" else None,
            show_progress=False,
        )
    finally:
        vlm2vec.tokenizer = rec._tok
    assert news in rec.prompts  # the VisualNews query, as the tokenizer saw it
    webqa_prompt = "UniIR webqa instruction. who built it\n" if webqa else "who built it"
    assert webqa_prompt in rec.prompts  # WebQA task 1: no VLM2Vec instruction -> UniIR's
    want = {"preset": "preset:vlm2vec", "uniir": "uniir", "off": None}[mode]
    assert report.settings["instruction_source"] == want


def test_cli_instructions_option_reaches_the_evaluation(tmp_path, cli, monkeypatch):
    import mmembed.eval.mbeir_run as run
    import mmembed.model as model

    seen = {}

    def fake(root, emb, **kw):
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(run, "evaluate_model", fake)
    monkeypatch.setattr(model, "load_embedder", lambda name: object())
    root = _tree(tmp_path / "data")
    for mode, instr, preset in [
        ("on", True, "gme-qwen2-vl-2b"),
        ("uniir", True, None),
        ("off", False, None),
    ]:
        seen.clear()
        cli("eval", "mbeir", "--data", root, "--model", "gme-qwen2-vl-2b", "--instructions", mode)
        assert (seen["instructions"], seen["preset"]) == (instr, preset), mode


def test_encode_input_puts_the_preset_table_first_and_records_it(tmp_path):
    """`mmembed encode --model PRESET` on a query file: the preset's instruction where its
    authors published one, M-BEIR's draw elsewhere; the choice is part of the input's identity,
    so a resumed encoding never mixes the two."""
    from mmembed.index.inputs import open_input

    root = _tree(tmp_path / "data")
    lay = Layout(root)
    news, webqa = lay.query_file("visualnews", 0, "test"), lay.query_file("webqa", 1, "test")

    def instr(path, **kw):
        inp = open_input(path, kind="queries", **kw)
        return [e.instruction for e in inp.entries()], inp.source

    mine, src_mine = instr(news, preset="vlm2vec-qwen2-vl-2b")
    plain, src_plain = instr(news, preset="mmembed-mini")
    assert mine == ["Retrieve an image of this news caption."]
    assert plain == ["UniIR news instruction."]
    assert src_mine != src_plain and src_mine["instruction_family"] == "vlm2vec"
    assert instr(webqa, preset="vlm2vec-qwen2-vl-2b:x,y")[0] == ["UniIR webqa instruction."]
    assert instr(news, preset="vlm2vec-qwen2-vl-2b", instructions="none")[0] == [None]
    assert instr(news, preset="vlm2vec-qwen2-vl-2b", instructions="Fixed.")[0] == ["Fixed."]


def test_query_instruction_asks_the_preferred_table_first():
    from mmembed.data.instructions import query_instruction

    base = InstructionTable([InstructionRow("text", "image", "VisualNews", 0, ["a", "b", "c"])])
    pref = InstructionTable([InstructionRow("text", "image", "VisualNews", 0, ["mine"])])
    q = Query("0:1", "x", None, Modality.TEXT, 0, [])
    other = Query("2:1", "x", None, Modality.TEXT, 1, [])
    assert query_instruction(q, base, seed=0, preferred=pref) == "mine"
    assert query_instruction(q, "fixed", preferred=pref) == "mine"
    assert query_instruction(other, base, seed=0, preferred=pref) is None  # neither has WebQA
    assert query_instruction(q, base, fixed=2, preferred=InstructionTable()) == "c"
