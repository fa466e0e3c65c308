"""`mmembed data ...`: validate an M-BEIR tree, scan a folder into a corpus, and build the offline
benchmark (delegated to ``mmembed.data.offline``). Thin: the work lives in the data modules."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer

app = typer.Typer(
    help="M-BEIR data: validate trees, scan local folders, build the offline benchmark.",
    no_args_is_help=True,
    add_completion=False,
)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _esc(value: object) -> str:
    from rich.markup import escape

    return escape(str(value))


def _rel(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


@app.command()
def validate(
    data_root: Path = typer.Argument(
        ..., help="Root of the M-BEIR tree (holds query/, cand_pool/)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first error."),
    max_errors: int = typer.Option(
        50, "--max-errors", min=0, help="Print at most N errors (counts stay exact)."
    ),
    no_images: bool = typer.Option(
        False, "--no-images", help="Do not check that image files exist."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the report as JSON here."
    ),
) -> None:
    """Check every file of an M-BEIR tree and the references between them; exit 1 on errors."""
    from rich.markup import escape
    from rich.table import Table

    from mmembed.data.validate import validate_tree

    con = _console()
    with con.status("validating") as status:
        report = validate_tree(
            data_root,
            strict=strict,
            check_images=not no_images,
            max_errors=max(max_errors, 1),
            on_file=lambda kind, p: status.update(
                f"validating {kind}: {escape(_rel(str(p), data_root))}"
            ),
        )
    table = Table(title=f"M-BEIR tree {escape(str(data_root))}", title_justify="left")
    for col, justify in (
        ("file", "left"),
        ("kind", "left"),
        ("records", "right"),
        ("errors", "right"),
    ):
        table.add_column(col, justify=justify, overflow="fold")
    for f in report.files:
        style = "red" if f.errors else None
        table.add_row(
            escape(_rel(f.path, data_root)), f.kind, f"{f.records:,}", f"{f.errors:,}", style=style
        )
    con.print(table)
    for w in report.warnings:
        con.print(f"[yellow]warning[/yellow] {escape(str(w))}", markup=True, highlight=False)
    shown = report.errors.errors[:max_errors] if not report.stopped else [report.stopped]
    for e in shown:
        con.print(f"error {e}", markup=False)
    if report.stopped is not None:
        con.print("stopped at the first error (--strict)", style="red")
    elif len(report.errors) > len(shown):
        con.print(f"... and {len(report.errors) - len(shown):,} more errors (raise --max-errors)")
    n_rec = sum(f.records for f in report.files)
    verdict = "[green]OK[/green]" if report.ok else f"[red]{report.n_errors:,} error(s)[/red]"
    con.print(
        f"{len(report.files)} files, {n_rec:,} records, {len(report.warnings)} warning(s): {verdict}"
    )
    if json_out is not None:
        _write_json(json_out, report)
    raise typer.Exit(0 if report.ok else 1)


def _write_json(path: Path, report) -> None:
    from dataclasses import asdict

    def err(e):
        return {
            "path": e.path,
            "line": e.line,
            "field": e.field,
            "problem": e.problem,
            "hint": e.hint,
        }

    errors = [report.stopped] if report.stopped else report.errors.errors
    obj = {
        "root": report.root,
        "ok": report.ok,
        "n_errors": report.n_errors,
        "files": [asdict(f) for f in report.files],
        "errors": [err(e) for e in errors],
        "warnings": [err(w) for w in report.warnings],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")


@app.command()
def scan(
    folder: Path = typer.Argument(..., help="Folder of images, .txt/.md files and .jsonl records."),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Do not decode images to check them."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write the scan (candidates, dids, fingerprints) as JSON."
    ),
) -> None:
    """Turn a folder into candidates and list the files that were skipped and why."""
    from mmembed.data.corpus import scan_corpus

    con = _console()
    with con.status("scanning") as status:
        result = scan_corpus(
            folder,
            verify_images=not no_verify,
            progress=lambda p: status.update(f"scanning {_esc(p)}"),
        )
    kinds = Counter(c.modality.value for c in result.candidates)
    parts = ", ".join(f"{n:,} {m}" for m, n in sorted(kinds.items())) or "none"
    con.print(
        f"{len(result.candidates):,} candidates ({parts}) from {len(result.fingerprints):,} files; "
        f"{result.ignored:,} files of other types ignored"
    )
    for s in result.skipped:
        con.print(f"skipped {s.path}: {s.reason}", markup=False)
    if out is not None:
        result.save(out)
        con.print(f"wrote {out}", markup=False)


@app.command(
    "build-offline",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def build_offline(ctx: typer.Context) -> None:
    """Build the offline M-BEIR-format benchmark from packaged assets (see --help)."""
    try:
        from mmembed.data.offline.cli import build_offline_command
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("mmembed"):
            _console(stderr=True).print(
                "the offline benchmark builder (mmembed.data.offline) is not part of this build"
            )
            raise typer.Exit(2) from None
        raise
    sub = typer.Typer(add_completion=False)
    sub.command()(build_offline_command)
    command = typer.main.get_command(sub)
    command.main(args=list(ctx.args), prog_name="mmembed data build-offline", standalone_mode=True)
