"""Shared test settings (offline, deterministic, small thread counts) and the fixtures several
test modules use: a tiny saved model and a CLI runner here, the web server and headless browser
in tests/browser_fixtures.py (loaded as a plugin). Plain helpers (trees, runs, encoders) live in
tests/*_fixtures.py modules; test modules never import one another."""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

pytest_plugins = ["browser_fixtures"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Embedder saved to disk, one per test module."""
    import torch

    from mmembed.testing.tiny_embedders import tiny_embedder

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("model") / "tiny"
    tiny_embedder(seed=0).save_pretrained(out)
    return out


@pytest.fixture()
def cli():
    """Run `mmembed ARGS...` in-process; exceptions propagate."""
    from mmembed.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
