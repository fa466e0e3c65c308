"""Builds the offline benchmark: selects and splits items, renders images, assigns M-BEIR ids and
writes the tree (queries, local and global pools, qrels, instructions), a manifest, a dataset card
and a contact sheet. Output bytes depend only on the seed, the limit, the held-out sources and the
asset versions."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from mmembed.data.atomic import atomic_write_json
from mmembed.data.instructions import write_instructions
from mmembed.data.mbeir import Layout, write_pool, write_qrels, write_queries
from mmembed.data.offline import card, holdout
from mmembed.data.offline.assets import (
    asset_versions,
    find_assets,
    gemojione_categories,
    gemojione_index,
    read_wordnet,
)
from mmembed.data.offline.emojis import PEOPLE, Emoji, edits, load_universe, rank_of, split_of
from mmembed.data.offline.instructions import instruction_table
from mmembed.data.offline.render import RENDER_SIZE, render_all
from mmembed.data.offline.tasks import (
    DATASETS,
    SPLITS,
    Content,
    EmojiTasks,
    TaskSet,
    gem_path,
    leaks,
    noto_path,
    wordnet_task,
)
from mmembed.data.records import TASKS, Candidate, Modality, Query

log = logging.getLogger(__name__)

FRACTIONS = (0.6, 0.1, 0.3)  # train / val / test share of split units (emoji groups, synsets)
WORDNET_SIZES = {"train": 8000, "val": 1000, "test": 3000}  # synsets kept per split
BUILD_NAME = "mmembed-offline"
FORMAT_VERSION = 1


def _select_groups(universe: dict[str, Emoji], seed: int, limit: int | None) -> dict[str, str]:
    """emoji key -> split for the emoji that go into the benchmark (all, or ``limit`` groups
    per split, chosen so that every kind of composed edit is represented)."""
    group_split = {
        g: split_of(g, seed, FRACTIONS) for g in sorted({e.group for e in universe.values()})
    }
    # The plain person emoji (and their tones) are the query images of every role and hair
    # edit: pinned to train, so no val or test image is ever seen in a training query.
    group_split.update({p: "train" for p in PEOPLE if p in group_split})
    if limit is None:
        keep = set(group_split)
    else:
        kinds: dict[str, set[str]] = defaultdict(set)  # edit kind -> groups holding a target
        for ed in edits(universe):
            kinds[ed.kind].add(universe[ed.target].group)
        keep = set()
        for s in SPLITS:
            ranked = sorted(
                (g for g, sp in group_split.items() if sp == s), key=lambda g: rank_of(g, seed)
            )
            chosen: list[str] = []
            for kind in sorted(kinds):  # one group per edit kind first
                chosen += [g for g in ranked if g in kinds[kind] and g not in chosen][:1]
            chosen += [g for g in ranked if g not in chosen][: max(0, limit - len(chosen))]
            keep.update(chosen)
    return {k: group_split[e.group] for k, e in sorted(universe.items()) if e.group in keep}


def _select_synsets(assets, seed: int, limit: int | None) -> dict[str, list]:
    """Per split, the first N synsets in seeded order whose definition has >= 3 words and does
    not contain one of the synset's own lemmas."""
    by_split: dict[str, list] = defaultdict(list)
    for syn in read_wordnet(assets):
        by_split[split_of(syn.key, seed, FRACTIONS)].append(syn)
    out = {}
    for s in SPLITS:
        n = WORDNET_SIZES[s] if limit is None else limit
        kept = []
        for syn in sorted(by_split[s], key=lambda x: rank_of(x.key, seed)):
            if len(kept) == n:
                break
            if len(syn.definition.split()) >= 3 and not leaks(syn):
                kept.append(syn)
        out[s] = sorted(kept, key=lambda x: x.key)
    return out


def _render_jobs(out: Path, universe, split, gem_index) -> tuple[list, set[str], list[str]]:
    """Render jobs for every needed image: Noto for the chosen emoji and the sources of their
    edits, gemojione for the chosen emoji it draws."""
    need_noto = set(split) | {ed.source for ed in edits(universe) if ed.target in split}
    need_gem = sorted(k for k in split if k in gem_index)
    jobs = [("noto", universe[k].seq, str(out / noto_path(universe[k]))) for k in sorted(need_noto)]
    jobs += [("png", str(gem_index[k]), str(out / gem_path(universe[k]))) for k in need_gem]
    return jobs, need_noto, need_gem


def _check_renders(out: Path, universe, need_noto, need_gem, results):
    """Keep emoji whose drawing worked and is not pixel-identical to an earlier one's."""
    dropped: dict[str, list[str]] = {"undrawable": [], "duplicate_pixels": []}  # sorted later
    keep_noto: set[str] = set()
    keep_gem: set[str] = set()
    for style, keys, keep, path_of in (("noto", sorted(need_noto), keep_noto, noto_path),
                                       ("gem", need_gem, keep_gem, gem_path)):  # fmt: skip
        seen: dict[str, str] = {}
        for k in sorted(keys, key=lambda k: (universe[k].version, len(k), k)):
            digest, _err = results[str(out / path_of(universe[k]))]
            if digest is None:
                dropped["undrawable"].append(f"{style}:{universe[k].code}")
            elif digest in seen:
                dropped["duplicate_pixels"].append(
                    f"{style}:{universe[k].code}={universe[seen[digest]].code}"
                )
            else:
                seen[digest] = k
                keep.add(k)
    return keep_noto, keep_gem, dropped


def _assign_ids(tasksets: list[TaskSet]):
    """did per (split, content) and qid per query, numbered within each dataset in sorted order."""
    contents: dict[str, set[tuple[int, str, str, Content]]] = defaultdict(set)
    for ts in tasksets:
        for s in SPLITS:
            for c in ts.pools[s]:
                contents[c.dataset].add((SPLITS.index(s), c.kind, c.key, c))
            pool = set(ts.pools[s])
            for q in ts.queries[s]:
                missing = [p for p in q.positives if p not in pool]
                assert not missing, f"{q.dataset} task {q.task} {s} {q.key}: positive not in pool"
    dids: dict[tuple[str, Content], str] = {}
    for name, items in contents.items():
        for n, (si, _, _, c) in enumerate(sorted(items, key=lambda t: t[:3])):
            dids[(SPLITS[si], c)] = f"{DATASETS[name]}:{n}"
    qids: dict[tuple[str, int, str, str], str] = {}
    counters: dict[str, int] = defaultdict(int)
    for ts in sorted(tasksets, key=lambda t: (DATASETS[t.dataset], t.task)):
        for s in SPLITS:
            for q in ts.queries[s]:
                qids[(q.dataset, q.task, s, q.key)] = f"{DATASETS[q.dataset]}:{counters[q.dataset]}"
                counters[q.dataset] += 1
    return dids, qids


def _did_order(did: str) -> tuple[int, int]:
    d, n = did.split(":")
    return int(d), int(n)


def _write_tree(out: Path, tasksets: list[TaskSet], ids=None) -> dict:
    """Write every split of ``tasksets``; ``ids`` = (dids, qids) assigned on a larger set of
    tasks (the build before held-out records were removed), else assigned here."""
    layout = Layout(out)
    dids, qids = ids or _assign_ids(tasksets)
    stats, global_pools = [], {s: {} for s in SPLITS}
    for ts in sorted(tasksets, key=lambda t: (DATASETS[t.dataset], t.task)):
        qmod, cmod = TASKS[ts.task]
        row = {"dataset": ts.dataset, "dataset_id": DATASETS[ts.dataset], "task": ts.task,
               "query_modality": qmod, "cand_modality": cmod, "splits": {}}  # fmt: skip
        for s in SPLITS:
            queries = [Query(qids[(q.dataset, q.task, s, q.key)], q.text, q.image, Modality(qmod),
                             ts.task, sorted((dids[(s, p)] for p in q.positives), key=_did_order),
                             [], q.src) for q in ts.queries[s]]  # fmt: skip
            pool = sorted((Candidate(dids[(s, c)], c.text, c.image, Modality.of(c.text, c.image), c.src)
                           for c in ts.pools[s]), key=lambda c: _did_order(c.did))  # fmt: skip
            assert all(c.modality.value == cmod for c in pool), (ts.dataset, ts.task, s)
            for c in pool:
                global_pools[s][c.did] = c
            if queries:
                write_queries(layout.query_file(ts.dataset, ts.task, s), queries)
                write_qrels(layout.qrels_file(ts.dataset, ts.task, s), queries)
            if s == "test" and pool:
                write_pool(layout.pool_file(ts.dataset, ts.task), pool)
            row["splits"][s] = {"queries": len(queries), "pool": len(pool),
                                "positives": sum(len(q.pos_dids) for q in queries),
                                "multi_positive_queries": sum(len(q.pos_dids) > 1 for q in queries)}  # fmt: skip
        stats.append(row)
    for s in SPLITS:
        write_pool(
            layout.global_pool_file(s),
            sorted(global_pools[s].values(), key=lambda c: _did_order(c.did)),
        )
    write_instructions(layout.instructions_file, instruction_table())
    return {"tasks": stats, "global_pool": {s: len(global_pools[s]) for s in SPLITS}}


def _settings(seed: int, limit: int | None, hold_out: list[str]) -> dict:
    extra = {"hold_out": hold_out} if hold_out else {}  # absent: builds before it stay valid
    return {
        "seed": seed,
        "limit": limit,
        "render_size": RENDER_SIZE,
        "split_fractions": dict(zip(SPLITS, FRACTIONS, strict=True)),
        "wordnet_synsets_per_split": WORDNET_SIZES if limit is None else limit,
        **extra,
    }


def _read_manifest(out: Path) -> dict | None:
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("name") == BUILD_NAME else None


def up_to_date(out: str | Path, settings: dict, versions: dict) -> dict | None:
    """The manifest of the build at ``out`` if it has this format, these settings and asset
    versions, and its files still match the digest; else None."""
    manifest = _read_manifest(Path(out))
    if manifest is None or manifest.get("format_version") != FORMAT_VERSION:
        return None
    if json.loads(json.dumps(settings)) != manifest.get("settings") or versions != manifest.get(
        "assets"
    ):
        return None
    return manifest if card.tree_digest(Path(out))[0] == manifest.get("digest") else None


def _prepare_target(out: Path, force: bool) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if _read_manifest(out) is None:
            raise FileExistsError(
                f"{out} is not empty and is not an mmembed offline build (no manifest.json); "
                "refusing to overwrite it: choose another --out or remove it yourself"
            )
        if not force:
            raise FileExistsError(
                f"{out} holds an offline build with other settings or asset versions, or files "
                "changed since it was built; pass --force to rebuild it"
            )
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def build(out_dir: str | Path, *, seed: int = 0, show_progress: bool = True,
          limit: int | None = None, workers: int = 2, force: bool = False,
          hold_out: Sequence[str] = ()) -> dict:  # fmt: skip
    """Build the offline benchmark into ``out_dir`` and return its manifest.

    ``limit`` keeps at most that many emoji groups and WordNet synsets per split (for tests);
    ``hold_out`` specs ('style:gemojione', 'lang:de', 'category:nature') name sources removed from
    the train and val splits, the test split unchanged (mmembed.data.offline.holdout);
    ``workers`` > 1 renders in that many processes (same bytes). An identical up-to-date build at
    ``out_dir`` is kept (the manifest comes back with ``reused: True``) unless ``force``. Raises
    AssetMissingError with one line naming what to install; HoldOutError for an unknown spec;
    FileExistsError when ``out_dir`` holds something else (another build needs ``force``; a
    foreign folder is never replaced)."""
    out = Path(out_dir)
    assets = find_assets()
    gem_categories = gemojione_categories(assets)
    specs = sorted({holdout.parse_hold_out(h, set(gem_categories.values())) for h in hold_out})
    settings, versions = _settings(seed, limit, [str(h) for h in specs]), asset_versions()
    if not force and (current := up_to_date(out, settings, versions)) is not None:
        log.debug(
            "%s is already this build (digest %s); nothing to do", out, current["digest"][:16]
        )
        return {**current, "reused": True}
    tmp = _prepare_target(out, force)
    try:
        universe = load_universe(assets)
        split = _select_groups(universe, seed, limit)
        gem_index = gemojione_index(assets)
        jobs, need_noto, need_gem = _render_jobs(tmp, universe, split, gem_index)
        with card.progress(show_progress, "rendering emoji", len(jobs)) as advance:
            results = render_all(jobs, assets.font, workers=workers, progress=advance)
        keep_noto, keep_gem, dropped = _check_renders(tmp, universe, need_noto, need_gem, results)
        universe = {k: e for k, e in universe.items() if k in keep_noto}
        split = {k: s for k, s in split.items() if k in keep_noto}
        tasks = EmojiTasks(universe, split, edits(universe), keep_gem, seed).all()
        tasks.append(wordnet_task(_select_synsets(assets, seed, limit)))
        categories = holdout.emoji_categories(universe, gem_categories)
        tasks, ids, held_summary = _hold_out(tmp, tasks, specs, categories)
        summary = _write_tree(tmp, tasks, ids)
        _remove_unreferenced_images(tmp, tasks)
        manifest = {
            "name": BUILD_NAME, "format_version": FORMAT_VERSION,
            "settings": settings, "datasets": DATASETS, "assets": versions,
            "dropped": {k: sorted(v) for k, v in dropped.items()},
            **summary,
            **held_summary,
        }  # fmt: skip
        card.write_contact_sheet(tmp, tasks)
        card.write_card(tmp, manifest)
        manifest = card.write_manifest(tmp, manifest)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _hold_out(root: Path, tasks: list[TaskSet], specs: list, categories: dict):
    """(tasks without held-out train/val records, ids assigned before removal or None, manifest
    entries); writes hold_out.json with the transfer test qids when there are specs."""
    if not specs:
        return tasks, None, {}
    judge = holdout.Judge(specs, categories)
    dids, qids = _assign_ids(tasks)
    kept, removed = holdout.apply(tasks, judge)
    transfer = holdout.transfer_queries(
        tasks, judge, lambda q: qids[(q.dataset, q.task, "test", q.key)]
    )
    doc = {"specs": [str(s) for s in specs], "removed": removed, "test_queries": transfer}
    atomic_write_json(root / holdout.FILE, doc)
    counts = {k: len(v) for k, v in transfer.items()}
    return kept, (dids, qids), {"hold_out": {**doc, "test_queries": counts}}


def _remove_unreferenced_images(root: Path, tasks: list[TaskSet]) -> None:
    used = set()
    for ts in tasks:
        for s in SPLITS:
            used.update(c.image for c in ts.pools[s] if c.image)
            used.update(q.image for q in ts.queries[s] if q.image)
    for path in sorted((root / "images").rglob("*.png")):
        if path.relative_to(root).as_posix() not in used:
            path.unlink()
