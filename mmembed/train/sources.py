"""Training sources: M-BEIR query files (union train included) with their candidate pool, and
BEIR-style text retrieval folders (corpus.jsonl, queries.jsonl, qrels/train.tsv), loaded into
examples (query, positives, negatives, task) plus the candidates they need. Instructions are drawn
seeded by (seed, query, epoch). Knows nothing about models, batching or losses."""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mmembed.data.beir import doc_text, read_beir_jsonl, read_beir_qrels
from mmembed.data.errors import DataError, ErrorLog
from mmembed.data.instructions import InstructionTable, query_instruction, read_instructions
from mmembed.data.mbeir import read_pool, read_queries
from mmembed.data.records import Candidate, Modality, Query, dataset_of
from mmembed.train.config import ConfigError, SourceConfig

log = logging.getLogger(__name__)


@dataclass
class Example:
    """One training query: ``pos``/``neg`` are dids in the source's ``candidates``."""

    key: str  # unique over all sources: "source/qid"
    query: Query
    pos: list[str]
    neg: list[str]
    task: str  # grouping key for one-task-per-batch: "dataset:task"


@dataclass
class Source:
    name: str
    examples: list[Example]
    candidates: dict[str, Candidate]
    image_root: Path | None
    in_batch_negatives: bool = True
    weight: float = 1.0
    instruction_table: InstructionTable | None = None
    instruction: str | None = None
    errors: ErrorLog = field(default_factory=ErrorLog)
    _missing_keys: set = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.examples)

    def choose_instruction(self, ex: Example, *, seed: int, epoch: int) -> str | None:
        """The query's instruction for this epoch, a draw seeded by (seed, query, epoch); the
        source's fixed ``instruction`` when it has no table."""
        q = ex.query
        table = self.instruction if self.instruction_table is None else self.instruction_table
        try:
            return query_instruction(q, table, seed=seed, key=f"{q.qid}|{epoch}", strict=True)
        except KeyError as e:
            k = (q.dataset_id, q.task_id)
            if k not in self._missing_keys:
                self._missing_keys.add(k)
                log.warning(
                    "source %s: %s; queries of that task train without an instruction", self.name, e
                )
            return None


def _resolve(root: Path, pattern: str, what: str, source: str) -> list[Path]:
    p = Path(pattern)
    full = p if p.is_absolute() else root / p
    hits = sorted(Path(x) for x in glob.glob(str(full)))
    if not hits:
        raise ConfigError(
            f"source {source!r}: {what} {str(full)!r} matches no file; check 'root' and the path"
        )
    return hits


def load_mbeir(cfg: SourceConfig, errors: ErrorLog) -> Source:
    """Queries from ``cfg.queries``, candidates (only those referenced) from ``cfg.pool``."""
    root = Path(cfg.root)
    queries: list[Query] = []
    origin: list[Path] = []  # the file each query came from (for messages)
    for path in [p for pat in cfg.queries for p in _resolve(root, pat, "query file", cfg.name)]:
        for q in read_queries(path, errors):
            if cfg.limit is not None and len(queries) >= cfg.limit:
                break
            queries.append(q)
            origin.append(path)
    needed = {d for q in queries for d in (*q.pos_dids, *q.neg_dids)}
    candidates: dict[str, Candidate] = {}
    pools = [p for pat in cfg.pool for p in _resolve(root, pat, "pool file", cfg.name)]
    if not pools:
        raise ConfigError(f"source {cfg.name!r}: list its candidate pool file(s) under 'pool'")
    for path in pools:
        for c in read_pool(path, errors):
            if c.did in needed:
                candidates[c.did] = c
    examples, missing_neg = [], 0
    for q, qpath in zip(queries, origin, strict=True):
        pos = [d for d in dict.fromkeys(q.pos_dids) if d in candidates]
        if not pos:
            errors.add(
                DataError(
                    qpath,
                    None,
                    "pos_cand_list",
                    f"query {q.qid}: none of its positives {q.pos_dids[:3]} is in the pool",
                    "check the pool files of this source; the query is skipped",
                )
            )
            continue
        pos_set = set(q.pos_dids)
        neg = [d for d in dict.fromkeys(q.neg_dids) if d in candidates and d not in pos_set]
        missing_neg += sum(1 for d in q.neg_dids if d not in candidates)
        examples.append(
            Example(f"{cfg.name}/{q.qid}", q, pos, neg, f"{dataset_of(q.qid)}:{q.task_id}")
        )
    if missing_neg:
        log.warning(
            "source %s: %d listed negatives are not in the pool and were dropped",
            cfg.name,
            missing_neg,
        )
    table = None
    if cfg.instructions:
        ipath = Path(cfg.instructions)
        ipath = ipath if ipath.is_absolute() else root / ipath
        if not ipath.is_file():
            raise ConfigError(
                f"source {cfg.name!r}: instruction file {str(ipath)!r} not found; "
                "set 'instructions: null' to train without instructions"
            )
        table = read_instructions(ipath, errors)
    return Source(
        cfg.name, examples, candidates, root, cfg.in_batch_negatives, 1.0, table, None, errors
    )


def load_beir(cfg: SourceConfig, errors: ErrorLog) -> Source:
    """A BEIR-style text retrieval folder; ids are prefixed with the source name."""
    root = Path(cfg.root)
    files = {k: root / getattr(cfg, k) for k in ("corpus", "query_file", "qrels")}
    for k, p in files.items():
        if not p.is_file():
            raise ConfigError(f"source {cfg.name!r}: {k} file {str(p)!r} not found")
    # positives: grade above 0 (mmembed.data.beir reads the files, with evaluation's rules)
    qrels = {
        q: [f"{cfg.name}/{d}" for d, grade in judged.items() if grade > 0]
        for q, judged in read_beir_qrels(files["qrels"], errors).items()
    }
    candidates: dict[str, Candidate] = {}
    for did, (lineno, obj) in read_beir_jsonl(files["corpus"], errors).items():
        text = doc_text(obj.get("title"), obj.get("text"))
        if not text:
            errors.add(
                DataError(files["corpus"], lineno, "text", "empty document", "it is skipped")
            )
            continue
        candidates[f"{cfg.name}/{did}"] = Candidate(f"{cfg.name}/{did}", text, None, Modality.TEXT)
    examples: list[Example] = []
    for qid, (lineno, obj) in read_beir_jsonl(files["query_file"], errors).items():
        text = obj.get("text")
        if not text:
            errors.add(
                DataError(files["query_file"], lineno, None, "a query needs '_id' and 'text'")
            )
            continue
        pos = [d for d in qrels.get(qid, []) if d in candidates]
        if not pos:
            continue  # queries of other splits have no training qrels
        q = Query(f"{cfg.name}/{qid}", text, None, Modality.TEXT, 1, pos)
        examples.append(Example(f"{cfg.name}/{qid}", q, pos, [], f"{cfg.name}:1"))
        if cfg.limit is not None and len(examples) >= cfg.limit:
            break
    return Source(
        cfg.name,
        examples,
        candidates,
        None,
        cfg.in_batch_negatives,
        1.0,
        None,
        cfg.instruction,
        errors,
    )


LOADERS = {"mbeir": load_mbeir, "beir": load_beir}


def load_sources(cfgs: list[SourceConfig], *, strict: bool = False) -> list[Source]:
    """Load every source; bad records are reported and skipped (``strict`` stops at the first)."""
    sources = []
    for cfg in cfgs:
        errors = ErrorLog(strict=strict)
        src = LOADERS[cfg.kind](cfg, errors)
        src.weight = float(cfg.weight) if cfg.weight is not None else float(len(src))
        if errors:
            log.warning("source %s: %s; first: %s", cfg.name, errors.summary(), errors.errors[0])
        if not src.examples:
            raise ConfigError(
                f"source {cfg.name!r}: no usable training examples"
                + (f" ({errors.summary()}; first: {errors.errors[0]})" if errors else "")
            )
        log.info("source %s: %d examples, %d candidates", cfg.name, len(src), len(src.candidates))
        sources.append(src)
    return sources
