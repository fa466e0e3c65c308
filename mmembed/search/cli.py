"""`mmembed index | search | serve | demo`: thin typer commands over mmembed.search.
Heavy imports (torch, faiss, fastapi) happen inside the commands."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import typer

from mmembed.search import DEFAULT_K


def default_index_path() -> Path:
    """$MMEMBED_INDEX, else $XDG_CACHE_HOME/mmembed/index, else ~/.cache/mmembed/index."""
    if os.environ.get("MMEMBED_INDEX"):
        return Path(os.environ["MMEMBED_INDEX"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mmembed" / "index"


_INDEX_HELP = "Index folder (default: $MMEMBED_INDEX or ~/.cache/mmembed/index)."
_MODEL_HELP = "Model name or saved-model folder (default: the one the index was built with)."


def _console(stderr: bool = False):
    from rich.console import Console

    _quiet()
    return Console(stderr=stderr, highlight=False)


def _quiet() -> None:
    import logging

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines are noise here
    # The embedder tokenizes untruncated and cuts to its own max_length itself, so the
    # tokenizer's "sequence length is longer than ... (N > 512)" warning is false here.
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)


def _esc(value: object) -> str:
    """A user string (path, text, reason) made safe to print through rich: no markup."""
    from rich.markup import escape

    return escape(str(value))


def _fail(message: str, code: int = 2) -> None:
    _console(stderr=True).print(f"[red]error:[/red] {_esc(message)}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def index(
    dirs: list[Path] = typer.Argument(
        None,
        help="Folders to index; added to those already in the index. None: refresh the indexed folders.",
    ),
    index_path: Path = typer.Option(None, "--index", help=_INDEX_HELP),
    model: str = typer.Option(
        None,
        "--model",
        help="Model name or saved-model folder (default: the index's model, else the project default).",
    ),
    forget: list[Path] = typer.Option([], "--forget", help="Drop an indexed folder (repeatable)."),
    batch_size: int = typer.Option(
        32, "--batch-size", min=1, help="Items encoded (and committed to disk) per batch."
    ),
    device: str = typer.Option(
        None, "--device", help="cpu, cuda, cuda:1 ... (default: automatic)."
    ),
    show_skipped: int = typer.Option(
        15, "--show-skipped", min=0, help="How many skipped files to list."
    ),
    follow_links: bool = typer.Option(
        None,
        "--follow-links/--no-follow-links",
        help="Index what symlinks leaving the folders point to (default: as before; off: "
        "such links are listed as skipped). Links into /proc, /sys, /dev never are.",
    ),
) -> None:
    """Index folders of images, text files (.txt, .md) and .jsonl records for search.

    Incremental: only new or changed files are encoded, removed files leave the index. Resumable:
    encoded batches are committed as they finish, so a rerun after a crash picks up where it
    stopped."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from mmembed.search.library import Library, LibraryError, update_library

    path = index_path or default_index_path()
    for d in dirs or []:  # checked before anything is loaded or written (no empty index left)
        if d.is_file():
            _fail(f"{d}: a file, not a folder; give the folder that holds it (every file in it "
                  "is indexed)")  # fmt: skip
        if not d.is_dir():
            _fail(f"{d}: not a folder (no such path)")
    if not dirs and not Library.exists(path):
        _fail(f"nothing to index: no index at {path} yet; give at least one folder")
    console = _console()
    old_spec = None
    if Library.exists(path):
        try:
            old_spec = Library.open(path).model_spec
        except LibraryError as e:
            _fail(str(e))
    spec = _model_spec(model) if model is not None else old_spec
    if spec is None:  # pin the current default, so a later change of default cannot strand us
        from mmembed.model import default_model_name

        spec = default_model_name()
    if Library.exists(path) and spec != old_spec:
        console.print(f"model changed ({_esc(old_spec)} -> {_esc(spec)}): every item is re-encoded")
    embedder = _load_model(console, spec, device)
    progress = Progress(
        TextColumn("encoding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = None

    def on_progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            status.stop()
            if total:
                progress.start()
            task = progress.add_task("encode", total=total)
        progress.update(task, completed=done)

    where = ", ".join(map(str, dirs or [])) or "the indexed folders"
    status = console.status(f"scanning {_esc(where)}…")
    status.start()
    scanned = 0

    def on_scan(_path: Path) -> None:
        nonlocal scanned
        scanned += 1
        if scanned % 100 == 0:
            status.update(f"scanning {_esc(where)}… {scanned} files")

    try:
        report = update_library(
            path,
            dirs or [],
            embedder,
            model_spec=spec,
            forget=forget,
            batch_size=batch_size,
            on_progress=on_progress,
            on_scan=on_scan,
            follow_links=follow_links,
        )
    except (LibraryError, NotADirectoryError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        status.stop()
        progress.stop()
        _fail("interrupted: the batches encoded so far are kept; run the same command again "
              "to resume", code=130)  # fmt: skip
    finally:
        status.stop()
        progress.stop()
    _print_report(console, path, report, show_skipped)
    from mmembed.search.advice import library_notice  # the offline default meets photos

    if report.encoded and (note := library_notice(Library.open(path), where="index")):
        console.print(note, markup=False, soft_wrap=True)


def _model_spec(model: str) -> str:
    """A model argument as stored in the index: folders and files as absolute paths."""
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else model


def _load_model(console, spec: str | None, device: str | None):
    from mmembed.model import load_embedder

    with console.status(f"loading model {_esc(spec or 'default')}…"):
        try:
            return load_embedder(spec, device=device)
        except (ValueError, KeyError, FileNotFoundError) as e:
            _fail(f"cannot load model {spec!r}: {e}")


def _print_report(console, path: Path, report, show_skipped: int) -> None:
    from rich.table import Table

    t = Table(title=f"index {_esc(path)}", show_header=False, box=None, padding=(0, 2))
    t.add_row(
        "files",
        f"{report.files_new} new, {report.files_changed} changed, "
        f"{report.files_removed} removed, {report.files_unchanged} unchanged",
    )
    t.add_row(
        "items", f"{report.items} searchable ({report.encoded} encoded now, {report.reused} reused)"
    )
    t.add_row("time", f"{report.seconds:.1f} s")
    problems = report.skipped + report.failed
    t.add_row("skipped", str(len(problems)))
    console.print(t)
    if not problems:
        return
    reasons = Counter(_reason_kind(why) for _, why in problems)
    by_reason = "; ".join(f"{n} × {_esc(r)}" for r, n in reasons.most_common())
    console.print("skipped by reason: " + by_reason)
    for where, why in problems[:show_skipped]:
        line = f"  [yellow]skipped[/yellow] {_esc(where)}: {_esc(why)}"
        console.print(line, markup=True, soft_wrap=True)
    if len(problems) > show_skipped:
        console.print(
            f"  … and {len(problems) - show_skipped} more (--show-skipped N to list them)"
        )


def _reason_kind(why: str) -> str:
    """A short group label for a skip reason (the text before any detail in brackets), cut at a
    word boundary, never mid-word."""
    kind = why.split(" (")[0].split(":")[0].strip()
    if len(kind) <= 60:
        return kind
    return kind[:60].rsplit(" ", 1)[0].rstrip(",;") + " …"


def search(
    text: str = typer.Argument(None, help="Query text (optional with --image)."),
    image: Path = typer.Option(
        None, "--image", help="Query image (alone, or composed with the text)."
    ),
    k: int = typer.Option(DEFAULT_K, "--k", "-k", min=1, max=1000, help="Number of results."),
    index_path: Path = typer.Option(None, "--index", help=_INDEX_HELP),
    model: str = typer.Option(None, "--model", help=_MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    html: Path = typer.Option(
        None, "--html", help="Also write an HTML page with a thumbnail grid here."
    ),
    instruction: str = typer.Option(
        None, "--instruction", help="Task instruction for the query encoder."
    ),
    device: str = typer.Option(None, "--device"),
) -> None:
    """Search an index by text, by image, or by image + text."""
    _quiet()
    from mmembed.data.images import ImageLoadError, load_image
    from mmembed.search.library import LibraryError
    from mmembed.search.query import QueryError, Searcher

    if not text and image is None:
        _fail("give query text, --image FILE, or both")
    pil = None
    if image is not None:
        try:
            pil = load_image(image)
        except ImageLoadError as e:
            _fail(f"query image {e}")
    path = index_path or default_index_path()
    try:
        searcher = Searcher.open(path, model=model, device=device, instruction=instruction)
        hits = searcher.search(text, pil, k=k)
    except (LibraryError, QueryError) as e:
        _fail(str(e))
    if html is not None:
        from mmembed.search.html import render_results_page

        out = render_results_page(hits, out=html, text=text, image=image)
        if not as_json:
            _console(stderr=True).print(f"wrote {_esc(out)}")
    if as_json:
        query = {"text": text, "image": str(image) if image else None, "k": k}
        typer.echo(
            json.dumps(
                {"query": query, "results": [h.to_json() for h in hits]},
                ensure_ascii=False,
                indent=1,
            )
        )
        return
    _print_hits(_console(), hits, searcher.library.roots, text, image)


def _print_hits(console, hits, roots, text, image) -> None:
    from rich.table import Table

    label = " + ".join(
        x for x in [repr(text) if text else None, str(image) if image else None] if x
    )
    t = Table(title=f"{len(hits)} results for {_esc(label)}", title_justify="left")
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("score", justify="right", no_wrap=True)
    t.add_column("kind", no_wrap=True)
    t.add_column("file", overflow="fold")
    preview = max(12, min(80, console.width - 60))  # what is left beside the other columns
    t.add_column("preview", overflow="ellipsis", no_wrap=True, max_width=preview)
    for h in hits:
        e = h.entry
        shown = e.image or e.source
        for r in roots:
            if shown.startswith(str(r) + os.sep):
                shown = os.path.relpath(shown, r)
                break
        if e.line is not None:
            shown = f"{os.path.basename(e.source)}:{e.line}"
        t.add_row(
            str(h.rank), f"{h.score:.3f}", e.modality, _esc(shown), _esc(e.snippet(preview) or "")
        )
    console.print(t)


def serve(
    index_path: Path = typer.Option(None, "--index", help=_INDEX_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    model: str = typer.Option(None, "--model", help=_MODEL_HELP),
    max_upload_mb: float = typer.Option(
        10.0, "--max-upload-mb", min=0.01, help="Largest accepted upload."
    ),
    device: str = typer.Option(None, "--device"),
) -> None:
    """Serve a search page and a JSON API over an index (http://HOST:PORT/)."""
    _quiet()
    from mmembed.search.library import LibraryError
    from mmembed.search.query import Searcher
    from mmembed.search.server import is_loopback
    from mmembed.search.server import serve as run_server

    path = index_path or default_index_path()
    try:
        searcher = Searcher.open(path, model=model, device=device)
    except LibraryError as e:
        _fail(str(e))
    console = _console(stderr=True)
    if not is_loopback(host):
        console.print(
            f"[yellow]warning:[/yellow] binding {_esc(host)}: anyone who can reach this "
            "address can search the index and read the indexed files (no login)",
            markup=True,
        )
    from mmembed.search.advice import library_notice  # the offline default meets photos

    if note := library_notice(searcher.library, where="serve"):
        console.print(note, markup=False, soft_wrap=True)
    console.print(f"{len(searcher.library)} items; open http://{host}:{port}/")
    run_server(searcher, host=host, port=port, max_upload_bytes=int(max_upload_mb * 1024 * 1024))


def demo(
    data: Path = typer.Option(
        None, "--data", help="Offline benchmark folder (default: a cache folder; built if missing)."
    ),
    model: str = typer.Option(None, "--model", help="Model (default: the project default)."),
    pool_size: int = typer.Option(
        1000, "--pool-size", min=0, help="Candidates to encode from the test pool (0: all of it)."
    ),
    device: str = typer.Option(None, "--device"),
) -> None:
    """Offline demo: example searches over the offline benchmark with the default model.

    Builds the benchmark into a cache folder if needed, encodes part of its test pool, and runs
    one text, image and composed query of each kind, marking the known positives."""
    from mmembed.search.demo import run_demo

    run_demo(data=data, model=model, pool_size=pool_size, device=device, console=_console())
