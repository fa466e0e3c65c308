"""The instruction table: header spellings, seeded choice, fixed choice, clear errors."""

import pytest

from mmembed.data.errors import DataError
from mmembed.data.instructions import (
    InstructionRow,
    InstructionTable,
    query_instruction,
    read_instructions,
    write_instructions,
)
from mmembed.data.records import Modality, Query


@pytest.mark.parametrize("name_col", ["dataset", "dataset_name"])
def test_header_spellings_and_column_order(tmp_path, name_col):
    p = tmp_path / "i.tsv"
    p.write_text(
        f"dataset_id\tquery_modality\tcand_modality\t{name_col}\tprompt_1\tprompt_2\n"
        "9\ttext\timage\tMSCOCO\tFind an image.\tShow a photo.\n"
    )
    table = read_instructions(p)
    assert table.prompts(9, "text", "image") == ["Find an image.", "Show a photo."]
    assert table.rows[0].dataset == "MSCOCO"


def test_round_trip_and_choice(tmp_path):
    rows = [InstructionRow("image,text", "image", "CIRR", 8, ["a", "b", "c"])]
    write_instructions(tmp_path / "i.tsv", InstructionTable(rows))
    table = read_instructions(tmp_path / "i.tsv")
    assert table.rows == rows
    assert table.choose(8, "image,text", "image", fixed=1) == "b"
    draws = [table.choose(8, "image,text", "image", seed=3, key=k) for k in range(30)]
    assert draws == [table.choose(8, "image,text", "image", seed=3, key=k) for k in range(30)]
    assert set(draws) == {"a", "b", "c"}
    with pytest.raises(KeyError, match="no instruction"):
        table.prompts(8, "text", "image")


def test_missing_key_column_is_named(tmp_path):
    p = tmp_path / "i.tsv"
    p.write_text("query_modality\tcand_modality\tprompt_1\ntext\ttext\thi\n")
    with pytest.raises(DataError, match="no 'dataset_name' column"):
        read_instructions(p)


def _mscoco_table() -> InstructionTable:
    return InstructionTable(
        [InstructionRow("text", "image", "MSCOCO", 9, ["First prompt.", "Second prompt."])]
    )


def test_query_instruction_none_text_and_table():
    q = Query("9:1", "a dog", None, Modality.TEXT, 0)  # task 0: text -> image
    assert query_instruction(q, None, seed=0) is None
    assert query_instruction(q, "Find it.", seed=0) == "Find it."  # a fixed text, as given
    table = _mscoco_table()
    assert query_instruction(q, table, fixed=0) == "First prompt."
    assert query_instruction(q, table, fixed=1) == "Second prompt."
    assert query_instruction(q, table, fixed=3) == "Second prompt."  # index wraps


def test_query_instruction_draw_is_the_tables_seeded_by_seed_and_key():
    table = _mscoco_table()
    qs = [Query(f"9:{i}", "a dog", None, Modality.TEXT, 0) for i in range(40)]
    drawn = [query_instruction(q, table, seed=0) for q in qs]
    assert set(drawn) == {"First prompt.", "Second prompt."}
    # the key defaults to the qid: the same draw as the table's own (seed, qid)
    assert drawn == [table.choose(9, "text", "image", seed=0, key=q.qid) for q in qs]
    by_epoch = [query_instruction(qs[0], table, seed=0, key=f"9:0|{e}") for e in range(20)]
    assert len(set(by_epoch)) == 2  # training's key (qid|epoch) draws again each epoch
    other = [query_instruction(q, table, seed=1) for q in qs]
    assert other != drawn  # the seed changes the draw


def test_query_instruction_absent_row_or_task():
    table = _mscoco_table()
    no_row = Query("9:2", None, "a.png", Modality.IMAGE, 3)  # task 3: image -> text, no row
    no_task = Query("9:3", "x", None, Modality.TEXT, 99)
    for q in (no_row, no_task):
        assert query_instruction(q, table, seed=0) is None
        assert query_instruction(q, table, fixed=0) is None
    with pytest.raises(KeyError, match="no instruction for"):
        query_instruction(no_row, table, seed=0, strict=True)
    with pytest.raises(KeyError, match="unknown task id 99"):
        query_instruction(no_task, table, seed=0, strict=True)
