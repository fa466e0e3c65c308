"""Helpers of scripts/reproduce_mini.sh (mmembed-mini, issue 8): WordNet text->text of an offline
tree as a BEIR folder, the evaluation of the late score-fusion baseline (mmembed.model.fusion),
a prefill of the library's vision-feature folder, the export of the shipped low-rank delta weights
and the results tables. Uses the library as it is (patches nothing); trains nothing and computes no
metric itself."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WORDNET_TASK = "wordnet_task1"


def beir_from_wordnet(root: Path, split: str, out: Path) -> dict[str, int]:
    """query/<split>/mbeir_wordnet_task1_<split>.jsonl + its pool -> BEIR corpus/queries/qrels.

    The corpus is the task's local pool for test (the same candidates M-BEIR's local setting
    searches) and the positives of the split's queries otherwise (train has no local pool)."""
    from mmembed.data.beir import BeirData, write_beir
    from mmembed.data.errors import ErrorLog
    from mmembed.data.mbeir import read_pool, read_queries

    errors = ErrorLog(strict=True)
    qfile = root / "query" / split / f"mbeir_{WORDNET_TASK}_{split}.jsonl"
    queries = list(read_queries(qfile, errors))
    local = root / "cand_pool" / "local" / f"mbeir_{WORDNET_TASK}_cand_pool.jsonl"
    pool_file = (
        local
        if split == "test"
        else root / "cand_pool/global" / f"mbeir_union_{split}_cand_pool.jsonl"
    )
    wanted = None if split == "test" else {d for q in queries for d in q.pos_dids}
    corpus = [c for c in read_pool(pool_file, errors) if wanted is None or c.did in wanted]
    data = BeirData(
        {c.did: {"title": "", "text": c.text} for c in corpus},
        {q.qid: q.text for q in queries},
        {q.qid: dict.fromkeys(q.pos_dids, 1) for q in queries},
    )
    write_beir(out, data, split)
    return {"queries": len(queries), "corpus": len(corpus)}


def wordnet_beir(out: Path, n: int, split: str = "train", seed: int = 0) -> dict[str, int]:
    """The first ``n`` (by synset key) of the full offline build's WordNet synsets of ``split``
    (8,000 train, 3,000 test) as a BEIR folder (definition -> entry): train is text-to-text data
    for continual fine-tuning, test a bigger text->text test than the --limit tree's 100. Splits
    come from one seeded hash, so no test synset can appear in train."""
    from mmembed.data.beir import BeirData, write_beir
    from mmembed.data.offline.assets import find_assets
    from mmembed.data.offline.builder import _select_synsets
    from mmembed.data.offline.tasks import synset_text

    chosen = _select_synsets(find_assets(), seed, None)[split][:n]
    docs: dict[str, str] = {}  # text -> doc id (synsets with the same text share a document)
    data = BeirData({}, {}, {})
    for syn in chosen:
        text = synset_text(syn)
        did = docs.setdefault(text, f"d{len(docs)}")
        data.queries[syn.key] = syn.definition
        data.qrels[syn.key] = {did: 1}
    data.corpus = {did: {"title": "", "text": text} for text, did in docs.items()}
    write_beir(out, data, split)
    return {"queries": len(chosen), "corpus": len(docs)}


def eval_late_fusion(root: Path, model: str, out: Path, seed: int, cache: Path | None) -> None:
    """`mmembed eval mbeir` (local + global) with mmembed.model.fusion.LateFusion around
    ``model``; ``cache``: the library's vision-feature folder (as `mmembed --feature-cache`)."""
    import torch

    from mmembed.eval.mbeir_run import evaluate_model
    from mmembed.eval.tables import write_report
    from mmembed.model import load_embedder
    from mmembed.model.feature_cache import use_feature_cache
    from mmembed.model.fusion import LateFusion

    use_feature_cache(cache)
    torch.manual_seed(seed)
    enc = LateFusion(load_embedder(model, device="cpu"))
    report = evaluate_model(
        root, enc, out_dir=out, seed=seed, model_name=f"late-fusion:{model}", show_progress=False
    )
    write_report(report, out)


def prefill_features(root: Path, split: str, cache: Path, batch_size: int = 16) -> dict[str, int]:
    """Run every image of ``split`` (its queries and global pool) through the frozen tower once,
    into the library's feature folder; later evaluations then only read them back."""
    import torch

    from mmembed.data.errors import ErrorLog
    from mmembed.data.images import load_image
    from mmembed.data.mbeir import Layout, read_pool, read_queries
    from mmembed.model import load_embedder
    from mmembed.model.feature_cache import VisionFeatureCache, attach_feature_cache

    errors = ErrorLog()
    layout = Layout(root)
    paths = {c.image_path for c in read_pool(layout.global_pool_file(split), errors)}
    for f in sorted((root / "query" / split).glob("*.jsonl")):
        paths |= {q.image_path for q in read_queries(f, errors)}
    todo = sorted(p for p in paths if p)
    emb = load_embedder("mmembed-mini-base", device="cpu", dtype=torch.float32)
    fc = VisionFeatureCache(folder=cache)
    attach_feature_cache(emb, fc)
    with torch.no_grad():
        for i in range(0, len(todo), batch_size):
            imgs = [load_image(root / p) for p in todo[i : i + batch_size]]
            px = emb.backbone.preprocess_images(imgs)["pixel_values"]  # (M, 3, S, S)
            emb.backbone.vision_features(px)
    return {"images": len(todo), "read": fc.disk_hits, "computed": fc.disk_misses}


# --------------------------------------------------------------------------- shipped weights


def export_delta(final_dir: Path, out: Path, base: str, rank: int) -> dict[str, Any]:
    """Trained model folder -> the shipped folder (see mmembed.model.delta.export_delta)."""
    import torch

    from mmembed.model import load_embedder
    from mmembed.model.delta_export import export_delta as export

    trained = load_embedder(str(final_dir), device="cpu", dtype=torch.float32)
    return export(trained, out, base=base, rank=rank)


# --------------------------------------------------------------------------- tables

SYSTEMS = {  # name -> (what it is, config, command that reproduces its numbers)
    "random": (
        "stage random: in-batch negatives",
        "configs/mini/random.yaml",
        "mmembed train configs/mini/random.yaml",
    ),
    "hard": (
        "stage hard: modality-aware mined negatives, retrained from the base",
        "configs/mini/hard.yaml",
        "mmembed mine ... --model runs/mini/random/final --out runs/mini/mined; "
        "mmembed train configs/mini/hard.yaml",
    ),
    "hard48": (
        "stage hard at random's budget (48 steps): same as hard, max_steps=48",
        "configs/mini/hard.yaml + max_steps=48",
        "mmembed train configs/mini/hard.yaml max_steps=48 output_dir=runs/mini/hard48",
    ),
    "continual": (
        "continual: from hard, multimodal + WordNet text mix (= mmembed-mini until v4)",
        "configs/mini/continual.yaml",
        "mmembed train configs/mini/continual.yaml",
    ),
    "score_fusion": (
        "baseline: score fusion (CLIP_SF style) over the same towers, trained as stage random",
        "configs/mini/score_fusion.yaml",
        "mmembed train configs/mini/score_fusion.yaml",
    ),
    "random144": (
        "stage random at 3x the budget (144 steps of 32 pairs, 6 epochs)",
        "configs/mini/random.yaml + max_steps=144 epochs=6",
        "LONGER=1 bash scripts/reproduce_mini.sh (train_random144)",
    ),
    "score_fusion144": (
        "score fusion at 3x random's budget, 144 x 32 (= mmembed-mini since v4)",
        "configs/mini/score_fusion.yaml + max_steps=144 epochs=6",
        "LONGER=1 bash scripts/reproduce_mini.sh (train_score_fusion144)",
    ),
    "align": (
        "stage align alone: LM frozen, projector + pooler on image-caption pairs (48 x 32)",
        "configs/mini/align.yaml",
        "ALIGN=1 bash scripts/reproduce_mini.sh (train_align)",
    ),
    "random_aligned": (
        "stage random started from the aligned model (align -> random)",
        "configs/mini/random_aligned.yaml",
        "ALIGN=1 bash scripts/reproduce_mini.sh (train_random_aligned)",
    ),
    "hard_aligned": (
        "stage hard after align: from the aligned model, negatives mined by random_aligned",
        "configs/mini/hard_aligned.yaml",
        "ALIGN=1 bash scripts/reproduce_mini.sh (train_hard_aligned)",
    ),
    "continual_aligned": (
        "the whole recipe after align: align -> random -> mine -> hard -> continual",
        "configs/mini/continual_aligned.yaml",
        "ALIGN=1 bash scripts/reproduce_mini.sh (train_continual_aligned)",
    ),
    "score_fusion96": (
        "score fusion at align + random's pairs budget (96 steps of 32 pairs)",
        "configs/mini/score_fusion.yaml + max_steps=96 epochs=4",
        "ALIGN=1 bash scripts/reproduce_mini.sh (train_score_fusion96)",
    ),
    "fusion_continual": (
        "baseline: late score fusion of continual's towers (text-only + image-only, summed)",
        "configs/mini/continual.yaml",
        "python3 scripts/mini_tools.py late-fusion --model runs/mini/continual/final",
    ),
    "minilm": (
        "baseline: zero-shot all-MiniLM-L6-v2 (mmembed-mini-base), text tasks only",
        "preset mmembed-mini-base",
        "mmembed eval beir --model mmembed-mini-base",
    ),
}
COMPOSED = (6, 7, 8)


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _systems(runs: Path) -> list[tuple[str, str, str, str, int]]:
    """SYSTEMS in order, each followed by its other-seed runs (``NAME_s<SEED>``, written by
    ``SEEDS="1 2" bash scripts/reproduce_mini.sh``)."""
    found = sorted(
        (m.group(1), int(m.group(2)))
        for d in (runs / "eval").glob("*_s*")
        if (m := re.fullmatch(r"(.+)_s(\d+)", d.name)) and m.group(1) in SYSTEMS
    )
    out = []
    for name, (what, cfg, cmd) in SYSTEMS.items():
        out.append((name, what, cfg, cmd, 0))
        out += [
            (
                f"{name}_s{seed}",
                f"{what}; training seed {seed}",
                f"{cfg} + seed={seed}",
                f'SEEDS="{seed}" bash scripts/reproduce_mini.sh ({name}_s{seed})',
                seed,
            )
            for base, seed in found
            if base == name
        ]
    return out


def collect(runs: Path) -> dict[str, Any]:
    """Every measured number of the recipe's run folder, keyed by system."""
    times = {}
    if (runs / "times.tsv").is_file():
        for line in (runs / "times.tsv").read_text().splitlines():
            k, v = line.split("\t")
            times[k] = int(v)
    out: dict[str, Any] = {"systems": {}, "times_s": times}
    for name, what, cfg, cmd, seed in _systems(runs):
        folder = runs / "eval" / name
        rep = _load(folder / "results.json")
        row: dict[str, Any] = {"what": what, "config": cfg, "command": cmd, "seed": seed}
        if rep:
            tasks: dict[str, dict[str, float]] = {}
            for r in rep["results"]:
                key = f"{r['dataset']} t{r['task_id']}"
                tasks.setdefault(key, {})[r["system"]] = r["recall"]["R@5"]
                tasks[key]["task_id"] = r["task_id"]
                if r["system"] == "global" and r["queries"]:
                    wm = 100.0 * r.get("errors", {}).get("wrong_modality", 0) / r["queries"]
                    tasks[key]["wrong_modality_global"] = wm
                tasks[key]["queries"] = r["queries"]
            row["tasks"] = tasks
            row["mean_local"] = rep["means"].get("local")
            row["mean_global"] = rep["means"].get("global")
            for pool in ("local", "global"):
                comp = [v[pool] for v in tasks.values() if v["task_id"] in COMPOSED and pool in v]
                row[f"composed_{pool}"] = sum(comp) / len(comp) if comp else None
            row["wrong_modality_global"] = (
                rep["error_rates"].get("global", {}).get("wrong_modality")
            )
            row["fingerprint"] = rep["settings"].get("fingerprint")
            row["eval_seconds"] = rep["settings"].get("seconds")
        for tag, sub in (("ndcg10", "beir"), ("ndcg10_noinstr", "beir_noinstr")):
            b = _load(folder / sub / "beir_test.json")
            if b:
                row[tag] = 100.0 * b["nDCG@10"]
                row[tag + "_queries"] = b["queries"]
        train_log = runs / name / "train_log.jsonl"
        if train_log.is_file():
            lines = [json.loads(x) for x in train_log.read_text().splitlines() if x.strip()]
            if lines:
                row["train_steps"] = lines[-1]["step"]
                row["train_last_loss"] = lines[-1]["loss"]
                row["train_seconds"] = lines[-1].get("elapsed")
        if "tasks" in row or "ndcg10" in row:  # systems not (yet) evaluated are left out
            out["systems"][name] = row
    mining = _load(runs / "mined" / "mining.json")
    if mining:
        out["mining"] = mining
    return out


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.1f}"


def markdown_tables(res: dict[str, Any]) -> str:
    sy = res["systems"]
    lines = [
        "| system | mean R@5 local | mean R@5 global | composed (6,7,8) R@5 local | composed global "
        "| wrong-modality top-1 % (global) | WordNet text→text nDCG@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in sy.items():
        nd = _f(r.get("ndcg10"))
        if r.get("ndcg10_noinstr") is not None:
            nd += f" ({_f(r['ndcg10_noinstr'])} without instruction)"
        lines.append(
            f"| {name} | {_f(r.get('mean_local'))} | {_f(r.get('mean_global'))} | "
            f"{_f(r.get('composed_local'))} | {_f(r.get('composed_global'))} | "
            f"{_f(r.get('wrong_modality_global'))} | {nd} |"
        )
    names = [n for n, r in sy.items() if r.get("tasks")]
    if names:
        keys = list(sy[names[0]]["tasks"])
        lines += ["", "R@5 per task, local / global pool:", ""]
        lines.append("| task | queries | " + " | ".join(names) + " |")
        lines.append("|---|---|" + "---|" * len(names))
        for k in keys:
            cells = []
            for n in names:
                t = sy[n]["tasks"].get(k, {})
                cells.append(f"{_f(t.get('local'))} / {_f(t.get('global'))}")
            q = sy[names[0]]["tasks"][k]["queries"]
            lines.append(f"| {k} | {q} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Wrong-modality top-1 errors in the global pool, % of the task's queries:",
            "",
        ]
        lines.append("| task | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for k in keys:
            cells = [_f(sy[n]["tasks"].get(k, {}).get("wrong_modality_global")) for n in names]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| system | config | seed | reproduce | train steps | eval s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in sy.items():
        lines.append(
            f"| {name} | `{r['config']}` | {r['seed']} | `{r['command']}` | "
            f"{r.get('train_steps', '–')} | {r.get('eval_seconds', '–')} |"
        )
    if res["times_s"]:
        lines += ["", "Wall time per step of `scripts/reproduce_mini.sh` (seconds):", ""]
        lines.append("| step | s |")
        lines.append("|---|---|")
        lines += [f"| {k} | {v} |" for k, v in res["times_s"].items()]
    return "\n".join(lines) + "\n"


def write_tables(runs: Path, out: Path) -> list[Path]:
    res = collect(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(markdown_tables(res), encoding="utf-8")
    return [out / "results.json", out / "results.md"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("beir", help="WordNet task 1 of an offline tree as a BEIR folder")
    b.add_argument("--data", type=Path, required=True)
    b.add_argument("--split", default="test")
    b.add_argument("--out", type=Path, required=True)
    w = sub.add_parser("wordnet", help="full-build WordNet synsets of a split as a BEIR folder")
    w.add_argument("--split", default="train")
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("-n", type=int, default=2000)
    f = sub.add_parser("late-fusion", help="evaluate the late score-fusion of a model's towers")
    f.add_argument("--data", type=Path, required=True)
    f.add_argument("--model", required=True)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--feature-cache", type=Path, default=None, help="as mmembed --feature-cache")
    e = sub.add_parser("export", help="trained model folder -> shipped delta folder")
    e.add_argument("--model", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--base", default="mmembed-mini-latent")
    e.add_argument("--rank", type=int, default=16)
    pf = sub.add_parser("prefill", help="run a split's images through the frozen tower once")
    pf.add_argument("--data", type=Path, required=True)
    pf.add_argument("--split", default="test")
    pf.add_argument("--feature-cache", type=Path, required=True, help="as mmembed --feature-cache")
    ap = sub.add_parser("align-pairs", help="image-caption pairs of a build's train split")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    tb = sub.add_parser("tables", help="eval/mini/results.{md,json} from the run folder")
    tb.add_argument("--runs", type=Path, default=Path("runs/mini"))
    tb.add_argument("--out", type=Path, default=Path("eval/mini"))
    a = p.parse_args(argv)
    t0 = time.time()
    if a.cmd == "prefill":
        print(json.dumps(prefill_features(a.data, a.split, a.feature_cache)))
    elif a.cmd == "beir":
        print(json.dumps(beir_from_wordnet(a.data, a.split, a.out)))
    elif a.cmd == "wordnet":
        print(json.dumps(wordnet_beir(a.out, a.n, a.split)))
    elif a.cmd == "align-pairs":
        from mmembed.data.offline.pairs import write_align_pairs

        print(json.dumps(write_align_pairs(a.data, a.out)))
    elif a.cmd == "tables":
        print("\n".join(str(x) for x in write_tables(a.runs, a.out)))
    elif a.cmd == "late-fusion":
        eval_late_fusion(a.data, a.model, a.out, a.seed, a.feature_cache)
    else:
        print(json.dumps(export_delta(a.model, a.out, a.base, a.rank), indent=2))
    print(f"{a.cmd}: {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
