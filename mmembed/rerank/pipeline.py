"""Reranking the top k of a run: build one prompt per (query, candidate) pair, score pairs in
batches with images loaded lazily, and reorder. Pairs that cannot be scored (unreadable image,
unknown id, an image for a text-only model) keep their first-stage rank and are reported.
Knows nothing of model loading or files; see ``mmembed.rerank.inputs`` for M-BEIR data."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmembed.data.images import ImageLoadError, load_image
from mmembed.data.instructions import InstructionTable, query_instruction
from mmembed.data.records import Candidate, Query, image_file
from mmembed.rerank.prompts import IMAGE_MARKER, format_item
from mmembed.rerank.scorer import Reranker

log = logging.getLogger(__name__)

Ranked = list[tuple[str, float]]  # [(did, score)] best first
SCORE_MODES = ("first-stage", "rerank")
CHUNK_QUERIES = 512  # prompts are built and scored for this many queries at a time
IMAGE_SIDE = 1024  # images are decoded at most this large; LLaVA-Next resizes to <= 1008 anyway


@dataclass
class PairScore:
    qid: str
    did: str
    old_rank: int
    new_rank: int = 0
    prob: float | None = None  # None: not scored, kept its rank
    status: str = "ok"  # "ok" or why it was not scored


@dataclass
class RerankReport:
    queries: int = 0
    reranked_queries: int = 0
    pairs: int = 0
    scored: int = 0
    problems: list[tuple[str, str | None, str]] = field(default_factory=list)  # (qid, did, reason)
    truncated: list[str] = field(default_factory=list)  # ids of items whose text was cut
    mean_answer_mass: float = float("nan")
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"{self.reranked_queries}/{self.queries} queries reranked; "
            f"{self.scored}/{self.pairs} pairs scored in {self.seconds:.1f}s",
            f"mean P(True)+P(False) at the answer position: {self.mean_answer_mass:.3f}",
        ]
        if self.truncated:
            lines.append(
                f"{len(self.truncated)} item text(s) truncated (e.g. {', '.join(self.truncated[:3])})"
            )
        if self.problems:
            lines.append(f"{len(self.problems)} pair(s) or queries kept their first-stage rank:")
            lines += [f"  {q} {d or '-'}: {why}" for q, d, why in self.problems[:10]]
            if len(self.problems) > 10:
                lines.append(f"  ... and {len(self.problems) - 10} more (see the scores file)")
        return "\n".join(lines)


@dataclass
class RerankResult:
    run: dict[str, Ranked]
    pairs: list[PairScore]
    report: RerankReport


def reorder(
    top: Ranked, probs: Sequence[float | None], score_mode: str = "first-stage"
) -> tuple[Ranked, list[int]]:
    """Reorder one query's top k. Unscored entries (None) stay in their slots; scored ones are
    sorted by probability (ties keep first-stage order) into the remaining slots.

    Scores written: ``first-stage`` gives slot i the first-stage score slot i had (scores stay
    on the first-stage scale and non-increasing with rank); ``rerank`` writes the probability,
    and an unscored slot takes the score of the slot above it (1.0 at the top).
    Returns the new list and, for each new slot, the old index it came from."""
    if score_mode not in SCORE_MODES:
        raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
    scored = sorted((i for i, p in enumerate(probs) if p is not None), key=lambda i: (-probs[i], i))
    it = iter(scored)
    order = [i if probs[i] is None else next(it) for i in range(len(top))]
    out: Ranked = []
    for slot, i in enumerate(order):
        if score_mode == "first-stage":
            score = top[slot][1]
        else:
            score = probs[i] if probs[i] is not None else (out[-1][1] if out else 1.0)
        out.append((top[i][0], float(score)))
    return out, order


class _ImageCache:
    """A few recently decoded images (queries repeat across their k pairs)."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, path: str) -> Any:
        if path in self._items:
            self._items.move_to_end(path)
            return self._items[path]
        value = load_image(path, max_side=IMAGE_SIDE)  # raises ImageLoadError
        self._items[path] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


def rerank_run(
    run: Mapping[str, Sequence[tuple[str, float]]],
    queries: Mapping[str, Query],
    candidates: Mapping[str, Candidate],
    reranker: Reranker,
    *,
    k: int = 10,
    image_root: str | Path | None = None,
    instructions: InstructionTable | None = None,
    batch_size: int = 8,
    max_text_tokens: int = 256,
    score_mode: str = "first-stage",
    show_progress: bool = True,
) -> RerankResult:
    """Rerank the top ``k`` of every query of ``run``; ranks below k are left as they are."""
    if k < 1 or batch_size < 1 or max_text_tokens < 1:
        raise ValueError("k, batch_size and max_text_tokens must be positive")
    if score_mode not in SCORE_MODES:
        raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    report = RerankReport(queries=len(run))
    pairs: list[PairScore] = []
    texts: dict[str, str] = {}  # id -> truncated text (each item truncated once per chunk)
    cut_ids: set[str] = set()
    specs: list[tuple[int, str, list[str]]] = []  # (pair index, prompt, image paths)
    total = sum(min(k, len(r)) for q, r in run.items() if q in queries)
    bar = tqdm(total=total, desc="rerank", unit="pair", disable=not show_progress)

    def text_of(key: str, text: str | None) -> str | None:
        if not text:
            return text
        if key not in texts:
            cut, was_cut = reranker.truncate(
                text.replace(IMAGE_MARKER, "< image >"), max_text_tokens
            )
            texts[key] = cut
            if was_cut and key not in cut_ids:
                cut_ids.add(key)
                report.truncated.append(key)
        return texts[key]

    def flush() -> None:  # prompts are held for one chunk of queries at a time
        _score_specs(reranker, pairs, specs, batch_size, bar, report)
        specs.clear()
        texts.clear()

    for n, (qid, ranked) in enumerate(run.items(), 1):
        q = queries.get(qid)
        if q is None:
            report.problems.append((qid, None, "query not found in the data; its ranking is kept"))
            continue
        task = reranker.prompts.for_task(q.task_id)
        # the table's first prompt; None (no table, or no row): the template's own instruction
        instruction = query_instruction(q, instructions, fixed=0)
        qpath = image_file(q.image_path, image_root)
        qtext = format_item(text_of(f"q:{qid}", q.text), qpath is not None)
        for rank, (did, _) in enumerate(ranked[:k], 1):
            ps = PairScore(qid, did, rank)
            pairs.append(ps)
            c = candidates.get(did)
            if c is None:
                ps.status = "candidate not found in the pools"
                continue
            cpath = image_file(c.image_path, image_root)
            paths = [p for p in (qpath, cpath) if p is not None]
            if paths and not reranker.multimodal:
                ps.status = "needs an image but the model reads text only"
                continue
            ctext = format_item(text_of(f"d:{did}", c.text), cpath is not None)
            specs.append((len(pairs) - 1, task.render(instruction, qtext, ctext), paths))
        if n % CHUNK_QUERIES == 0:
            flush()
    flush()
    bar.close()
    report.pairs = len(pairs)

    # reorder, pair by pair within each query
    out: dict[str, Ranked] = {}
    by_query: dict[str, list[PairScore]] = {}
    for ps in pairs:
        by_query.setdefault(ps.qid, []).append(ps)
        if ps.status != "ok":
            report.problems.append((ps.qid, ps.did, ps.status))
    for qid, ranked in run.items():
        ranked = list(ranked)
        group = by_query.get(qid)
        if not group:
            out[qid] = ranked
            continue
        top = ranked[: len(group)]
        new_top, order = reorder(top, [ps.prob for ps in group], score_mode)
        for slot, i in enumerate(order):
            group[i].new_rank = slot + 1
        if any(ps.prob is not None for ps in group):
            report.reranked_queries += 1
        out[qid] = new_top + ranked[len(group) :]
    report.seconds = time.perf_counter() - t0
    return RerankResult(out, pairs, report)


def _score_specs(
    reranker: Reranker,
    pairs: list[PairScore],
    specs: list[tuple[int, str, list[str]]],
    batch_size: int,
    bar: Any,
    report: RerankReport,
) -> None:
    """Score prompts in batches of similar shape; images are decoded per batch."""
    # batches never mix image and text-only prompts; similar lengths pad less
    specs = sorted(specs, key=lambda s: (len(s[2]), len(s[1])))
    cache = _ImageCache()
    masses: list[float] = []
    start = 0
    while start < len(specs):
        n_img = len(specs[start][2])
        batch = []
        while start < len(specs) and len(batch) < batch_size and len(specs[start][2]) == n_img:
            batch.append(specs[start])
            start += 1
        ready: list[tuple[int, str, list[Any]]] = []
        for idx, prompt, paths in batch:
            try:
                ready.append((idx, prompt, [cache.get(p) for p in paths]))
            except ImageLoadError as e:
                pairs[idx].status = f"image unreadable: {e}"
        for (idx, _, _), (p, m) in zip(ready, _score_split(reranker, ready), strict=True):
            pairs[idx].prob = p
            masses.append(m)
        bar.update(len(batch))
    if masses:
        done = report.scored * (
            0.0 if math.isnan(report.mean_answer_mass) else report.mean_answer_mass
        )
        report.scored += len(masses)
        report.mean_answer_mass = (done + sum(masses)) / report.scored


def _is_oom(e: BaseException) -> bool:
    return "out of memory" in str(e).lower()


def _score_split(
    reranker: Reranker, ready: list[tuple[int, str, list[Any]]]
) -> list[tuple[float, float]]:
    """Score a batch; on running out of (GPU) memory, score its halves instead, down to one."""
    if not ready:
        return []
    try:
        s = reranker.score_batch([r[1] for r in ready], [r[2] for r in ready])
    except (RuntimeError, MemoryError) as e:
        if len(ready) == 1 or not (_is_oom(e) or isinstance(e, MemoryError)):
            raise
        log.warning(
            "out of memory on a batch of %d prompts; splitting it (lower --batch-size)", len(ready)
        )
        _free_cuda_cache()
        half = len(ready) // 2
        return _score_split(reranker, ready[:half]) + _score_split(reranker, ready[half:])
    return list(zip(s.probs, s.mass, strict=True))


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
