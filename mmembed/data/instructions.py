"""The M-BEIR instruction table (``instructions/query_instructions.tsv``): prompts keyed by
(dataset_id, query modality, candidate modality), chosen by a seeded draw or fixed, and
:func:`query_instruction`, the one rule every caller uses to give a query its instruction.
Knows nothing of models or prompts' formatting (that is ``mmembed.model.prompts``)."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

from mmembed.data.atomic import atomic_open
from mmembed.data.errors import DataError, ErrorLog, report
from mmembed.data.records import TASKS, Modality, Query

COLUMNS = ("query_modality", "cand_modality", "dataset_name", "dataset_id")
# Header names accepted for each key column (files in the wild use either dataset spelling).
_ALIASES = {
    "query_modality": ("query_modality",),
    "cand_modality": ("cand_modality", "candidate_modality"),
    "dataset_name": ("dataset_name", "dataset"),
    "dataset_id": ("dataset_id",),
}
Key = tuple[int, str, str]  # (dataset_id, query modality, candidate modality)


@dataclass
class InstructionRow:
    query_modality: str
    cand_modality: str
    dataset: str
    dataset_id: int
    prompts: list[str]


@dataclass
class InstructionTable:
    rows: list[InstructionRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index: dict[Key, InstructionRow] = {
            (r.dataset_id, r.query_modality, r.cand_modality): r for r in self.rows
        }

    def prompts(self, dataset_id: int, query_modality: str, cand_modality: str) -> list[str]:
        key = (int(dataset_id), Modality(query_modality).value, Modality(cand_modality).value)
        row = self._index.get(key)
        if row is None:
            known = ", ".join(f"{k}" for k in sorted(self._index)) or "none"
            raise KeyError(
                f"no instruction for (dataset_id, query, candidate) = {key}; known keys: {known}"
            )
        return row.prompts

    def choose(
        self,
        dataset_id: int,
        query_modality: str,
        cand_modality: str,
        *,
        seed: int | None = None,
        key: str | int = "",
        fixed: int | None = None,
    ) -> str:
        """One prompt: ``fixed`` (0-based prompt index) or a draw seeded by (seed, key)."""
        prompts = self.prompts(dataset_id, query_modality, cand_modality)
        if fixed is not None:
            return prompts[fixed % len(prompts)]
        rng = random.Random(f"{seed}|{key}|{dataset_id}|{query_modality}|{cand_modality}")
        return rng.choice(prompts)

    def __len__(self) -> int:
        return len(self.rows)


def query_instruction(
    query: Query,
    table: InstructionTable | str | None,
    *,
    seed: int | None = None,
    key: str | int | None = None,
    fixed: int | None = None,
    strict: bool = False,
    preferred: InstructionTable | None = None,
) -> str | None:
    """The instruction ``query`` is encoded (or reranked) with.

    ``table`` is None (no instruction: None), a string (that fixed instruction for every query),
    or an :class:`InstructionTable` (a dataset's tsv, or any table built in code, e.g. a model
    preset's). From a table: the row of (dataset id, query modality, the candidate modality of
    the query's task) gives prompt ``fixed`` (0-based) or, when ``fixed`` is None, a draw seeded
    by (``seed``, ``key``); ``key`` defaults to the query id (training adds the epoch to it).
    A query whose row or task is absent gets None, or a KeyError naming the key when ``strict``.
    ``preferred`` (e.g. a model preset's own table) is asked first: where it has a row for the
    query's task, that row's prompt is used, chosen by the same rule; elsewhere ``table`` is.

    >>> t = InstructionTable([InstructionRow("text", "image", "MSCOCO", 9, ["Find a photo."])])
    >>> query_instruction(Query("9:1", "a dog", None, Modality.TEXT, 0, []), t, fixed=0)
    'Find a photo.'
    """
    if preferred is not None:
        mine = query_instruction(query, preferred, seed=seed, key=key, fixed=fixed)
        if mine is not None:
            return mine
    if table is None or isinstance(table, str):
        return table
    task = TASKS.get(query.task_id)
    try:
        if task is None:
            raise KeyError(f"unknown task id {query.task_id}")
        return table.choose(
            query.dataset_id,
            query.modality.value,
            task[1],
            seed=seed,
            key=query.qid if key is None else key,
            fixed=fixed,
        )
    except KeyError:
        if strict:
            raise
        return None


def read_instructions(path: str | Path, errors: ErrorLog | None = None) -> InstructionTable:
    path = Path(path)
    rows: list[InstructionRow] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = [h.strip().lower() for h in next(reader, [])]
        pos: dict[str, int] = {}
        for key, names in _ALIASES.items():
            found = [i for i, h in enumerate(header) if h in names]
            if not found:
                raise DataError(
                    path,
                    1,
                    None,
                    f"header has no {key!r} column (got {header!r})",
                    f"the header needs {', '.join(COLUMNS)} and prompt_1..prompt_k",
                )
            pos[key] = found[0]
        prompt_cols = [i for i, h in enumerate(header) if h.startswith("prompt")]
        if not prompt_cols:
            raise DataError(path, 1, None, "header has no prompt_N columns")
        for lineno, cols in enumerate(reader, 2):
            if not any(c.strip() for c in cols):
                continue
            if len(cols) <= max(pos.values()):
                report(
                    errors,
                    DataError(path, lineno, None, "needs 4 key columns and at least one prompt"),
                )
                continue
            qm, cm, name, did = (cols[pos[k]].strip() for k in _ALIASES)
            try:
                Modality.parse(qm)
                Modality.parse(cm)
                dataset_id = int(did)
            except ValueError as e:
                report(errors, DataError(path, lineno, None, str(e)))
                continue
            prompts = [cols[i].strip() for i in prompt_cols if i < len(cols) and cols[i].strip()]
            if not prompts:
                report(
                    errors, DataError(path, lineno, None, "no prompt on this row", "add prompt_1")
                )
                continue
            rows.append(InstructionRow(qm, cm, name, dataset_id, prompts))
    return InstructionTable(rows)


def write_instructions(path: str | Path, table: InstructionTable) -> None:
    width = max((len(r.prompts) for r in table.rows), default=1)
    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow([*COLUMNS, *(f"prompt_{i + 1}" for i in range(width))])
        for r in table.rows:
            w.writerow([r.query_modality, r.cand_modality, r.dataset, r.dataset_id, *r.prompts])
