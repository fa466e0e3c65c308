"""M-BEIR scoring: the (dataset, task) query sets of a data root, per-task hit-rate Recall@k with
the reference's semantics, headline means, and the top-1 error analysis (wrong modality / wrong
domain / other). Scores ranked labels or run files; knows nothing of models (see mbeir_run)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmembed.data.errors import ErrorLog
from mmembed.data.mbeir import Layout, read_qrels, read_queries
from mmembed.data.records import DATASETS, DID_BASE, TASKS, Query, hash_did
from mmembed.eval.metrics import first_hit_ranks

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)
# The reference reports Recall@10/20/50 for these datasets, with R@10 as their headline.
WIDE_KS = {"Fashion200K": (10, 20, 50), "FashionIQ": (10, 20, 50)}
# The reference's row order (task id first, then this order of its datasets).
REFERENCE_ORDER = [
    "visualnews_task0",
    "mscoco_task0",
    "fashion200k_task0",
    "webqa_task1",
    "edis_task2",
    "webqa_task2",
    "visualnews_task3",
    "mscoco_task3",
    "fashion200k_task3",
    "nights_task4",
    "oven_task6",
    "infoseek_task6",
    "fashioniq_task7",
    "cirr_task7",
    "oven_task8",
    "infoseek_task8",
]
MODALITY_CODES = {"text": 0, "image": 1, "image,text": 2}
ERROR_KINDS = ("wrong_modality", "wrong_domain", "other")


@dataclass
class TaskFiles:
    """One (dataset, task, split) of a data root and its files."""

    name: str  # the lower-case name used in file names
    dataset: str  # display name (M-BEIR's spelling, or the dataset's own from its tsv)
    dataset_id: int
    task_id: int
    split: str
    query_file: Path
    pool_file: Path
    qrels_file: Path

    @property
    def key(self) -> str:
        return f"{self.name}_task{self.task_id}"

    @property
    def ks(self) -> tuple[int, ...]:
        return WIDE_KS.get(self.dataset, DEFAULT_KS)

    @property
    def headline_k(self) -> int:
        return 10 if self.dataset in WIDE_KS else 5

    @property
    def cand_modality(self) -> str:
        return TASKS[self.task_id][1]

    def sort_key(self) -> tuple:
        ref = (
            REFERENCE_ORDER.index(self.key) if self.key in REFERENCE_ORDER else len(REFERENCE_ORDER)
        )
        return (self.task_id, ref, self.dataset_id, self.name)


def _first_qid(path: Path) -> str | None:
    for q in read_queries(path, ErrorLog()):
        return q.qid
    return None


def discover(root: str | Path, split: str = "test") -> list[TaskFiles]:
    """Every query set of ``split`` under ``root`` with its local pool and qrels, reference order."""
    layout = Layout(root)
    names = {n.lower(): n for n in DATASETS}
    tsv_names: dict[int, str] = {}
    if layout.instructions_file.is_file():
        from mmembed.data.instructions import read_instructions

        for row in read_instructions(layout.instructions_file, ErrorLog()).rows:
            tsv_names.setdefault(row.dataset_id, row.dataset)
    sets = []
    for name, task, s in layout.query_sets(split):
        qfile = layout.query_file(name, task, s)
        qid = _first_qid(qfile)
        if qid is None:
            log.warning("%s has no valid queries; skipped", qfile)
            continue
        did = int(qid.split(":")[0])
        display = names.get(name) or tsv_names.get(did) or name
        sets.append(
            TaskFiles(
                name,
                display,
                did,
                task,
                s,
                qfile,
                layout.local_pool_for(name, task, s),
                layout.qrels_file(name, task, s),
            )
        )
    if not sets:
        raise FileNotFoundError(
            f"{Path(root) / 'query' / split}: no M-BEIR query files "
            f"(mbeir_<dataset>_task<n>_{split}.jsonl); is --data the M-BEIR root?"
        )
    return sorted(sets, key=TaskFiles.sort_key)


@dataclass
class TaskData:
    """The queries of a task set and their positives (from the qrels file, as the reference)."""

    task: TaskFiles
    queries: list[Query]
    positives: list[set[str]]
    errors: ErrorLog


def load_task(
    task: TaskFiles, errors: ErrorLog | None = None, *, positives: str = "positive"
) -> TaskData:
    """``positives``: which qrels lines count (data.mbeir.QRELS_RULES; UniIR's rule by default)."""
    errors = errors if errors is not None else ErrorLog()
    queries = list(read_queries(task.query_file, errors))
    if task.qrels_file.is_file():
        qrels = read_qrels(task.qrels_file, errors, positives=positives)
    else:
        log.warning("%s missing: using the queries' pos_cand_list", task.qrels_file)
        qrels = {q.qid: set(q.pos_dids) for q in queries}
    return TaskData(task, queries, [qrels.get(q.qid, set()) for q in queries], errors)


@dataclass
class TaskResult:
    dataset: str
    dataset_id: int
    task_id: int
    split: str
    system: str  # "local", "global", or a run's name
    queries: int
    recall: dict[str, float]  # "R@5" -> percent
    headline: str  # the key of the headline metric, e.g. "R@5"
    errors: dict[str, int] = field(default_factory=dict)  # top-1 misses by kind
    missing: int = 0  # queries the system returned nothing for
    no_positive: int = 0  # queries with no positive in the qrels (they count as misses)

    @property
    def value(self) -> float:
        return self.recall[self.headline]


def score_task(
    data: TaskData,
    system: str,
    ranked: Sequence[Sequence[str]] | None = None,
    *,
    labels: np.ndarray | None = None,
    modality_of: dict[int, int] | None = None,
) -> TaskResult:
    """Score one task. Pass ``labels`` (Q, K) hashed dids (from an index), or ``ranked`` did lists
    (from a run; an empty list = a query the run did not answer). ``modality_of`` maps the label
    of each top-1 miss to its modality code, for the error analysis."""
    task = data.task
    if labels is None:
        assert ranked is not None
        width = max((len(r) for r in ranked), default=1) or 1
        labels = np.full((len(ranked), width), -1, dtype=np.int64)
        for i, row in enumerate(ranked):
            if row:
                labels[i, : len(row)] = [hash_did(d) for d in row]
    pos = [{hash_did(d) for d in p} for p in data.positives]
    first = first_hit_ranks(labels, pos)  # (Q,)
    recall = {
        f"R@{k}": 100.0 * float(np.mean(first < k)) if len(first) else float("nan") for k in task.ks
    }
    missing = int((labels[:, 0] < 0).sum()) if labels.size else len(data.queries)
    errors = dict.fromkeys(ERROR_KINDS, 0)
    want = MODALITY_CODES[task.cand_modality]
    for lab in labels[first > 0, 0].tolist() if labels.size else []:
        if lab < 0:
            continue  # nothing retrieved: not a top-1 error of any kind
        m = (modality_of or {}).get(lab)
        if m is not None and m != want:
            errors["wrong_modality"] += 1
        elif lab // DID_BASE != task.dataset_id:
            errors["wrong_domain"] += 1
        else:
            errors["other"] += 1
    return TaskResult(
        task.dataset,
        task.dataset_id,
        task.task_id,
        task.split,
        system,
        len(data.queries),
        recall,
        f"R@{task.headline_k}",
        errors,
        missing,
        sum(1 for p in data.positives if not p),
    )


def top1_miss_labels(labels: np.ndarray, positives: Sequence[set[str]]) -> set[int]:
    pos = [{hash_did(d) for d in p} for p in positives]
    first = first_hit_ranks(labels, pos)
    return {lab for lab in labels[first > 0, 0].tolist() if lab >= 0}


def modalities_from_pools(paths: Iterable[Path], wanted: set[int]) -> dict[int, int]:
    """Modality codes of the ``wanted`` labels, streamed from pool files (each line parsed
    lightly; the pools are never held in memory)."""
    found: dict[int, int] = {}
    for path in paths:
        if not path.is_file() or len(found) == len(wanted):
            continue
        with open(path, "rb") as f:
            for raw in f:
                try:
                    obj = json.loads(raw)
                    lab = hash_did(obj["did"])
                except (ValueError, KeyError, TypeError, RecursionError):
                    continue
                if lab in wanted and lab not in found:
                    code = MODALITY_CODES.get(obj.get("modality"))
                    if code is not None:
                        found[lab] = code
    return found


@dataclass
class Report:
    """Results of one or more systems over the task sets of one split."""

    split: str
    tasks: list[TaskFiles]
    results: list[TaskResult] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def systems(self) -> list[str]:
        return list(dict.fromkeys(r.system for r in self.results))

    def get(self, task: TaskFiles, system: str) -> TaskResult | None:
        for r in self.results:
            if r.system == system and (r.dataset_id, r.task_id) == (task.dataset_id, task.task_id):
                return r
        return None

    def mean(self, system: str) -> float:
        vals = [r.value for r in self.results if r.system == system and not np.isnan(r.value)]
        return float(np.mean(vals)) if vals else float("nan")

    def error_rates(self, system: str) -> dict[str, float]:
        """Each top-1 error kind as a percentage of all queries of the system."""
        rs = [r for r in self.results if r.system == system]
        n = sum(r.queries for r in rs)
        return {
            k: 100.0 * sum(r.errors.get(k, 0) for r in rs) / n if n else float("nan")
            for k in ERROR_KINDS
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "settings": self.settings,
            "means": {s: self.mean(s) for s in self.systems},
            "error_rates": {s: self.error_rates(s) for s in self.systems},
            "results": [asdict(r) for r in self.results],
        }


def score_run(
    run: dict[str, list[str]],
    tasks: Sequence[TaskFiles],
    system: str,
    *,
    pool_files: Sequence[Path] = (),
    positives: str = "positive",
) -> list[TaskResult]:
    """Score a run (qid -> dids in rank order) on every task set; queries missing from the run
    count as misses. Error analysis looks the top-1 candidates up in ``pool_files``."""
    datas = [load_task(t, positives=positives) for t in tasks]
    ranked = [[run.get(q.qid, []) for q in d.queries] for d in datas]
    answered = sum(1 for rows in ranked for r in rows if r)
    if answered == 0:
        raise ValueError(
            f"run {system!r} answers none of the {sum(len(d.queries) for d in datas)} "
            f"queries of split {tasks[0].split if tasks else '?'}; wrong --split or --data?"
        )
    wanted: set[int] = set()
    for d, rows in zip(datas, ranked, strict=True):
        for row, pos in zip(rows, d.positives, strict=True):
            if row and row[0] not in pos:
                wanted.add(hash_did(row[0]))
    modality_of = modalities_from_pools(pool_files, wanted)
    return [
        score_task(d, system, rows, modality_of=modality_of)
        for d, rows in zip(datas, ranked, strict=True)
    ]
