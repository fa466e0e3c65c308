"""The `mmembed` command line. Thin: each command group lives beside the code it drives
(``mmembed/<area>/cli.py``) and is registered here by name; heavy imports happen inside commands."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

app = typer.Typer(
    name="mmembed",
    help="Universal multimodal retrieval: embed, index, search, rerank and evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Command groups (`mmembed data validate`, `mmembed eval mbeir`, ...): name -> module with `app`.
GROUPS: dict[str, str] = {
    "data": "mmembed.data.cli",
    "eval": "mmembed.eval.cli",
}

# Single commands (`mmembed encode`, `mmembed search`, ...): name -> "module:function". Each sits in
# the package that does its job, which is the package of the same name where there is one. The one
# word that reads otherwise: `mmembed index` builds a folder *search library* (scan, encode, a
# FAISS index inside, kept up to date), the search package's job, so it lives in search/cli.py;
# mmembed.index is the layer below (the Index class, encoding to shards: `mmembed encode`) and
# does not import mmembed.search. README.md's layout section lists each package's commands
# (tests/test_layout.py checks it).
COMMANDS: dict[str, str] = {
    "encode": "mmembed.index.cli:encode",
    "index": "mmembed.search.cli:index",
    "search": "mmembed.search.cli:search",
    "serve": "mmembed.search.cli:serve",
    "demo": "mmembed.search.cli:demo",
    "train": "mmembed.train.cli:train",
    "mine": "mmembed.train.cli:mine",
    "rerank": "mmembed.rerank.cli:rerank",
}


# Commands that take free-form extra arguments (`mmembed train cfg.yaml --data.batch_size=8`).
_EXTRA_ARGS = {"train"}


# Errors a user can cause (a missing file, a bad record, a wrong model name, an index built with
# another model, no GPU): one line on stderr, no traceback (`mmembed -v ...` shows it).
# OSError covers missing files and folders, ValueError the library's own input errors (DataError,
# IndexMismatchError, ImageLoadError, ...); LibraryError and AssetMissingError are RuntimeErrors.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError)
_EXPECTED_BY_NAME = {"LibraryError", "AssetMissingError"}
_state = {"verbose": False}


def _is_expected(e: BaseException) -> bool:
    return isinstance(e, EXPECTED_ERRORS) or type(e).__name__ in _EXPECTED_BY_NAME


def _error_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    return text


def check_device(device: str | None) -> None:
    """Refuse ``--device cuda[:N]`` up front when no such GPU is visible (not a CUDA traceback)."""
    if not device or not str(device).startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(str(device).split(":", 1)[1]) if ":" in str(device) else 0
    if index >= count:
        seen = f"{count} CUDA GPU(s) visible" if count else "no CUDA GPU is visible"
        raise ValueError(f"--device {device}: {seen}; use --device cpu or leave --device out")


def clean_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: expected errors become `error: ...` on one line and exit code 2."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            check_device(kwargs.get("device"))
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            if _state["verbose"]:
                raise
            print("error: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except Exception as e:
            if _state["verbose"] or not _is_expected(e):
                raise
            print(f"error: {_error_line(e)}", file=sys.stderr)
            raise typer.Exit(2) from None

    return run


def _wrap_group(group: typer.Typer) -> None:
    for command in group.registered_commands:
        if command.callback is not None:
            command.callback = clean_errors(command.callback)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _wrap_group(sub.typer_instance)


def _register() -> None:
    for name, module in GROUPS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("mmembed"):
                continue  # that part of the toolkit is not installed in this build
            raise
        _wrap_group(mod.app)
        app.add_typer(mod.app, name=name)
    for name, target in COMMANDS.items():
        module, func = target.split(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("mmembed"):
                continue
            raise
        settings = (
            {"allow_extra_args": True, "ignore_unknown_options": True}
            if name in _EXTRA_ARGS
            else None
        )
        app.command(name, context_settings=settings)(clean_errors(getattr(mod, func)))


def _version(value: bool) -> None:
    if value:
        from mmembed import __version__

        typer.echo(f"mmembed {__version__}")
        raise typer.Exit()


def _quiet_libraries() -> None:
    """No per-load progress bars from transformers / huggingface_hub (our own bars stay)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when they are imported
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:  # imported already (a test process, an embedding caller)
        hf_logging.disable_progress_bar()


@app.callback()
def _root(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log debug messages; show tracebacks of errors."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    feature_cache: str = typer.Option(
        None,
        "--feature-cache",
        help="Folder that keeps frozen vision-tower features on disk for this command (composed "
        "backbones): each image runs through the same tower once across commands.",
    ),
) -> None:
    _state["verbose"] = verbose
    if not verbose:
        _quiet_libraries()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines are noise here
    if feature_cache or "mmembed.model.feature_cache" in sys.modules:  # torch only when asked
        from mmembed.model.feature_cache import use_feature_cache

        use_feature_cache(feature_cache)


_register()


def main() -> None:
    app()
