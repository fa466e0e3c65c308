"""Readers and writers for every M-BEIR file kind (docs/data.md): queries, local and global
candidate pools, qrels and the instruction table, plus the directory layout.

Readers stream line by line and check each record's fields; cross-file checks (unknown dids,
duplicates, missing images) live in ``mmembed.data.validate``. Knows nothing of models."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mmembed.data.atomic import atomic_open
from mmembed.data.errors import DataError, ErrorLog, report
from mmembed.data.records import TASKS, Candidate, Modality, Query

SPLITS = ("train", "val", "test")
_ID_RE = re.compile(r"^\d+:\d+$")
QUERY_FILE_RE = re.compile(
    r"^mbeir_(?P<name>[a-z0-9_]+?)_task(?P<task>\d+)_(?P<split>train|val|test)\.jsonl$"
)
# Local pools are per task; some M-BEIR tasks also ship a split-specific pool
# (``mbeir_mscoco_task0_test_cand_pool.jsonl``), which then serves that split.
POOL_FILE_RE = re.compile(
    r"^mbeir_(?P<name>[a-z0-9_]+?)_task(?P<task>\d+)(?:_(?P<split>train|val|test))?_cand_pool\.jsonl$"
)
QRELS_FILE_RE = re.compile(
    r"^mbeir_(?P<name>[a-z0-9_]+?)_task(?P<task>\d+)_(?P<split>train|val|test)_qrels\.txt$"
)
GLOBAL_POOL_RE = re.compile(r"^mbeir_union_(?P<split>train|val|test)_cand_pool\.jsonl$")


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Paths of an M-BEIR tree rooted at ``root``. Dataset names are lower-cased in file names."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    def query_file(self, dataset: str, task: int, split: str) -> Path:
        return self.root / "query" / split / f"mbeir_{dataset.lower()}_task{task}_{split}.jsonl"

    def pool_file(self, dataset: str, task: int) -> Path:
        return (
            self.root
            / "cand_pool"
            / "local"
            / f"mbeir_{dataset.lower()}_task{task}_cand_pool.jsonl"
        )

    def local_pool_for(self, dataset: str, task: int, split: str) -> Path:
        """The local pool that serves ``split``: the split-specific file when the tree has one
        (``mbeir_mscoco_task0_test_cand_pool.jsonl``), else the task's pool."""
        specific = (
            self.root
            / "cand_pool"
            / "local"
            / f"mbeir_{dataset.lower()}_task{task}_{split}_cand_pool.jsonl"
        )
        return specific if specific.is_file() else self.pool_file(dataset, task)

    def global_pool_file(self, split: str) -> Path:
        return self.root / "cand_pool" / "global" / f"mbeir_union_{split}_cand_pool.jsonl"

    def qrels_file(self, dataset: str, task: int, split: str) -> Path:
        return self.root / "qrels" / split / f"mbeir_{dataset.lower()}_task{task}_{split}_qrels.txt"

    @property
    def instructions_file(self) -> Path:
        return self.root / "instructions" / "query_instructions.tsv"

    def query_sets(self, split: str | None = None) -> list[tuple[str, int, str]]:
        """(dataset name, task id, split) for every query file present, sorted."""
        found = []
        for s in SPLITS if split is None else (split,):
            folder = self.root / "query" / s
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                m = QUERY_FILE_RE.match(p.name)
                if m and m["split"] == s:
                    found.append((m["name"], int(m["task"]), s))
        return found

    def pool_files(self) -> list[Path]:
        """Every local pool file present (names matching the M-BEIR pattern), sorted."""
        folder = self.root / "cand_pool" / "local"
        if not folder.is_dir():
            return []
        return [p for p in sorted(folder.iterdir()) if POOL_FILE_RE.match(p.name)]

    def global_pool_files(self) -> list[tuple[str, Path]]:
        """(split, path) for every global pool file present."""
        return [(s, self.global_pool_file(s)) for s in SPLITS if self.global_pool_file(s).is_file()]


# --------------------------------------------------------------------------- jsonl


MAX_LINE_BYTES = 16 * 1024 * 1024  # a longer jsonl line is reported, never held in memory
MAX_JSON_DEPTH = 100  # deeper nesting is reported (M-BEIR records are two levels deep)


def iter_lines(
    f: BinaryIO, max_bytes: int | None = None, hasher: Any = None
) -> Iterator[tuple[int, bytes | None, int]]:
    """(1-based line number, line bytes, length) for each line of a binary file, holding at
    most ``max_bytes`` (default ``MAX_LINE_BYTES``) of it: a longer line is drained in chunks
    and given as None. ``hasher`` (e.g. a hashlib object) is fed every byte read."""
    max_bytes = MAX_LINE_BYTES if max_bytes is None else max_bytes
    lineno = 0
    while True:
        raw = f.readline(max_bytes + 1)
        if not raw:
            return
        lineno += 1
        if hasher is not None:
            hasher.update(raw)
        if len(raw) <= max_bytes or raw.endswith(b"\n"):
            yield lineno, raw, len(raw)
            continue
        n = len(raw)
        while True:  # drain the rest of the over-long line
            chunk = f.readline(1 << 20)
            if hasher is not None:
                hasher.update(chunk)
            n += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                break
        yield lineno, None, n


def too_long(n: int) -> str:
    """The reason given for a line of ``n`` bytes over the limit."""
    return f"line of {_size(n)} is over the {_size(MAX_LINE_BYTES)} limit for one record"


def _size(n: int) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} bytes"


def _too_deep(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:  # iterative: a deep value must not exhaust the stack here either
        o, d = stack.pop()
        if isinstance(o, dict):
            o = list(o.values())
        if isinstance(o, list):
            if d > limit:
                return True
            stack.extend((v, d + 1) for v in o)
    return False


def parse_json_line(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """One jsonl line -> its value. Every way a line can be bad (malformed JSON, nesting past
    Python's recursion limit or ``max_depth``, a number too long to convert, bad UTF-8) raises
    ValueError with a reason that names the problem, never RecursionError."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"JSON nested too deeply (over {max_depth} levels)") from None
    except UnicodeDecodeError as e:
        raise ValueError(
            f"not UTF-8 (byte 0x{e.object[e.start]:02x} at column {e.start + 1})"
        ) from None
    except ValueError as e:  # Python's int-size limit: "Exceeds the limit (4300 digits) ..."
        if "digits" in str(e):
            raise ValueError(
                "a number too long to read (over 4300 digits); write it as a string"
            ) from None
        raise ValueError(f"unreadable JSON ({e})") from None
    brackets = raw.count(b"[" if isinstance(raw, bytes) else "[") + raw.count(
        b"{" if isinstance(raw, bytes) else "{"
    )
    if brackets > max_depth and _too_deep(obj, max_depth):
        raise ValueError(f"JSON nested too deeply (over {max_depth} levels)")
    return obj


def iter_jsonl(path: str | Path, errors: ErrorLog | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (1-based line number, object) for each non-blank line of a jsonl file.

    The file is read in binary, one line at a time (at most ``MAX_LINE_BYTES`` held), and each
    line is decoded on its own, so a bad byte is reported on its exact line and the lines after
    it are still read. Malformed, over-long or over-deep JSON, non-UTF-8 lines and lines that
    are not objects go to ``errors`` (raised if None)."""
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw, n in iter_lines(f):
            if raw is None:
                report(errors, DataError(path, lineno, None, too_long(n), "split the record"))
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark is harmless; json.loads would refuse it
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                report(
                    errors,
                    DataError(
                        path,
                        lineno,
                        None,
                        f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                        "re-save the file as UTF-8",
                    ),
                )
                continue
            try:
                obj = parse_json_line(line)
            except ValueError as e:
                report(errors, DataError(path, lineno, None, str(e), "fix or delete this line"))
                continue
            if not isinstance(obj, dict):
                report(
                    errors,
                    DataError(
                        path,
                        lineno,
                        None,
                        f"expected a JSON object, got {type(obj).__name__}",
                        "each line must be one object",
                    ),
                )
                continue
            yield lineno, obj


def write_jsonl(path: str | Path, objects: Iterable[dict[str, Any]]) -> int:
    """Write objects one per line, atomically (temp file + rename). Returns the count."""
    n = 0
    with atomic_open(path, "w", newline="\n") as f:
        for obj in objects:
            f.write(json.dumps(obj, ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


# --------------------------------------------------------------------------- field checks

_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list"}


def _check(
    obj: dict, key: str, types: tuple, nullable: bool, path: Path, line: int
) -> DataError | None:
    if key not in obj:
        return DataError(path, line, key, "missing field", f"add {key!r} to the record")
    v = obj[key]
    if v is None:
        return None if nullable else DataError(path, line, key, "is null", "give it a value")
    if isinstance(v, bool) or not isinstance(v, types):
        want = " or ".join(_TYPE_NAMES[t] for t in types) + (" or null" if nullable else "")
        return DataError(path, line, key, f"expected {want}, got {type(v).__name__} {v!r:.40}")
    return None


def _check_id(value: str, key: str, path: Path, line: int) -> DataError | None:
    if not _ID_RE.match(value):
        return DataError(path, line, key, f"malformed id {value!r}", "ids look like 'DATASET_ID:N'")
    return None


def _check_modality(
    obj: dict, mkey: str, tkey: str, ikey: str, path: Path, line: int
) -> DataError | None:
    try:
        m = Modality.parse(obj[mkey])
    except ValueError as e:
        return DataError(path, line, mkey, str(e))
    if m.has_text and not obj.get(tkey):
        return DataError(path, line, tkey, f"modality {m.value!r} needs text but it is empty")
    if m.has_image and not obj.get(ikey):
        return DataError(
            path, line, ikey, f"modality {m.value!r} needs an image path but it is empty"
        )
    return None


def check_query(obj: dict, path: Path, line: int) -> DataError | None:
    """The first field error of a query object, or None."""
    for key, types, nullable in (
        ("qid", (str,), False),
        ("query_txt", (str,), True),
        ("query_img_path", (str,), True),
        ("query_modality", (str,), False),
        ("query_src_content", (str, dict), True),
        ("pos_cand_list", (list,), False),
        ("neg_cand_list", (list,), True),
        ("task_id", (int,), False),
    ):
        if key == "query_src_content" and key not in obj:
            continue  # optional in practice
        if key == "neg_cand_list" and key not in obj:
            continue
        err = _check(obj, key, types, nullable, path, line)
        if err:
            return err
    err = _check_id(obj["qid"], "qid", path, line)
    if err:
        return err
    if obj["task_id"] not in TASKS:
        return DataError(
            path,
            line,
            "task_id",
            f"unknown task id {obj['task_id']}",
            f"M-BEIR task ids are {sorted(TASKS)}",
        )
    for key in ("pos_cand_list", "neg_cand_list"):
        for did in obj.get(key) or []:
            if not isinstance(did, str) or not _ID_RE.match(did):
                return DataError(
                    path, line, key, f"malformed did {did!r}", "dids look like 'DATASET_ID:N'"
                )
    err = _check_modality(obj, "query_modality", "query_txt", "query_img_path", path, line)
    if err:
        return err
    if obj["query_modality"] != TASKS[obj["task_id"]][0]:
        return DataError(
            path,
            line,
            "query_modality",
            f"{obj['query_modality']!r} does not match task {obj['task_id']} "
            f"(expects {TASKS[obj['task_id']][0]!r})",
        )
    return None


def check_candidate(obj: dict, path: Path, line: int) -> DataError | None:
    """The first field error of a candidate object, or None."""
    for key, types, nullable in (
        ("did", (str,), False),
        ("txt", (str,), True),
        ("img_path", (str,), True),
        ("modality", (str,), False),
        ("src_content", (str, dict), True),
    ):
        if key == "src_content" and key not in obj:
            continue
        err = _check(obj, key, types, nullable, path, line)
        if err:
            return err
    err = _check_id(obj["did"], "did", path, line)
    if err:
        return err
    return _check_modality(obj, "modality", "txt", "img_path", path, line)


def _src(v: Any) -> str | None:
    return v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)


# --------------------------------------------------------------------------- readers


def read_queries(path: str | Path, errors: ErrorLog | None = None) -> Iterator[Query]:
    """Stream the queries of one M-BEIR query file. Bad records go to ``errors`` (raise if None)."""
    path = Path(path)
    for line, obj in iter_jsonl(path, errors):
        err = check_query(obj, path, line)
        if err:
            report(errors, err)
            continue
        obj["query_src_content"] = _src(obj.get("query_src_content"))
        yield Query.from_json(obj)


def read_pool(path: str | Path, errors: ErrorLog | None = None) -> Iterator[Candidate]:
    """Stream the candidates of a local or global pool file."""
    path = Path(path)
    for line, obj in iter_jsonl(path, errors):
        err = check_candidate(obj, path, line)
        if err:
            report(errors, err)
            continue
        obj["src_content"] = _src(obj.get("src_content"))
        yield Candidate.from_json(obj)


# Which qrels lines are positives: "positive" = relevance > 0, as UniIR's evaluation reads them
# (int(rel) > 0); "one" = relevance exactly 1 (mmembed before issue 13).
QRELS_RULES = ("positive", "one")


def iter_qrels(
    path: str | Path, errors: ErrorLog | None = None, *, positives: str = "positive"
) -> Iterator[tuple[int, str, str, int]]:
    """Yield (line, qid, did, task_id) for each positive in a qrels file ``qid 0 did 1 task_id``;
    ``positives`` picks the rule (QRELS_RULES), UniIR's by default."""
    if positives not in QRELS_RULES:
        raise ValueError(f"positives={positives!r}: choose one of {', '.join(QRELS_RULES)}")
    path = Path(path)
    # errors="replace": a bad byte becomes U+FFFD and fails the id check on its own line.
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            parts = raw.split()
            if not parts:
                continue
            if len(parts) != 5:
                report(
                    errors,
                    DataError(
                        path,
                        lineno,
                        None,
                        f"expected 5 columns 'qid 0 did 1 task_id', got {len(parts)}",
                    ),
                )
                continue
            qid, _, did, rel, task = parts
            bad = _check_id(qid, "qid", path, lineno) or _check_id(did, "did", path, lineno)
            if bad:
                report(errors, bad)
                continue
            if not task.isdigit() or int(task) not in TASKS:
                report(
                    errors,
                    DataError(
                        path,
                        lineno,
                        "task_id",
                        f"unknown task id {task!r}",
                        f"M-BEIR task ids are {sorted(TASKS)}",
                    ),
                )
                continue
            if not rel.lstrip("-").isdigit():
                report(
                    errors,
                    DataError(
                        path,
                        lineno,
                        None,
                        f"relevance {rel!r} is not an integer",
                        "M-BEIR qrels lines read 'qid 0 did 1 task_id'",
                    ),
                )
                continue
            grade = int(rel)
            if (grade != 1) if positives == "one" else (grade <= 0):
                continue  # not a positive: kept out of the hit set
            yield lineno, qid, did, int(task)


def read_qrels(
    path: str | Path, errors: ErrorLog | None = None, *, positives: str = "positive"
) -> dict[str, set[str]]:
    """qid -> set of positive dids (relevance > 0 as UniIR, or ``positives="one"``)."""
    qrels: dict[str, set[str]] = {}
    for _, qid, did, _ in iter_qrels(path, errors, positives=positives):
        qrels.setdefault(qid, set()).add(did)
    return qrels


# --------------------------------------------------------------------------- writers


def write_queries(path: str | Path, queries: Iterable[Query]) -> int:
    return write_jsonl(path, (q.to_json() for q in queries))


def write_pool(path: str | Path, candidates: Iterable[Candidate]) -> int:
    return write_jsonl(path, (c.to_json() for c in candidates))


def write_qrels(path: str | Path, queries: Iterable[Query]) -> int:
    """Write ``qid 0 did 1 task_id`` for every positive of every query."""
    n = 0
    with atomic_open(path, "w", newline="\n") as f:
        for q in queries:
            for did in q.pos_dids:
                f.write(f"{q.qid} 0 {did} 1 {q.task_id}\n")
                n += 1
    return n
