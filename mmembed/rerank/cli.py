"""`mmembed rerank RUN.trec --data ROOT --model PATH`: rerank a run's top k with a zero-shot
(M)LLM and write a new run beside it. Thin: the work is in mmembed.rerank.{inputs,pipeline}."""

from __future__ import annotations

from pathlib import Path

import typer


def default_out(run: Path, k: int) -> Path:
    """``runs/x.trec`` -> ``runs/x.rerank10.trec``."""
    return run.with_name(f"{run.stem}.rerank{k}{run.suffix or '.trec'}")


def rerank(
    run: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="First-stage run file (TREC format)."
    ),
    data: Path = typer.Option(
        ..., "--data", help="M-BEIR data root (query/, cand_pool/, instructions/)."
    ),
    model: str = typer.Option(
        ..., "--model", help="LLaVA-Next or causal LM folder, or a .gguf file."
    ),
    k: int = typer.Option(
        10, "--k", min=1, help="Rerank the top k of each query; ranks below k are kept."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="New run file (default: RUN.rerankK.trec beside RUN)."
    ),
    split: str = typer.Option("test", "--split", help="Query split the run was made on."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Prompts per forward pass."),
    max_text_tokens: int = typer.Option(
        256,
        "--max-text-tokens",
        min=1,
        help="Longer query/candidate texts are truncated (and reported).",
    ),
    templates: Path | None = typer.Option(
        None, "--templates", help="Prompt template YAML (default: the packaged M-BEIR templates)."
    ),
    scores: str = typer.Option(
        "first-stage",
        "--scores",
        help="Scores written for the top k: first-stage (reassigned) or rerank (P(True)).",
    ),
    chat: str | None = typer.Option(
        None, "--chat", help="auto | on | off (default: the template file's)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="cpu, cuda, cuda:1 (default: cuda if present)."
    ),
    dtype: str | None = typer.Option(
        None, "--dtype", help="float32 | bfloat16 | float16 (default: bf16 on GPU, fp32 on CPU)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad data record."),
    tag: str = typer.Option("mmembed-rerank", "--tag", help="Run tag column."),
) -> None:
    """Rerank the top k of a run with a zero-shot (M)LLM and write a new run."""
    import json
    import logging

    from rich.console import Console

    from mmembed.data.runfile import read_run, write_run
    from mmembed.rerank.inputs import load_inputs
    from mmembed.rerank.load import load_reranker
    from mmembed.rerank.pipeline import SCORE_MODES, rerank_run
    from mmembed.rerank.prompts import load_prompts

    console = Console(stderr=True)
    if scores not in SCORE_MODES:
        raise typer.BadParameter(f"--scores must be one of {', '.join(SCORE_MODES)}")
    out = out or default_out(run, k)
    prompts = load_prompts(templates)
    first = read_run(run)
    if not first:
        raise typer.BadParameter(f"{run}: the run file has no lines", param_hint="RUN")
    inputs = load_inputs(data, first, k=k, split=split, strict=strict)
    if inputs.errors:
        console.print(f"[yellow]data: {inputs.errors.summary()} (bad records skipped)[/]")
        for e in inputs.errors.errors[:5]:
            console.print(f"  {e}")
    reranker = load_reranker(model, device=device, dtype=dtype, prompts=prompts, chat=chat)
    logging.getLogger(__name__).info(
        "reranking %d queries, top %d, with %s", len(first), k, reranker.name
    )
    result = rerank_run(
        first,
        inputs.queries,
        inputs.candidates,
        reranker,
        k=k,
        image_root=data,
        instructions=inputs.instructions,
        batch_size=batch_size,
        max_text_tokens=max_text_tokens,
        score_mode=scores,
    )
    write_run(out, result.run, tag=tag)
    scores_path = out.with_suffix(".scores.tsv")
    with open(scores_path, "w", encoding="utf-8") as f:
        f.write("qid\tdid\told_rank\tnew_rank\tprob\tstatus\n")
        for p in result.pairs:
            prob = "" if p.prob is None else f"{p.prob:.6f}"
            f.write(f"{p.qid}\t{p.did}\t{p.old_rank}\t{p.new_rank}\t{prob}\t{p.status}\n")
    rep = result.report
    report_path = out.with_suffix(".report.json")
    report_path.write_text(
        json.dumps(
            {
                "run": str(run),
                "out": str(out),
                "model": model,
                "k": k,
                "split": split,
                "templates": prompts.source,
                "chat": reranker.uses_chat,
                "score_mode": scores,
                "queries": rep.queries,
                "reranked_queries": rep.reranked_queries,
                "pairs": rep.pairs,
                "scored": rep.scored,
                "seconds": round(rep.seconds, 3),
                "mean_answer_mass": None
                if rep.mean_answer_mass != rep.mean_answer_mass
                else rep.mean_answer_mass,
                "truncated": rep.truncated,
                "problems": [{"qid": q, "did": d, "reason": r} for q, d, r in rep.problems],
                "data_errors": [str(e) for e in inputs.errors.errors[:100]],
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    console.print(rep.summary())
    console.print(f"wrote {out} (+ {scores_path.name}, {report_path.name})")
