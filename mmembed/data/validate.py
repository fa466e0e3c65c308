"""Validation of an M-BEIR tree (docs/data.md): every file's records, and the references between
files -- dids in pools, pos/neg lists and qrels, qids, task ids, image files, instructions.
Streams every file and keeps only sorted int64 id arrays. Knows nothing of models or metrics."""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmembed.data import mbeir
from mmembed.data.errors import DataError, ErrorLog
from mmembed.data.records import DATASETS, TASKS, hash_did, hash_qid, unhash_did, unhash_qid
from mmembed.data.validate_refs import (
    IdArray,
    check_duplicates,
    check_instructions,
    check_qrels,
    check_query_refs,
)

_NAME_TO_ID = {name.lower(): i for name, i in DATASETS.items()}
_NO_IMAGES_HINT = "image paths are relative to the data root; --no-images skips this check"


@dataclass
class FileSummary:
    """One file's line in the summary: what it is, how many records were read, errors found."""

    path: str
    kind: str
    records: int = 0
    errors: int = 0


@dataclass
class ValidationReport:
    root: str
    files: list[FileSummary] = field(default_factory=list)
    errors: ErrorLog = field(default_factory=ErrorLog)
    warnings: list[DataError] = field(default_factory=list)
    stopped: DataError | None = None  # strict mode: the error that stopped the run

    @property
    def n_errors(self) -> int:
        return len(self.errors) + (self.stopped is not None)

    @property
    def ok(self) -> bool:
        return self.n_errors == 0


class _Validator:
    def __init__(self, root: Path, log: ErrorLog, check_images: bool, on_file) -> None:
        self.layout = mbeir.Layout(root)
        self.root = root
        self.log = log
        self.check_images = check_images
        self.on_file = on_file or (lambda kind, path: None)
        self.report = ValidationReport(str(root), errors=log)
        self.pools: dict[Path, IdArray] = {}  # local pool file -> its dids
        self.globals: dict[str, IdArray] = {}  # split -> global pool dids
        self.instructions = None
        self.sets_by_id: dict[tuple[str, int, int], Path] = {}  # (split, dataset id, task)
        self._first_ds: int | None = None  # dataset id of the query file read last

    # -------------------------------------------------------------- helpers

    def err(self, path, line, fld, problem, hint="") -> None:
        self.log.add(DataError(path, line, fld, problem, hint))

    def warn(self, path, line, fld, problem, hint="") -> None:
        self.report.warnings.append(DataError(path, line, fld, problem, hint))

    def summary(self, path: Path, kind: str) -> FileSummary:
        s = FileSummary(str(path), kind)
        self.report.files.append(s)
        self.on_file(kind, path)
        return s

    def image(self, path: Path, line: int, fld: str, img: str) -> None:
        p = Path(img)
        full = p if p.is_absolute() else self.root / p
        try:
            size = full.stat().st_size
        except OSError:
            self.err(path, line, fld, f"image file not found: {full}", _NO_IMAGES_HINT)
            return
        if size == 0:
            self.err(path, line, fld, f"image file is empty (0 bytes): {full}", "replace the file")

    # -------------------------------------------------------------- files

    def run(self) -> None:
        lay = self.layout
        if not self.root.is_dir():
            self.err(self.root, None, None, "data root is not a folder", "give the M-BEIR root")
            return
        self.unrecognised()
        if lay.instructions_file.is_file():
            s = self.summary(lay.instructions_file, "instructions")
            self.instructions, s.records = check_instructions(
                lay.instructions_file, self.log, self.warn
            )
        elif lay.query_sets():
            self.warn(
                lay.instructions_file,
                None,
                None,
                "no instruction table",
                "instructed evaluation needs it; run without instructions or add the file",
            )
        for path in lay.pool_files():
            self.pools[path] = self.pool(path, "local pool", None)
        union = IdArray.union(list(self.pools.values()))
        for split, path in lay.global_pool_files():
            self.globals[split] = self.pool(path, f"global pool ({split})", union)
        sets = lay.query_sets()
        if not sets and not (self.root / "query" / "union_train").is_dir():
            self.err(
                self.root / "query",
                None,
                None,
                "no query files found",
                "expected query/{train,val,test}/mbeir_<dataset>_task<n>_<split>.jsonl",
            )
        for name, task, split in sets:
            self.queries(name, task, split)
        self.union_train()
        self.orphan_qrels({(n, t, s) for n, t, s in sets})

    def unrecognised(self) -> None:
        folders = [(self.root / "cand_pool" / "local", mbeir.POOL_FILE_RE)]
        folders += [(self.root / "query" / s, mbeir.QUERY_FILE_RE) for s in mbeir.SPLITS]
        for folder, pattern in folders:
            if folder.is_dir():
                for p in sorted(folder.iterdir()):
                    if p.suffix == ".jsonl" and not pattern.match(p.name):
                        self.warn(
                            p, None, None, "file name does not follow the M-BEIR pattern; ignored"
                        )

    def pool(self, path: Path, kind: str, checked: IdArray | None) -> IdArray:
        """Stream a pool: field checks, images, duplicate dids. ``checked``: dids whose image was
        already checked in a local pool (the global pool repeats them)."""
        s = self.summary(path, kind)
        rows = array("q")  # (did hash, line) pairs, flat: 16 bytes per candidate
        for line, obj in mbeir.iter_jsonl(path, self.log):
            s.records += 1
            e = mbeir.check_candidate(obj, path, line)
            if e:
                self.log.add(e)
            did = obj.get("did")
            n = _hash(hash_did, did)
            if n is None:
                if isinstance(did, str) and e is None:
                    self.err(
                        path, line, "did", f"did {did!r} is out of range", "n must be < 10,000,000"
                    )
                continue
            rows.extend((n, line))
            img = obj.get("img_path")
            wanted = self.check_images and isinstance(img, str) and img and e is None
            if wanted and (checked is None or n not in checked):
                self.image(path, line, "img_path", img)
        if s.records == 0:
            self.err(path, None, None, "pool file holds no candidates", "fill it or remove it")
        pairs = np.frombuffer(rows, dtype=np.int64).reshape(-1, 2)  # (N, 2) a view: no copy
        distinct = check_duplicates(pairs[:, 0], pairs[:, 1], path, "did", unhash_did, self.log)
        return IdArray(distinct, distinct_sorted=True)

    def queries(self, name: str, task: int, split: str) -> None:
        lay = self.layout
        path = lay.query_file(name, task, split)
        local_path = lay.local_pool_for(name, task, split)
        local = self.pools.get(local_path)
        glob = self.globals.get(split)
        if task not in TASKS:
            self.err(
                path,
                None,
                None,
                f"task {task} in the file name is not an M-BEIR task",
                f"M-BEIR task ids are {sorted(TASKS)}",
            )
        if local is None and (split != "train" or glob is None):
            self.err(
                path,
                None,
                None,
                "no local candidate pool for this query file",
                f"expected {local_path}",
            )
        q_arr, bad, r_arr = self.query_records(path, split, name, task, local, local_path, glob)
        self.clash(path, split, task)
        qrels = lay.qrels_file(name, task, split)
        if qrels.is_file():
            qs = self.summary(qrels, f"qrels ({split})")
            qs.records = check_qrels(
                qrels, task, split, path, q_arr, bad, r_arr, local, glob, self.log
            )
        elif split == "train":
            self.warn(
                path, None, None, "no qrels file for these training queries", f"expected {qrels}"
            )
        else:
            self.err(path, None, None, "no qrels file", f"expected {qrels} (write_qrels makes it)")

    def clash(self, path: Path, split: str, task: int) -> None:
        """Two query files of one split with the same (dataset id, task) cannot both be
        reported: result tables and run files key a task set by that pair."""
        if self._first_ds is None:
            return
        key = (split, self._first_ds, task)
        other = self.sets_by_id.setdefault(key, path)
        if other != path:
            self.err(
                path,
                None,
                None,
                f"dataset id {self._first_ds}, task {task} is also the pair of {other.name}",
                "give each dataset its own dataset id (the number before ':' in its ids)",
            )

    def union_train(self) -> None:
        """M-BEIR's ``query/union_train/*.jsonl``: training queries of every task together,
        answered from the global train pool; no qrels."""
        folder = self.root / "query" / "union_train"
        if not folder.is_dir():
            return
        glob = self.globals.get("train")
        for path in sorted(folder.glob("*.jsonl")):
            if glob is None:
                self.err(
                    path,
                    None,
                    None,
                    "union training queries need the global train pool",
                    f"expected {self.layout.global_pool_file('train')}",
                )
            self.query_records(path, "train", None, None, None, None, glob)

    def query_records(self, path, split, name, task, local, local_path, glob):
        """Stream one query file: field, task, dataset, image, instruction and list checks;
        references are checked against the pools at the end. ``name``/``task`` None: a file
        that mixes datasets and tasks. Returns the (Q, 2) qid hashes and lines, the qids of
        bad records, and the (R, 3) references (line, did hash, is positive)."""
        lay = self.layout
        s = self.summary(path, f"queries ({split})")
        expect_ds = _NAME_TO_ID.get(name) if name is not None else None
        qrows = array("q")  # (qid hash, line) pairs, flat
        refs = array("q")  # (line, did hash, is positive) triples, flat
        bad: list[int] = []
        missing_instr: set[tuple] = set()
        first_ds = None
        null_neg: list[int] = []
        for line, obj in mbeir.iter_jsonl(path, self.log):
            s.records += 1
            e = mbeir.check_query(obj, path, line)
            q = _hash(hash_qid, obj.get("qid"))
            if q is not None:
                qrows.extend((q, line))
            if e:
                self.log.add(e)
                if q is not None:
                    bad.append(q)
                continue
            if q is None:  # well-formed but not hashable: the dataset id or number is too large
                try:
                    hash_qid(obj["qid"])
                except ValueError as err:
                    self.err(path, line, "qid", str(err), "use smaller ids")
                continue
            if task is not None and obj["task_id"] != task:
                self.err(
                    path,
                    line,
                    "task_id",
                    f"task {obj['task_id']} but the file name says task {task}",
                    "move the query to its task's file",
                )
            ds = int(obj["qid"].split(":")[0])
            if expect_ds is not None and ds != expect_ds:
                self.err(path, line, "qid", f"dataset {ds} but {name} has dataset id {expect_ds}")
            elif first_ds is None:
                first_ds = ds
            elif ds != first_ds and expect_ds is None and name is not None:
                self.err(
                    path,
                    line,
                    "qid",
                    f"dataset {ds} differs from the file's first query ({first_ds})",
                )
            if self.check_images and obj.get("query_img_path"):
                self.image(path, line, "query_img_path", obj["query_img_path"])
            if self.instructions is not None and obj["task_id"] in TASKS:
                key = (ds, obj["query_modality"], TASKS[obj["task_id"]][1])
                if key not in missing_instr and key not in self.instructions:
                    missing_instr.add(key)
                    self.err(
                        path,
                        line,
                        None,
                        f"no instruction for (dataset_id, query, candidate) = {key}",
                        f"add a row to {lay.instructions_file}",
                    )
            if "neg_cand_list" in obj and obj["neg_cand_list"] is None:
                null_neg.append(line)
            pos, neg = obj["pos_cand_list"], obj.get("neg_cand_list") or []
            if not pos:
                self.err(
                    path,
                    line,
                    "pos_cand_list",
                    "is empty",
                    "every query needs at least one positive",
                )
            both = sorted(set(pos) & set(neg))
            if both:
                self.err(
                    path,
                    line,
                    "neg_cand_list",
                    f"{both[0]!r} is also a positive",
                    "a positive is never a negative",
                )
            for fld, dids, is_pos in (("pos_cand_list", pos, True), ("neg_cand_list", neg, False)):
                for did in dids:
                    n = _hash(hash_did, did)
                    if n is None:
                        self.err(path, line, fld, f"did {did!r} is out of range")
                    else:
                        refs.extend((line, n, int(is_pos)))
        if null_neg:
            self.warn(
                path,
                null_neg[0],
                "neg_cand_list",
                f"is null in {len(null_neg)} quer{'y' if len(null_neg) == 1 else 'ies'} "
                f"(first on this line); read as no negatives",
                "M-BEIR writes [] for no negatives",
            )
        if s.records == 0:
            self.err(path, None, None, "query file holds no queries", "fill it or remove it")
        self._first_ds = expect_ds if expect_ds is not None else first_ds
        q_arr = np.frombuffer(qrows, dtype=np.int64).reshape(-1, 2)  # (Q, 2) view
        r_arr = np.frombuffer(refs, dtype=np.int64).reshape(-1, 3)  # (R, 3) view
        check_duplicates(q_arr[:, 0], q_arr[:, 1], path, "qid", unhash_qid, self.log)
        check_query_refs(r_arr, path, split, local, local_path, glob, self.log)
        return q_arr, bad, r_arr

    def orphan_qrels(self, sets: set[tuple[str, int, str]]) -> None:
        for split in mbeir.SPLITS:
            folder = self.root / "qrels" / split
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                m = mbeir.QRELS_FILE_RE.match(p.name)
                if m is None or m["split"] != split:
                    if p.suffix == ".txt":
                        self.warn(
                            p,
                            None,
                            None,
                            "file name does not follow the M-BEIR qrels pattern; ignored",
                        )
                    continue
                if (m["name"], int(m["task"]), split) not in sets:
                    self.err(
                        p,
                        None,
                        None,
                        "qrels file without a matching query file",
                        f"expected {self.layout.query_file(m['name'], int(m['task']), split)}",
                    )


def _hash(fn: Callable[[str], int], value: object) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return fn(value)
    except ValueError:
        return None


def validate_tree(
    root: str | Path,
    *,
    strict: bool = False,
    check_images: bool = True,
    max_errors: int = 10_000,
    on_file: Callable[[str, Path], None] | None = None,
) -> ValidationReport:
    """Validate the M-BEIR tree at ``root``.

    Report-and-skip (default) reads everything and collects every error (keeping the messages
    of the first ``max_errors``; counts stay exact). ``strict`` stops at the first error, which
    is returned as ``report.stopped``. ``on_file(kind, path)`` is called as each file starts."""
    log = ErrorLog(strict=strict, limit=max_errors)
    v = _Validator(Path(root), log, check_images, on_file)
    try:
        v.run()
    except DataError as e:
        if not strict:
            raise
        v.report.stopped = e
    for s in v.report.files:
        s.errors = log.count_for(s.path) + (
            v.report.stopped is not None and v.report.stopped.path == s.path
        )
    return v.report
