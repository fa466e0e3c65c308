"""`mmembed eval ...`: M-BEIR (a model on local/global pools, or any system's run files side by
side) and BEIR-format text retrieval. Thin: the work is in mmembed.eval.*."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Evaluate retrieval: M-BEIR (local / global pools, run files) and BEIR-format text sets.",
    no_args_is_help=True,
    add_completion=False,
)


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _named_runs(runs: list[str]) -> list[tuple[str, Path]]:
    out = []
    for spec in runs:
        name, sep, path = spec.partition("=")
        p = Path(path if sep else spec)
        if not p.is_file():
            raise typer.BadParameter(f"{p}: run file not found")
        out.append((name if sep else p.stem, p))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise typer.BadParameter(f"two runs are both called {names}; name them with NAME=PATH")
    return out


def _apply_config(ctx: typer.Context, config: Path | None, values: dict) -> dict:
    """Options the user left at their defaults take the YAML config's values (configs/eval/)."""
    if config is None:
        return values
    import yaml

    conf = yaml.safe_load(config.read_text()) or {}
    unknown = sorted(set(conf) - set(values))
    if unknown:
        raise typer.BadParameter(f"{config}: unknown key(s) {unknown}; known: {sorted(values)}")
    for key, value in conf.items():
        source = ctx.get_parameter_source(key)  # typer may vendor click: compare by name
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            values[key] = Path(value) if key in ("data", "out") and value is not None else value
    return values


@app.command()
def mbeir(
    ctx: typer.Context,
    data: Path = typer.Option(
        None, "--data", help="M-BEIR data root (query/, cand_pool/, qrels/)."
    ),
    model: str = typer.Option(
        None, "--model", "-m", help="Model to evaluate (default model when no --run)."
    ),
    run: list[str] = typer.Option(
        None, "--run", help="TREC run to score ([NAME=]PATH); repeat for several."
    ),
    pool: str = typer.Option("both", help="local | global | both."),
    instructions: str = typer.Option(
        "on",
        help="on | off | uniir: task instructions on the queries. on: a preset's own per-task "
        "instructions where its authors published them (M-BEIR's table elsewhere); uniir: "
        "M-BEIR's table for every model.",
    ),
    split: str = typer.Option("test", help="train | val | test."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder (runs, tables, embedding cache)."
    ),
    k: int = typer.Option(50, min=1, help="Candidates retrieved per query."),
    seed: int = typer.Option(0, help="Seed of the per-query instruction draw."),
    factory: str = typer.Option("Flat", help="FAISS index_factory string (Flat = exact)."),
    batch_size: int = typer.Option(32, min=1),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    qrels: str = typer.Option(
        "positive",
        "--qrels",
        help="Which qrels lines are positives: positive (relevance > 0, as UniIR reads them) "
        "| one (relevance exactly 1).",
    ),
    config: Path = typer.Option(
        None, "--config", help="YAML of option values (configs/eval/*.yaml)."
    ),
) -> None:
    """Per-task Recall@k (hit rate, as the M-BEIR reference), means, top-1 error analysis."""
    from mmembed.data.runfile import read_run_ids
    from mmembed.eval.mbeir import Report, discover, score_run
    from mmembed.eval.tables import headline_table, write_report

    names = (
        "data",
        "model",
        "run",
        "pool",
        "instructions",
        "split",
        "out",
        "k",
        "seed",
        "factory",
        "batch_size",
        "qrels",
    )
    given = dict(locals())  # the option values as given
    v = _apply_config(ctx, config, {n: given[n] for n in names})
    data, model, run, pool, instructions = (
        v["data"],
        v["model"],
        v["run"],
        v["pool"],
        v["instructions"],
    )
    split, out, k, seed, factory, batch_size = (
        v["split"],
        v["out"],
        v["k"],
        v["seed"],
        v["factory"],
        v["batch_size"],
    )
    qrels = v["qrels"]
    if data is None:
        raise typer.BadParameter("--data is required (or a --config that sets data)")

    if pool not in ("local", "global", "both"):
        raise typer.BadParameter("--pool must be local, global or both")
    if instructions not in ("on", "off", "uniir"):
        raise typer.BadParameter("--instructions must be on, off or uniir")
    if qrels not in ("positive", "one"):
        raise typer.BadParameter("--qrels must be positive or one")
    console = _console()
    out = out or Path("mmembed_eval") / f"mbeir_{split}"
    runs = _named_runs(run or [])
    tasks = discover(data, split)
    if model is not None or not runs:
        from mmembed.eval.mbeir_run import evaluate_model
        from mmembed.model import load_embedder

        emb = load_embedder(model)
        pools = ("local", "global") if pool == "both" else (pool,)
        report = evaluate_model(
            data,
            emb,
            out_dir=out,
            pools=pools,
            instructions=instructions != "off",
            preset=model if instructions == "on" else None,
            split=split,
            k=k,
            seed=seed,
            factory=factory,
            batch_size=batch_size,
            model_name=model or "default",
            show_progress=progress,
            positives=qrels,
        )
    else:
        report = Report(split, tasks, settings={"data": str(data), "split": split, "qrels": qrels})
    if runs:
        from mmembed.data.mbeir import Layout

        layout = Layout(data)
        pool_files = [layout.global_pool_file(split), *(t.pool_file for t in tasks)]
        max_k = max(max(t.ks) for t in tasks)
        for name, path in runs:
            report.results.extend(
                score_run(
                    read_run_ids(path, max_rank=max_k),
                    tasks,
                    name,
                    pool_files=pool_files,
                    positives=qrels,
                )
            )
        report.settings["runs"] = {n: str(p) for n, p in runs}
    written = write_report(report, out)
    from rich.markdown import Markdown

    console.print(Markdown(headline_table(report)))
    console.print(
        f"tables: {', '.join(str(p) for p in written)}"
        + (f"; runs: {out / 'runs'}" if (out / "runs").is_dir() else "")
    )


@app.command()
def beir(
    data: Path = typer.Option(
        ..., "--data", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."
    ),
    model: str = typer.Option(None, "--model", "-m", help="Model (default: the project default)."),
    split: str = typer.Option("test"),
    instruction: str = typer.Option(None, help="Instruction for the queries (none by default)."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder (run, scores, embedding cache)."
    ),
    k: int = typer.Option(
        100, min=10, help="Candidates retrieved per query (Recall@100 needs 100)."
    ),
    batch_size: int = typer.Option(32, min=1),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    identical_ids: str = typer.Option(
        "ignore",
        "--identical-ids",
        help="'ignore' a hit whose id is the query's (BEIR's default) or 'keep' it (mteb's).",
    ),
    no_relevant: str = typer.Option(
        "count",
        "--no-relevant",
        help="Queries judged all 0: 'count' as 0 in the mean (BEIR, pytrec_eval) or 'drop'.",
    ),
) -> None:
    """nDCG@10, Recall@100 and MRR@10 of a model on a BEIR-format text retrieval set."""
    from mmembed.data.beir import check_beir_folder

    check_beir_folder(data, split)  # before heavy imports
    import json

    from mmembed.eval.beir import evaluate_beir
    from mmembed.model import load_embedder

    if identical_ids not in ("ignore", "keep") or no_relevant not in ("count", "drop"):
        raise typer.BadParameter("--identical-ids: ignore|keep; --no-relevant: count|drop")
    out = out or Path("mmembed_eval") / f"beir_{data.name}_{split}"
    res = evaluate_beir(
        data,
        load_embedder(model),
        split=split,
        out_dir=out,
        instruction=instruction,
        k=k,
        batch_size=batch_size,
        show_progress=progress,
        ignore_identical_ids=identical_ids == "ignore",
        drop_no_relevant=no_relevant == "drop",
    )
    _console().print(
        json.dumps({key: res[key] for key in ("nDCG@10", "Recall@100", "MRR@10", "queries")})
    )
    _console().print(f"scores: {out / f'beir_{split}.json'}; run: {out / f'beir_{split}.trec'}")


@app.command()
def transfer(
    data: Path = typer.Option(
        ..., "--data", help="Offline build made with --hold-out (its hold_out.json)."
    ),
    evals: list[str] = typer.Option(
        ..., "--eval", help="NAME=FOLDER of an `eval mbeir --out` folder; repeat for several."
    ),
    k: int = typer.Option(5, min=1, help="Recall@k (at most the k the runs were written with)."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Folder for transfer.md and transfer.json (default: print)."
    ),
) -> None:
    """Recall@k on each held-out source's test queries beside the in-domain rest."""
    from rich.markdown import Markdown

    from mmembed.data.atomic import atomic_write_json, atomic_write_text
    from mmembed.eval.transfer import markdown, transfer_report

    folders: dict[str, Path] = {}
    for spec in evals:
        name, sep, path = spec.partition("=")
        folder = Path(path if sep else spec)
        if not folder.is_dir():
            raise typer.BadParameter(f"{folder}: not a folder (NAME=FOLDER of `eval mbeir --out`)")
        label = name if sep else folder.name
        if label in folders:
            raise typer.BadParameter(f"two --eval folders are both called {label!r}; name them")
        folders[label] = folder
    try:
        doc = transfer_report(data, folders, k=k)
    except (FileNotFoundError, ValueError) as e:
        _console().print(f"error: {e}", markup=False)
        raise typer.Exit(2) from None
    text = markdown(doc)
    if out is not None:
        atomic_write_json(out / "transfer.json", doc)
        atomic_write_text(out / "transfer.md", text)
    _console().print(Markdown(text))
