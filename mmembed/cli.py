"""The `mmembed` command line. Thin: each command group lives beside the code it drives
(``mmembed/<area>/cli.py``) and is registered here by name; heavy imports happen inside commands."""

from __future__ import annotations

import importlib
import logging
import sys

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

# Single commands (`mmembed encode`, `mmembed search`, ...): name -> "module:function".
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


def _register() -> None:
    for name, module in GROUPS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("mmembed"):
                continue  # that part of the toolkit is not installed in this build
            raise
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
        app.command(name, context_settings=settings)(getattr(mod, func))


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    feature_cache: str = typer.Option(
        None,
        "--feature-cache",
        help="Folder that keeps frozen vision-tower features on disk for this command (composed "
        "backbones): each image runs through the same tower once across commands.",
    ),
) -> None:
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
