"""The command line's rough edges (issue 19): `--version`; every expected error of eval, encode,
rerank, data scan and `--device cuda` without a GPU is one clean line (no traceback; `-v` shows
it); `mmembed index FILE` refuses before writing anything; hub names with dots reach the hub;
no weight-loading progress bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmembed import __version__


def _one_clean_line(r) -> str:
    """The result's stderr: exactly one `error: ...` line and no traceback."""
    err = r.stderr.strip()
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert "Traceback" not in r.output and "╭" not in r.output, r.output
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_version(cli) -> None:
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"mmembed {__version__}"


def test_expected_errors_are_one_line(cli, tmp_path: Path) -> None:
    run = tmp_path / "first.trec"
    run.write_text("9:1 Q0 9:10 1 0.5 x\n")
    missing = tmp_path / "nope"
    err = _one_clean_line(cli("eval", "mbeir", "--data", missing, "--model", "mmembed-mini"))
    assert "no M-BEIR query files" in err
    err = _one_clean_line(cli("eval", "beir", "--data", missing, "--model", "mmembed-mini"))
    assert "corpus.jsonl" in err
    err = _one_clean_line(cli("encode", tmp_path / "nope.jsonl", "--out", tmp_path / "o"))
    assert "nope.jsonl" in err
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"did": "1:1", "txt": "x", "img_path": null, "modality": "text"}\n')
    err = _one_clean_line(cli("encode", pool, "--out", tmp_path / "o", "--model", "no-such"))
    assert "no-such" in err and "preset" in err
    err = _one_clean_line(cli("rerank", run, "--data", missing, "--model", "x/y"))
    assert "no such data root" in err
    err = _one_clean_line(cli("data", "scan", missing))
    assert "not a folder" in err


def test_device_cuda_without_a_gpu_is_one_line(cli, tmp_path: Path, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _one_clean_line(cli("search", "red", "--index", tmp_path / "ix", "--device", "cuda"))
    assert "--device cuda" in err and "no CUDA GPU" in err
    err = _one_clean_line(cli("index", tmp_path, "--index", tmp_path / "ix", "--device", "cuda:1"))
    assert "--device cuda:1" in err
    assert not (tmp_path / "ix").exists()


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "mmembed", "data", "scan", str(tmp_path / "nope")]
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 2 and quiet.stderr.strip().count("\n") == 0
    assert quiet.stderr.startswith("error: ")
    loud = subprocess.run(
        [*cmd[:3], "-v", *cmd[3:]], capture_output=True, text=True, env=env, timeout=120
    )
    assert loud.returncode == 1 and "NotADirectoryError" in loud.stderr


def test_index_of_a_file_refuses_and_writes_nothing(cli, tmp_path: Path) -> None:
    f = tmp_path / "photo.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n")
    r = cli("index", f, "--index", tmp_path / "ix", "--model", tmp_path / "never-loaded")
    assert r.exit_code == 2 and "a file, not a folder" in r.output
    assert not (tmp_path / "ix").exists()
    r = cli("index", "--index", tmp_path / "ix2")
    assert r.exit_code == 2 and "nothing to index" in r.output
    assert not (tmp_path / "ix2").exists()


def test_rerank_tries_hub_names_with_dots() -> None:
    from mmembed.rerank.load import load_reranker, looks_like_hub_id

    assert looks_like_hub_id("llava-hf/llava-v1.6-mistral-7b-hf")
    assert looks_like_hub_id("gpt2") and looks_like_hub_id("org/model")
    for path in ("model.gguf", "./llava", "/models/llava", "~/m", "a/b/c", "ckpt.bin"):
        assert not looks_like_hub_id(path), path
    # offline here: the hub is tried and its failure is one clear sentence, not "missing file"
    with pytest.raises(FileNotFoundError, match="could not be fetched as a hub model") as e:
        load_reranker("llava-hf/llava-v1.6-mistral-7b-hf", device="cpu")
    assert "no such model file" not in str(e.value)


def test_rerank_cli_with_a_hub_name_offline_is_one_line(cli, tmp_path: Path) -> None:
    from eval_fixtures import rerank_tree

    from mmembed.data.runfile import write_run

    run = tmp_path / "first.trec"
    write_run(run, rerank_tree(tmp_path / "data"), tag="first")
    r = cli(
        "rerank", run, "--data", tmp_path / "data", "--model",
        "llava-hf/llava-v1.6-mistral-7b-hf", "--device", "cpu",
    )  # fmt: skip
    err = _one_clean_line(r)
    assert "llava-hf/llava-v1.6-mistral-7b-hf" in err and "hub model" in err


def test_commands_turn_off_transformers_progress_bars(cli, tmp_path: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    try:
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "a.txt").write_text("hello")
        assert cli("data", "scan", tmp_path / "notes").exit_code == 0
        assert not hf_logging.is_progress_bar_enabled()
        assert os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1"  # for later imports
    finally:
        hf_logging.enable_progress_bar()


@pytest.mark.slow
def test_no_weight_loading_progress_bar_in_a_real_process(tmp_path: Path) -> None:
    """What a user sees on stderr: loading the MiniLM-based preset prints no tqdm bar (~1 min
    under load: the model loads through transformers' from_pretrained)."""
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        json.dumps({"did": "1:1", "txt": "hello", "img_path": None, "modality": "text"}) + "\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE",)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    r = subprocess.run(
        [sys.executable, "-m", "mmembed", "encode", str(pool), "--out", str(tmp_path / "o"),
         "--model", "mmembed-mini-base", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Loading weights" not in r.stderr and "it/s]" not in r.stderr, r.stderr[-2000:]
    assert "1 rows" in r.stderr
