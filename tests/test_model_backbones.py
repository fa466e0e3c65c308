"""Composed backbones over other towers (tiny CLIP vision, Llama and Gemma decoders) and the
M-BEIR instruction table."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmembed.data.records import TASKS, Item, Modality, Query
from mmembed.model.embedder import Embedder, EmbedderConfig
from mmembed.testing.tiny_embedders import byte_tokenizer, tiny_text_config

torch.set_num_threads(1)

TINY_CLIP = {
    "type": "clip",
    "hf_config": {
        "image_size": 28,
        "patch_size": 14,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    },
}


def _build(text_kind: str, vision: dict | None, bidirectional: bool | None) -> Embedder:
    cfg = EmbedderConfig(
        name=f"t-{text_kind}",
        backbone={
            "type": "composed",
            "text": {"hf_config": tiny_text_config(text_kind, 261)},
            "vision": vision,
            "bidirectional": bidirectional,
        },
        pooler={"type": "mean"},
    )
    torch.manual_seed(0)
    return Embedder.build(
        cfg, tokenizer=byte_tokenizer(add_eos_in_template=text_kind == "bert"), pretrained=False
    )


@pytest.mark.parametrize("text_kind", ["llama", "gemma"])
def test_decoder_text_models_switch_causality(text_kind):
    emb = _build(text_kind, TINY_CLIP, bidirectional=True)
    items = [Item("abc def"), Item("abc xyz")]  # differ only at the end
    batch = emb.collate(items, is_query=False)
    with torch.no_grad():
        h = emb.backbone(batch["input_ids"], batch["attention_mask"])  # (2, L, D)
    assert not torch.allclose(
        h[0, 1], h[1, 1], atol=1e-6
    )  # bidirectional: early token sees the end
    from mmembed.model.composed import set_causal

    set_causal(emb.backbone.language_model, causal=True)
    with torch.no_grad():
        h = emb.backbone(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(h[0, 1], h[1, 1], atol=1e-6)


def test_composed_with_clip_vision_tower(tmp_path):
    emb = _build("bert", TINY_CLIP, bidirectional=None)
    assert emb.num_image_tokens == 4
    items = [
        Item("x", Image.new("RGB", (40, 30), (200, 1, 1))),
        Item(None, Image.new("RGB", (30, 30), (1, 1, 200))),
    ]
    v = emb.encode_candidates(items, show_progress=False)
    emb.save_pretrained(tmp_path / "m")
    back = Embedder.from_pretrained(tmp_path / "m")
    assert back.config.backbone["vision"]["hf_config"]["image_size"] == 28
    assert np.array_equal(back.encode_candidates(items, show_progress=False), v)


def test_instruction_table_covers_the_sixteen_pairs():
    from mmembed.model.prompts import MBEIR_INSTRUCTIONS, instructions_for, mbeir_instruction_table

    assert len(MBEIR_INSTRUCTIONS) == 16
    table = mbeir_instruction_table()
    assert len(table) == 16
    q = Query("8:1", "make it red", "a.png", Modality.IMAGE_TEXT, 7)  # CIRR task 7
    q_unknown = Query("3:1", "x", None, Modality.TEXT, 1)  # EDIS has no task 1
    got = instructions_for([q, q_unknown])
    assert got == [MBEIR_INSTRUCTIONS[("CIRR", 7)], None]
    assert TASKS[7] == ("image,text", "image")


def test_instructions_from_a_dataset_tsv(tmp_path):
    from mmembed.data.instructions import read_instructions
    from mmembed.model.prompts import instructions_for

    path = tmp_path / "query_instructions.tsv"
    path.write_text(
        "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\tprompt_2\n"
        "text\timage\tMSCOCO\t9\tFirst prompt.\tSecond prompt.\n"
    )
    qs = [Query(f"9:{i}", "a dog", None, Modality.TEXT, 0) for i in range(20)]
    table = read_instructions(path)
    drawn = instructions_for(qs, table, seed=0)
    assert set(drawn) == {"First prompt.", "Second prompt."}
    assert drawn == instructions_for(qs, table, seed=0)  # seeded: reproducible
    assert set(instructions_for(qs, table, fixed=1)) == {"Second prompt."}
