"""Every code block of README.md and docs/*.md is run, or says in the markdown why not.

A block's marker is an HTML comment on the line before its fence:

    <!-- snippet: skip: REASON -->                     not run; the reason (all the rest) is required
    <!-- snippet: run -->                              a shell block: each command is run
    <!-- snippet: run; skip "mmembed serve" (REASON) -->   ... except lines starting so
    <!-- snippet: setup=NAME -->                       a python block needing prepared names
    <!-- snippet: slow -->                             run only with the slow tests

Python blocks run by default (in a sandbox: HOME, the working folder and the default model
$MMEMBED_MODEL are temporary, the model a tiny random one); yaml blocks must load as what they
show; shell blocks (and unlabelled blocks of commands) must carry a marker. Each shell command is
`mmembed ...` or `python3 -m mmembed ...`, run in process through the CLI, with placeholders
(M, PATH_OR_NAME, DATA, POOL.jsonl) standing for tiny sandbox files. Unlabelled blocks that are
not commands (diagrams, folder layouts) are prose."""

from __future__ import annotations

import re
import shlex
import shutil
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*snippet:\s*(.*?)\s*-->")
SHELL_LANGS = {"bash", "sh", "shell", "console"}
COMMAND_WORDS = {"mmembed", "python", "python3", "bash", "accelerate", "pip", "sh"}


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence
    lang: str
    code: str
    marker: str | None
    skip: str | None = None  # reason
    slow: bool = False
    setup: str | None = None
    run: bool = False
    skip_commands: dict[str, str] = field(default_factory=dict)  # prefix -> reason

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str:
        if self.lang == "python":
            return "python"
        if self.lang in ("yaml", "yml"):
            return "yaml"
        if self.lang in SHELL_LANGS:
            return "shell"
        words = next((x.split() for x in self.code.splitlines() if x.strip()), [""])
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # LONGER=1 bash ...
            words = words[1:]
        return "shell" if words and words[0] in COMMAND_WORDS else "prose"


def _parse_marker(block: Block) -> None:
    if block.marker is None:
        return
    if block.marker.startswith("skip:"):  # the rest is the reason, semicolons and all
        block.skip = block.marker[len("skip:") :].strip()
        return
    rest = block.marker
    for m in re.finditer(r'skip\s+"([^"]+)"\s+\(([^()]+)\)', block.marker):
        block.skip_commands[m.group(1)] = m.group(2)
        rest = rest.replace(m.group(0), " ")
    for word in rest.replace(";", " ").split():
        if word == "slow":
            block.slow = True
        elif word == "run":
            block.run = True
        elif word.startswith("setup="):
            block.setup = word[len("setup=") :]
        else:
            raise ValueError(f"{block.name}: unknown snippet marker word {word!r}")


def doc_blocks() -> list[Block]:
    out = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            mm = MARKER.search(before)
            b = Block(path, line, m.group(1), m.group(2), mm.group(1) if mm else None)
            _parse_marker(b)
            out.append(b)
    return out


BLOCKS = doc_blocks()


def test_every_block_runs_or_says_why_not() -> None:
    problems = []
    for b in BLOCKS:
        if b.kind == "shell" and not (b.run or b.skip):
            problems.append(f"{b.name}: shell block without a `<!-- snippet: run|skip: why -->`")
        if b.skip is not None and len(b.skip) < 10:
            problems.append(f"{b.name}: give a reason to skip (got {b.skip!r})")
        if b.kind == "prose" and b.marker:
            problems.append(f"{b.name}: marker on a block that is not code")
    assert not problems, "\n".join(problems)
    assert sum(b.kind == "python" for b in BLOCKS) >= 5  # the parser finds the docs' blocks


def _params():
    out = []
    for b in BLOCKS:
        if b.kind == "prose" or b.skip is not None:
            continue
        marks = [pytest.mark.slow] if b.slow else []
        out.append(pytest.param(b, id=b.name, marks=marks))
    return out


# ------------------------------------------------------------------------------ the sandbox
def _beir(root: Path) -> None:
    import json

    (root / "qrels").mkdir(parents=True)
    docs = {f"d{i}": f"document number {i} about topic {i % 3}" for i in range(8)}
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items())
    )
    queries = {f"q{i}": f"topic {i}" for i in range(3)}
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items())
    )
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3))
    )


@dataclass
class Sandbox:
    home: Path
    work: Path
    model: Path

    def placeholders(self) -> dict[str, str]:
        pool = self.work / "M-BEIR" / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl"
        return {"M": str(self.model), "PATH_OR_NAME": str(self.model), "POOL.jsonl": str(pool)}


@pytest.fixture()
def sandbox(tmp_path: Path, tiny_model: Path, monkeypatch) -> Sandbox:
    from eval_fixtures import hand_run, toy_tree
    from PIL import Image

    from mmembed.testing.colour_embedder import draw_corpus

    home, work = tmp_path / "home", tmp_path / "work"
    draw_corpus(home / "Pictures")
    for notes in (home / "notes", home / "Documents" / "notes"):
        notes.mkdir(parents=True)
        (notes / "todo.txt").write_text("buy a red bicycle bell")
    work.mkdir()
    for name, rgb in [("cat.jpg", (120, 110, 100)), ("apple.png", (220, 30, 30)),
                      ("pie.jpg", (200, 160, 90))]:  # fmt: skip
        Image.new("RGB", (32, 32), rgb).save(work / name)
    shutil.copy(work / "cat.jpg", home / "Pictures" / "cat.jpg")
    toy_tree(work / "M-BEIR")
    data = toy_tree(work / "DATA")
    shutil.copy(
        data / "query/test/mbeir_fashioniq_task7_test.jsonl",
        data / "query/test/mbeir_cirr_task7_test.jsonl",
    )
    for run in ["first_stage.trec", "rerank.trec", "out/runs/some_system.trec",
                "out/runs/first_stage.trec", "out/runs/first_stage.rerank10.trec"]:  # fmt: skip
        (work / run).parent.mkdir(parents=True, exist_ok=True)
        hand_run(work / run)
    _beir(work / "scifact")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MMEMBED_MODEL", str(tiny_model))
    for var in ("XDG_CACHE_HOME", "MMEMBED_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(work)
    return Sandbox(home, work, tiny_model)


# ------------------------------------------------------------------------------ python setups
def _setup_index(box: Sandbox) -> dict:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 16)).astype(np.float32)  # (N, D)
    return {
        "emb": emb,
        "dids": [f"3:{i}" for i in range(40)],
        "model": types.SimpleNamespace(fingerprint="sha256:" + "d0c5" * 16),
        "queries": emb[:3],
        "more": rng.normal(size=(2, 16)).astype(np.float32),
        "more_ids": ["5:1", "5:2"],
    }


def _setup_mteb(box: Sandbox) -> dict:
    from mmembed.model import load_embedder

    return {"M": str(box.model), "load_embedder": load_embedder}


def _setup_rerank(box: Sandbox) -> dict:
    from eval_fixtures import rerank_tree

    from mmembed.data.runfile import write_run
    from mmembed.testing.tiny_rerankers import tiny_llava_parts

    write_run(
        box.work / "runs" / "first.trec", rerank_tree(box.work / "data" / "mbeir"), tag="first"
    )
    model, processor = tiny_llava_parts(seed=1)
    folder = box.work / "models" / "llava-v1.6-mistral-7b-hf"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return {}


SETUPS = {"index": _setup_index, "mteb": _setup_mteb, "rerank": _setup_rerank}


# ------------------------------------------------------------------------------ runners
def run_python(block: Block, box: Sandbox) -> dict:
    namespace = {"__name__": "__snippet__"}
    if block.setup:
        namespace.update(SETUPS[block.setup](box))
    exec(compile(block.code, block.name, "exec"), namespace)  # noqa: S102 - the docs' own code
    return namespace


def _commands(code: str) -> list[str]:
    lines, held = [], ""
    for raw in code.splitlines():
        if raw.rstrip().endswith("\\"):
            held += raw.rstrip()[:-1] + " "
            continue
        line = (held + raw).strip()
        held = ""
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def run_shell(block: Block, box: Sandbox) -> list[str]:
    import os

    from typer.testing import CliRunner

    from mmembed.cli import app

    ran = []
    subs = box.placeholders()
    for line in _commands(block.code):
        if any(line.startswith(prefix) for prefix in block.skip_commands):
            continue
        words = [os.path.expanduser(w) for w in shlex.split(line, comments=True)]
        words = [subs.get(w, w) for w in words]
        if words[:1] == ["mmembed"]:
            args = words[1:]
        elif words[:3] == ["python3", "-m", "mmembed"]:
            args = words[3:]
        else:
            pytest.fail(f"{block.name}: cannot run {line!r} here; mark it skip with a reason")
        r = CliRunner().invoke(app, args, catch_exceptions=False)
        assert r.exit_code == 0, f"{block.name}: `{line}` exited {r.exit_code}:\n{r.output}"
        ran.append(line)
    assert ran, f"{block.name}: every command skipped; mark the block skip instead"
    return ran


def run_yaml(block: Block, box: Sandbox) -> None:
    import yaml

    doc = yaml.safe_load(block.code)
    assert isinstance(doc, dict), f"{block.name}: not a mapping"
    if "tasks" in doc and "answers" in doc:  # a reranker template file: it must load as one
        from mmembed.rerank.prompts import load_prompts

        (box.work / "templates.yaml").write_text(block.code, encoding="utf-8")
        assert load_prompts(box.work / "templates.yaml").tasks


@pytest.mark.parametrize("block", _params())
def test_snippet(block: Block, sandbox: Sandbox) -> None:
    {"python": run_python, "shell": run_shell, "yaml": run_yaml}[block.kind](block, sandbox)


# ------------------------------------------------------------------------------ item 2
def test_search_md_library_snippet_builds_an_index_the_cli_searches(sandbox: Sandbox) -> None:
    """docs/search.md's Python snippet records the model it encoded with, so `mmembed search`
    and `mmembed index` accept its index (issue 19, item 2)."""
    from typer.testing import CliRunner

    from mmembed.cli import app

    (block,) = [
        b for b in BLOCKS
        if b.path.name == "search.md" and b.kind == "python" and "update_library" in b.code
    ]  # fmt: skip
    run_python(block, sandbox)
    index = sandbox.home / ".cache" / "mmembed" / "index"
    r = CliRunner().invoke(app, ["search", "red", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["index"], catch_exceptions=False)  # a refresh: nothing re-encoded
    assert r.exit_code == 0 and "0 encoded now" in r.output and "model changed" not in r.output
    assert index.is_dir()
