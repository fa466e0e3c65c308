"""What ``mmembed encode`` reads: an M-BEIR pool or query file (kind sniffed from its first
record), or a folder of files (via mmembed.data.corpus), turned into a stream of Entries with
their instructions. Bad records are reported and skipped. Knows nothing of models or shards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmembed.data.errors import ErrorLog
from mmembed.data.records import Query
from mmembed.index.encode import EncodeEntry, content_source, file_source

KINDS = ("auto", "pool", "queries", "corpus")


@dataclass
class Input:
    kind: str  # "pool" | "queries" | "corpus"
    entries: Callable[[], Iterator[EncodeEntry]]  # a fresh stream each call
    total: int | None  # records expected (for the progress bar), None if unknown
    image_root: Path
    source: dict[str, Any]
    errors: ErrorLog

    @property
    def is_query(self) -> bool:
        return self.kind == "queries"


def mbeir_root_of(path: Path) -> Path | None:
    """The M-BEIR data root above a file at ``query/<split>/x.jsonl`` or ``cand_pool/<kind>/x.jsonl``."""
    p = path.resolve()
    if len(p.parents) > 2 and p.parents[1].name in ("query", "cand_pool"):
        return p.parents[2]
    return None


def sniff_kind(path: Path) -> str:
    """'queries' if the first JSON object has a qid, 'pool' if it has a did."""
    from mmembed.data.mbeir import iter_lines, parse_json_line

    with open(path, "rb") as f:
        for _, raw, _ in iter_lines(f):  # capped lines: a 2 GB line is never held
            if raw is None or not raw.strip():
                continue
            try:
                obj = parse_json_line(raw)
            except ValueError:  # reported with its line when the file is read
                continue
            if isinstance(obj, dict) and "qid" in obj:
                return "queries"
            if isinstance(obj, dict) and "did" in obj:
                return "pool"
    raise ValueError(f"{path}: found no record with a 'qid' or 'did'; pass --kind pool|queries")


def is_table_spec(spec: str | None) -> bool:
    """Whether ``--instructions`` names a table ('auto' or a .tsv), not none or a fixed text."""
    if spec is None or spec == "none":
        return False
    return spec == "auto" or spec.endswith(".tsv") or Path(spec).is_file()


def instruction_chooser(
    spec: str | None, path: Path, seed: int, preset: str | None = None
) -> Callable[[Query], str | None]:
    """``spec``: None/'none' (no instruction), 'auto' (the tsv of the M-BEIR tree holding
    ``path``, none if it has no tsv), a .tsv path, or a fixed instruction text. A table's draw is
    seeded by (``seed``, qid); a query with no row in the table is an error. With a table
    ('auto' or a .tsv), ``preset`` (a model name) puts that preset's own per-task instructions
    first, where its authors published one (model/preset_instructions.tsv); other models are
    unaffected, and 'none' or a fixed text always wins."""
    from mmembed.data.instructions import query_instruction, read_instructions
    from mmembed.model.preset_instructions import preset_table

    if spec is None or spec == "none":
        return lambda q: None
    tsv: Path | None = None
    is_table = is_table_spec(spec)
    mine = preset_table(preset) if is_table else None
    if spec == "auto":
        root = mbeir_root_of(path)
        cand = root / "instructions" / "query_instructions.tsv" if root else None
        tsv = cand if cand is not None and cand.is_file() else None
        if tsv is None:
            return lambda q: query_instruction(q, None, preferred=mine)
    elif is_table:
        tsv = Path(spec)
        if not tsv.is_file():
            raise FileNotFoundError(f"{tsv}: instruction table not found")
    else:
        return lambda q: query_instruction(q, spec)
    table = read_instructions(tsv)

    def choose(q: Query) -> str | None:
        try:
            return query_instruction(q, table, seed=seed, strict=True, preferred=mine)
        except KeyError as e:
            raise KeyError(
                f"{tsv}: {e.args[0]} (query {q.qid}); add a row or pass --instructions none"
            ) from None

    return choose


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


def open_input(
    path: str | Path,
    *,
    kind: str = "auto",
    instructions: str | None = "auto",
    instruction_seed: int = 0,
    image_root: str | Path | None = None,
    strict: bool = False,
    preset: str | None = None,
) -> Input:
    """Describe ``path`` as an encoding input. Query ids are qids, pool ids dids, corpus ids the
    corpus' stable dids. ``preset``: the model's name, whose own per-task instructions (if it
    has a table) come first when the instructions are a table ('auto' or a .tsv)."""
    path = Path(path)
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    errors = ErrorLog(strict=strict)
    if path.is_dir():
        if kind not in ("auto", "corpus"):
            raise ValueError(f"{path} is a folder: only --kind corpus reads folders")
        from mmembed.data.corpus import scan_corpus

        scan = scan_corpus(path)
        for s in scan.skipped:
            from mmembed.data.errors import DataError

            errors.add(DataError(s.path, None, None, s.reason))
        entries = [EncodeEntry(c.did, c) for c in scan.candidates]
        return Input(
            "corpus",
            lambda: iter(entries),
            len(entries),
            Path(image_root or scan.root),
            content_source(entries, path=str(path.resolve()), kind="corpus"),
            errors,
        )
    kind = sniff_kind(path) if kind == "auto" else kind
    root = Path(image_root) if image_root else (mbeir_root_of(path) or path.parent)
    from mmembed.data.mbeir import read_pool, read_queries

    if kind == "queries":
        choose = instruction_chooser(instructions, path, instruction_seed, preset)
        from mmembed.model.preset_instructions import preset_family

        family = preset_family(preset) if is_table_spec(instructions) else None

        def query_entries() -> Iterator[EncodeEntry]:
            for q in read_queries(path, errors):
                yield EncodeEntry(q.qid, q, choose(q))

        source = file_source(
            path,
            kind="queries",
            instructions=instructions,
            instruction_seed=instruction_seed,
            **({"instruction_family": family} if family else {}),
        )
        return Input("queries", query_entries, _count_lines(path), root, source, errors)
    if kind == "pool":

        def pool_entries() -> Iterator[EncodeEntry]:
            for c in read_pool(path, errors):
                yield EncodeEntry(c.did, c)

        return Input(
            "pool", pool_entries, _count_lines(path), root, file_source(path, kind="pool"), errors
        )
    raise ValueError(f"{path} is a file: --kind corpus needs a folder")
