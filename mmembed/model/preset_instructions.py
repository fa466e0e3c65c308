"""Per-preset M-BEIR query instructions: for each released model family (GME, Qwen3-VL-Embedding,
VLM2Vec) the instruction its authors evaluated each of M-BEIR's sixteen tasks with, or none, as
data (``preset_instructions.tsv``, one row per family and task, with its source). Knows nothing
of prompts' formatting (the preset's PromptConfig) nor of M-BEIR files; a task without a
published instruction returns None and the caller falls back to M-BEIR's own (UniIR) table."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mmembed.data.instructions import InstructionRow, InstructionTable
from mmembed.data.records import DATASETS, TASKS, Modality

TABLE = Path(__file__).with_name("preset_instructions.tsv")
ORIGINS = ("published", "assumed", "none")  # "assumed": see the row's source
# preset name -> family in the table
FAMILIES: dict[str, str] = {
    "gme-qwen2-vl-2b": "gme",
    "gme-qwen2-vl-7b": "gme",
    "qwen3-vl-embedding-2b": "qwen3-vl-embedding",
    "qwen3-vl-embedding-8b": "qwen3-vl-embedding",
    "vlm2vec-qwen2-vl-2b": "vlm2vec",
    "vlm2vec-qwen2-vl-7b": "vlm2vec",
}
TaskKey = tuple[int, str, str]  # (M-BEIR dataset id, query modality, candidate modality)


@dataclass(frozen=True)
class PresetInstruction:
    family: str
    dataset: str
    task_id: int
    instruction: str | None  # None: the authors published none for this task
    origin: str
    source: str

    @property
    def key(self) -> TaskKey:
        qm, cm = TASKS[self.task_id]
        return (DATASETS[self.dataset], qm, cm)


@lru_cache(maxsize=4)
def read_table(path: Path = TABLE) -> tuple[PresetInstruction, ...]:
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for n, r in enumerate(csv.DictReader(f, delimiter="\t"), start=2):
            if r["origin"] not in ORIGINS or r["dataset"] not in DATASETS:
                raise ValueError(f"{path}:{n}: bad origin or dataset in {r}")
            text = r["instruction"].strip()
            if (r["origin"] == "none") != (not text):
                raise ValueError(f"{path}:{n}: origin 'none' iff the instruction is empty")
            rows.append(
                PresetInstruction(
                    r["family"],
                    r["dataset"],
                    int(r["task_id"]),
                    text or None,
                    r["origin"],
                    r["source"],
                )
            )
    return tuple(rows)


def preset_family(model: str | None) -> str | None:
    """The table family of a model name (``PRESET`` or ``PRESET:FOLDER``), None for others."""
    if not model:
        return None
    return FAMILIES.get(str(model).partition(":")[0])


def family_rows(family: str) -> dict[TaskKey, PresetInstruction]:
    return {r.key: r for r in read_table() if r.family == family}


def _key(task_key: TaskKey) -> TaskKey:
    dataset_id, qm, cm = task_key
    return (int(dataset_id), Modality(qm).value, Modality(cm).value)


def preset_instruction(preset_name: str, task_key: TaskKey) -> str | None:
    """The instruction ``preset_name`` (or ``PRESET:FOLDER``) was evaluated with on the M-BEIR
    task ``(dataset id, query modality, candidate modality)``; None when its authors published
    none (fall back to M-BEIR's table). A preset without a table, or a task outside M-BEIR's
    sixteen, is a KeyError."""
    family = preset_family(preset_name)
    if family is None:
        raise KeyError(f"{preset_name!r} has no per-task instruction table")
    row = family_rows(family).get(_key(task_key))
    if row is None:
        raise KeyError(f"{family}: no row for M-BEIR task {task_key}")
    return row.instruction


def preset_table(preset_name: str | None) -> InstructionTable | None:
    """The tasks ``preset_name`` (or ``PRESET:FOLDER``) has a published instruction for, as an
    instruction table (one prompt per row) to pass as ``preferred`` to
    :func:`mmembed.data.instructions.query_instruction`; None for a model without a table."""
    family = preset_family(preset_name)
    if family is None:
        return None
    rows = [
        InstructionRow(r.key[1], r.key[2], r.dataset, r.key[0], [r.instruction])
        for r in family_rows(family).values()
        if r.instruction is not None
    ]
    return InstructionTable(rows)
