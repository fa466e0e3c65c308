"""The instruction table: header spellings, seeded choice, fixed choice, clear errors."""

import pytest

from mmembed.data.errors import DataError
from mmembed.data.instructions import (
    InstructionRow,
    InstructionTable,
    read_instructions,
    write_instructions,
)


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
