"""The data order: which examples, positives and hard negatives make up each global batch, as a
pure function of (seed, epoch, step), so a resumed run sees exactly the batches an uninterrupted
run would. Sources are mixed by weight (one source per batch), optionally one task per batch,
and no candidate appears twice in a batch. Also turns a batch into encoder items plus the
loss's PairMeta. Knows nothing about models or files."""

from __future__ import annotations

import random
from dataclasses import dataclass

from mmembed.data.records import Item, as_item
from mmembed.train.sources import Example, Source


@dataclass(frozen=True)
class Planned:
    """One example as drawn for one step: which positive, which hard negatives."""

    source: int
    index: int
    pos: str
    negs: tuple[str, ...]


def _rng(*parts: object) -> random.Random:
    return random.Random("|".join(str(p) for p in parts))


def draw(
    ex: Example, source: int, index: int, k: int, seed: int, epoch: int, cycle: int
) -> Planned:
    """This epoch's positive and k hard negatives of ``ex``, seeded by (seed, example, epoch)."""
    rng = _rng(seed, "draw", ex.key, epoch, cycle)
    pos = ex.pos[0] if len(ex.pos) == 1 else rng.choice(ex.pos)
    negs = tuple(rng.sample(ex.neg, min(k, len(ex.neg)))) if k > 0 and ex.neg else ()
    return Planned(source, index, pos, negs)


def pack(drawn: list[Planned], size: int, window: int | None = None) -> list[list[Planned]]:
    """Greedy packing into batches of ``size`` with no candidate twice in a batch: an example whose
    positive is already in the batch waits for a later batch; hard negatives already in the batch
    are dropped from the example (they are still scored, as in-batch negatives). The last partial
    batch and examples still waiting are left out (they come back next cycle)."""
    window = window or 4 * size
    batches: list[list[Planned]] = []
    waiting: list[Planned] = []
    cur: list[Planned] = []
    seen: set[str] = set()

    def place(p: Planned) -> bool:
        if p.pos in seen:
            return False
        negs = tuple(n for n in p.negs if n not in seen and n != p.pos)
        cur.append(Planned(p.source, p.index, p.pos, negs))
        seen.add(p.pos)
        seen.update(negs)
        return True

    for p in drawn:
        if not place(p):
            waiting.append(p)
        if len(cur) == size:
            batches.append(cur)
            cur, seen = [], set()
            still = []
            for i, w in enumerate(waiting):
                if len(cur) < size and i < window and place(w):
                    if len(cur) == size:
                        batches.append(cur)
                        cur, seen = [], set()
                    continue
                still.append(w)
            waiting = still
    return batches


class BatchPlan:
    """Global batches for every (epoch, step). ``batch_size`` is the global batch (per-process batch
    x processes); ``rank_slice`` cuts one process's share."""

    def __init__(
        self,
        sources: list[Source],
        *,
        batch_size: int,
        hard_negatives: int = 0,
        one_task_per_batch: bool = False,
        seed: int = 42,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.sources = sources
        self.batch_size = batch_size
        self.k = hard_negatives
        self.one_task = one_task_per_batch
        self.seed = seed
        total = sum(len(s) for s in sources)
        self.steps_per_epoch = steps_per_epoch or max(1, total // batch_size)
        self._cache: dict[int, list[list[Planned]]] = {}  # the two latest epochs asked

    def _source_cycle(self, si: int, epoch: int, cycle: int) -> list[list[Planned]]:
        src = self.sources[si]
        rng = _rng(self.seed, "order", src.name, epoch, cycle)
        order = list(range(len(src)))
        rng.shuffle(order)
        drawn = [draw(src.examples[i], si, i, self.k, self.seed, epoch, cycle) for i in order]
        if not self.one_task:
            batches = pack(drawn, self.batch_size)
        else:
            groups: dict[str, list[Planned]] = {}
            for p in drawn:
                groups.setdefault(src.examples[p.index].task, []).append(p)
            batches = [b for key in sorted(groups) for b in pack(groups[key], self.batch_size)]
            rng.shuffle(batches)
        if not batches:
            raise ValueError(
                f"source {src.name!r}: cannot fill one batch of {self.batch_size} distinct positives "
                f"from {len(src)} examples{' per task' if self.one_task else ''}; lower data.batch_size"
            )
        return batches

    def epoch(self, epoch: int) -> list[list[Planned]]:
        """All global batches of ``epoch`` (the two latest epochs asked are cached)."""
        if epoch in self._cache:
            return self._cache[epoch]
        weights = [s.weight for s in self.sources]
        pick = _rng(self.seed, "mix", epoch)
        streams: list[list[list[Planned]]] = [[] for _ in self.sources]
        cycles = [0] * len(self.sources)
        plan = []
        for _ in range(self.steps_per_epoch):
            si = pick.choices(range(len(self.sources)), weights)[0] if len(self.sources) > 1 else 0
            if not streams[si]:
                streams[si] = self._source_cycle(si, epoch, cycles[si])[::-1]
                cycles[si] += 1
            plan.append(streams[si].pop())
        self._cache[epoch] = plan
        while len(self._cache) > 2:
            self._cache.pop(next(e for e in self._cache if e != epoch))  # the oldest other epoch
        return plan

    def batch(self, epoch: int, step: int) -> list[Planned]:
        return self.epoch(epoch)[step]

    @staticmethod
    def rank_slice(batch: list[Planned], rank: int, world_size: int) -> list[Planned]:
        per = len(batch) // world_size
        return batch[rank * per : (rank + 1) * per]


@dataclass
class TrainBatch:
    """One process's batch as encoder inputs plus what the loss needs (ids as strings here;
    ``to_meta`` makes tensors)."""

    query_items: list[Item]
    instructions: list[str | None]
    cand_items: list[Item]
    cand_dids: list[str]
    labels: list[int]
    positives: list[list[str]]  # every positive of each query (for masking)
    own: list[list[int]]  # candidate indices each query brought
    in_batch: list[bool]
    keys: list[str]

    def to_meta(self):  # -> PairMeta
        import torch

        from mmembed.train.distributed import id64
        from mmembed.train.loss import PairMeta

        b, n = len(self.labels), len(self.cand_dids)
        p = max(1, max(len(x) for x in self.positives))
        pos_ids = torch.zeros((b, p), dtype=torch.long)  # (B, P)
        pos_valid = torch.zeros((b, p), dtype=torch.bool)  # (B, P)
        own = torch.zeros((b, n), dtype=torch.bool)  # (B, N)
        for i, dids in enumerate(self.positives):
            for j, d in enumerate(dids):
                pos_ids[i, j] = id64(d)
                pos_valid[i, j] = True
            own[i, self.own[i]] = True
        return PairMeta(
            torch.tensor(self.labels, dtype=torch.long),
            torch.tensor([id64(d) for d in self.cand_dids], dtype=torch.long),
            pos_ids,
            pos_valid,
            own,
            torch.tensor(self.in_batch, dtype=torch.bool),
        )


def image_paths(p: Planned, sources: list[Source]) -> set[str]:
    """The image files one planned example needs (query and its candidates), resolved the way
    ``as_item`` resolves them, so they compare equal to an ImageLoadError's path."""
    src = sources[p.source]
    ex = src.examples[p.index]
    records = [ex.query, *(src.candidates[d] for d in (p.pos, *p.negs))]
    return {str(as_item(r, src.image_root).image) for r in records if r.image_path}


def build_batch(
    planned: list[Planned],
    sources: list[Source],
    *,
    seed: int,
    epoch: int,
    use_instructions: bool = True,
) -> TrainBatch:
    """Encoder items for queries and the batch's distinct candidates, with the index map."""
    cand_index: dict[str, int] = {}
    cand_items: list[Item] = []
    out = TrainBatch([], [], cand_items, [], [], [], [], [], [])

    def add(did: str, src: Source) -> int:
        if did not in cand_index:
            cand_index[did] = len(out.cand_dids)
            out.cand_dids.append(did)
            cand_items.append(as_item(src.candidates[did], src.image_root))
        return cand_index[did]

    for p in planned:
        src = sources[p.source]
        ex = src.examples[p.index]
        out.keys.append(ex.key)
        out.query_items.append(as_item(ex.query, src.image_root))
        out.instructions.append(
            src.choose_instruction(ex, seed=seed, epoch=epoch) if use_instructions else None
        )
        label = add(p.pos, src)
        out.labels.append(label)
        out.own.append([label, *(add(n, src) for n in p.negs)])
        out.positives.append(list(dict.fromkeys([*ex.pos, *ex.query.pos_dids])))
        out.in_batch.append(src.in_batch_negatives)
    return out
