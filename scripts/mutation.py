"""A small mutation-testing harness (not part of CI): plant one small bug at a time in the core
modules, run the tests that cover them, and report the mutants no test caught.

Mutants come from the AST of each target file (comparison and arithmetic operators swapped,
integer constants moved by one, ``and``/``or`` and ``min``/``max`` swapped, ``not`` dropped,
``True``/``False`` flipped, one call statement deleted), plus the hand-written ``KNOWN`` bugs of
issue 18. Each mutant is written into a scratch copy of the repository (the working tree is never
touched) and the mapped test files run in a forked child of a process that has already imported
torch, numpy and faiss, so one mutant costs the tests, not the imports.

    python3 scripts/mutation.py --list                 # count mutants per file, run nothing
    python3 scripts/mutation.py --fraction 0.05        # a stable ~5% sample + the known bugs
    python3 scripts/mutation.py --root DIR             # mutate and test another checkout
    python3 scripts/mutation.py --rerun report.json    # only the survivors of an earlier run

A mutant is sampled when a hash of its description (file, function, operator, occurrence) falls
under ``--fraction``, so two runs over slightly different sources pick nearly the same mutants and
their figures compare. Survivors are printed with file:line and the change; the json report
(``--out``) has every result."""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

TARGETS = [
    "mmembed/eval/*.py",
    "mmembed/train/loss.py",
    "mmembed/train/gradcache.py",
    "mmembed/train/mine.py",
    "mmembed/index/*.py",
    "mmembed/model/poolers.py",
    "mmembed/search/scan.py",
]
# which test files a mutant of each target runs against (glob patterns, relative to the root);
# tests/test_mutants_*.py always run too
TESTS = {
    "mmembed/eval/": ["tests/test_eval_*.py"],
    "mmembed/train/loss.py": ["tests/test_train_loss.py"],
    "mmembed/train/gradcache.py": ["tests/test_train_loss.py"],
    "mmembed/train/mine.py": ["tests/test_train_mine.py"],
    "mmembed/index/": [
        "tests/test_index.py",
        "tests/test_encode.py",
        "tests/test_embedding_shards.py",
    ],
    "mmembed/model/poolers.py": ["tests/test_model_poolers.py"],
    "mmembed/search/scan.py": ["tests/test_search_library.py"],
}
ALWAYS = ["tests/test_mutants_*.py"]

# the eight bugs issue 18 found surviving, as (file, exact old text, new text)
KNOWN = [
    ("mine: target modality from the query side", "mmembed/train/mine.py",
     "target_modality=TASKS[q.task_id][1]", "target_modality=TASKS[q.task_id][0]"),
    ("mine: positive score max instead of min", "mmembed/train/mine.py",
     "float(np.min(cand[rows] @ qemb[qi]))", "float(np.max(cand[rows] @ qemb[qi]))"),
    # (the tombstone clearing this bug removed is now done by _compact, which the HNSW fix added)
    ("Index.add: tombstones not cleared on re-add", "mmembed/index/faiss_index.py",
     "self._compact()  # a removed", "pass  # a removed"),
    ("Index.add: tombstones not cleared on re-add (before the HNSW fix)",
     "mmembed/index/faiss_index.py",
     "        self._tombstones.difference_update(labels.tolist())\n", ""),
    ("scan_corpus: unchanged judged by size only", "mmembed/data/corpus.py",
     "(old.size, old.mtime_ns) == (st.st_size, st.st_mtime_ns)", "old.size == st.st_size"),
    ("content_key: image hash dropped", "mmembed/search/scan.py",
     "[did, modality, text, image, image_fingerprint]", "[did, modality, text, image]"),
    ("make_scheduler: warmup off by one", "mmembed/train/trainer.py",
     "return (step + 1) / warm", "return step / warm"),
    ("make_scheduler: linear decay sign", "mmembed/train/trainer.py",
     "max(0.0, 1.0 - frac)", "max(0.0, 1.0 + frac)"),
    ("evaluate_model: instructions dropped", "mmembed/eval/mbeir_run.py",
     "EncodeEntry(q.qid, q, choose(q))", "EncodeEntry(q.qid, q, None)"),
]  # fmt: skip
KNOWN_TESTS = {
    "mmembed/data/corpus.py": ["tests/test_data_corpus.py"],
    "mmembed/train/trainer.py": ["tests/test_train_schedule.py"],
}

SWAP_CMP = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}  # fmt: skip
SWAP_BIN = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv,
}  # fmt: skip
SKIP_CALLS = {"debug", "info", "warning", "error", "exception", "echo", "print", "secho"}


@dataclass
class Mutant:
    file: str
    line: int
    func: str
    op: str  # short description of the change
    key: str  # stable description used for sampling
    node_index: int = -1  # position in ast.walk order (AST mutants)
    old: str = ""  # text mutants (KNOWN)
    new: str = ""
    status: str = ""  # killed / survived / timeout / error
    seconds: float = 0.0


def _skip_subtrees(tree: ast.AST) -> set[int]:
    """ids of nodes not to mutate: docstrings, annotations, f-strings, logging/echo calls,
    raise statements (their messages), ``if TYPE_CHECKING`` blocks."""
    skip: set[int] = set()

    def mark(n: ast.AST) -> None:
        for m in ast.walk(n):
            skip.add(id(m))

    for n in ast.walk(tree):
        if isinstance(n, ast.JoinedStr | ast.Raise | ast.Assert):
            mark(n)
        elif isinstance(n, ast.AnnAssign | ast.arg) and n.annotation is not None:
            mark(n.annotation)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.returns is not None:
            mark(n.returns)
        elif isinstance(n, ast.Call):
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in SKIP_CALLS:
                mark(n)
        elif isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            mark(n)
    return skip


def _funcs(tree: ast.AST) -> dict[int, str]:
    """node id -> qualified name of the enclosing function (or "<module>")."""
    out: dict[int, str] = {}

    def visit(n: ast.AST, name: str) -> None:
        for c in ast.iter_child_nodes(n):
            cname = name
            if isinstance(c, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                cname = c.name if name == "<module>" else f"{name}.{c.name}"
            out[id(c)] = cname
            visit(c, cname)

    visit(tree, "<module>")
    return out


def _changes(n: ast.AST) -> list[tuple[str, object]]:
    """Possible single changes at node ``n``: (description, payload for _apply)."""
    out: list[tuple[str, object]] = []
    if isinstance(n, ast.Compare):
        for i, op in enumerate(n.ops):
            if type(op) in SWAP_CMP:
                new = SWAP_CMP[type(op)]
                out.append((f"{type(op).__name__}->{new.__name__}", ("cmp", i, new)))
    elif isinstance(n, ast.BinOp) and type(n.op) in SWAP_BIN:
        new = SWAP_BIN[type(n.op)]
        out.append((f"{type(n.op).__name__}->{new.__name__}", ("bin", new)))
    elif isinstance(n, ast.BoolOp):
        out.append(("and<->or", ("bool",)))
    elif isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not):
        out.append(("drop not", ("not",)))
    elif isinstance(n, ast.Constant) and type(n.value) is bool:
        out.append((f"{n.value}->{not n.value}", ("const", not n.value)))
    elif isinstance(n, ast.Constant) and type(n.value) is int:
        out.append((f"{n.value}->{n.value + 1}", ("const", n.value + 1)))
        if n.value != 0:
            out.append((f"{n.value}->{n.value - 1}", ("const", n.value - 1)))
    elif isinstance(n, ast.Call):
        f = n.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        if name in ("min", "max"):
            out.append((f"{name}->{'max' if name == 'min' else 'min'}", ("minmax",)))
    elif isinstance(n, ast.Expr) and isinstance(n.value, ast.Call):
        out.append(("delete call statement", ("delete",)))
    return out


def _apply(n: ast.AST, payload: tuple) -> None:
    kind = payload[0]
    if kind == "cmp":
        n.ops[payload[1]] = payload[2]()
    elif kind == "bin":
        n.op = payload[1]()
    elif kind == "bool":
        n.op = ast.Or() if isinstance(n.op, ast.And) else ast.And()
    elif kind == "not":  # replace the UnaryOp by its operand, in place
        n.__class__ = ast.Call
        operand = n.operand
        n.func, n.args, n.keywords = ast.Name("bool", ast.Load()), [operand], []
        del n.op, n.operand
    elif kind == "const":
        n.value = payload[1]
    elif kind == "minmax":
        f = n.func
        if isinstance(f, ast.Attribute):
            f.attr = "max" if f.attr == "min" else "min"
        else:
            f.id = "max" if f.id == "min" else "min"
    elif kind == "delete":
        n.value = ast.Constant(None)


def enumerate_mutants(root: Path, rel: str) -> list[Mutant]:
    src = (root / rel).read_text()
    tree = ast.parse(src)
    skip = _skip_subtrees(tree)
    # module, class and function docstrings
    for n in ast.walk(tree):
        scoped = isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        first = n.body[0] if scoped and n.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            skip.add(id(first))
            skip.add(id(first.value))
    funcs = _funcs(tree)
    seen: dict[str, int] = {}
    out = []
    for i, n in enumerate(ast.walk(tree)):
        if id(n) in skip or not hasattr(n, "lineno"):
            continue
        for desc, _ in _changes(n):
            base = f"{rel}:{funcs.get(id(n), '<module>')}:{desc}"
            seen[base] = seen.get(base, 0) + 1
            out.append(Mutant(rel, n.lineno, funcs.get(id(n), "<module>"), desc,
                              f"{base}#{seen[base]}", node_index=i))  # fmt: skip
    return out


def mutated_source(root: Path, m: Mutant) -> str:
    src = (root / m.file).read_text()
    if m.node_index < 0:
        if src.count(m.old) != 1:
            raise ValueError(
                f"{m.file}: known mutant {m.op!r}: text found {src.count(m.old)} times"
            )
        return src.replace(m.old, m.new)
    tree = copy.deepcopy(ast.parse(src))
    node = list(ast.walk(tree))[m.node_index]
    matches = [(d, p) for d, p in _changes(node) if d == m.op]
    _apply(node, matches[0][1])
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def tests_for(root: Path, rel: str, extra: dict[str, list[str]]) -> list[str]:
    pats = [p for k, v in {**TESTS, **extra}.items() if rel.startswith(k) for p in v] + ALWAYS
    files = sorted({str(f.relative_to(root)) for p in pats for f in root.glob(p)})
    return files


def run_one(work: Path, m: Mutant, tests: list[str], timeout: float) -> str:
    """Write the mutant into ``work``, run ``tests`` in a forked child, restore the file."""
    path = work / m.file
    original = path.read_text()
    if m.node_index < 0 and m.old not in original:
        return "absent"  # a known bug whose code is not in this version
    if not tests:
        return "untested"  # no mapped test file exists (pytest would run the whole suite)
    try:
        path.write_text(mutated_source(work, m))
    except Exception as e:  # noqa: BLE001 - an unappliable mutant is reported, not fatal
        print(f"  cannot apply: {e}", flush=True)
        return "error"
    try:
        pid = os.fork()
        CHILD[0] = pid
        if pid == 0:  # child: fresh mmembed import from the scratch copy
            try:
                os.setsid()
                os.chdir(work)
                sys.path.insert(0, str(work))
                os.environ["PYTHONPATH"] = str(work)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                import pytest

                rc = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-m",
                                  "not slow and not gpu", *tests])  # fmt: skip
                os._exit(int(rc))
            except BaseException:  # noqa: BLE001
                os._exit(99)
        deadline = time.time() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.time() > deadline:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "timeout"
            time.sleep(0.2)
        rc = os.waitstatus_to_exitcode(status)
        if rc == 0:
            return "survived"
        if rc == 1:
            return "killed"
        # 2/3: interrupted or internal error (the bug broke an import): caught all the same
        return "killed" if rc in (2, 3) else "error"
    finally:
        CHILD[0] = 0
        path.write_text(original)


CHILD = [0]  # the running test child, killed with its group when the harness is stopped


def _stop(signum: int, frame: object) -> None:
    if CHILD[0]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(CHILD[0], signal.SIGKILL)
    raise SystemExit(128 + signum)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--fraction", type=float, default=1.0, help="share of AST mutants to run")
    ap.add_argument("--no-known", action="store_true", help="leave out issue 18's eight bugs")
    ap.add_argument("--only", default="", help="run only mutants whose key contains this")
    ap.add_argument("--rerun", default="", help="run only the survivors of this json report")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant")
    ap.add_argument("--list", action="store_true", help="count mutants, run nothing")
    ap.add_argument("--out", default="", help="write every result to this json file")
    args = ap.parse_args()
    root = Path(args.root).resolve()

    files = sorted({str(p.relative_to(root)) for t in TARGETS for p in root.glob(t)})
    every = [m for f in files for m in enumerate_mutants(root, f)]
    if args.list:
        for f in files:
            print(f"{sum(m.file == f for m in every):5d}  {f}")
        print(f"{len(every):5d}  in all")
        return 0
    frac = max(0.0, min(1.0, args.fraction))
    chosen = [
        m for m in every
        if int(hashlib.sha1(m.key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < frac
    ]  # fmt: skip
    if not args.no_known:
        chosen += [Mutant(f, 0, "", d, f"known:{d}", old=o, new=n) for d, f, o, n in KNOWN]
    if args.rerun:
        prev = json.loads(Path(args.rerun).read_text())["mutants"]
        keys = {m["key"] for m in prev if m["status"] == "survived"}
        chosen = [m for m in every if m.key in keys]
        chosen += [
            Mutant(f, 0, "", d, f"known:{d}", old=o, new=n)
            for d, f, o, n in KNOWN
            if f"known:{d}" in keys
        ]
    if args.only:
        chosen = [m for m in chosen if args.only in m.key]
    print(f"{len(every)} AST mutants in {len(files)} files; running {len(chosen)} "
          f"(fraction {frac:g}{'' if args.no_known else ' + the known bugs'})", flush=True)  # fmt: skip

    # heavy third-party imports once, in the parent; mmembed itself only in the children
    import faiss  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401

    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    work = Path(tempfile.mkdtemp(prefix="mmembed-mutation-"))
    try:
        for part in ("mmembed", "tests", "pyproject.toml", "scripts", "configs"):
            src = root / part
            if src.is_dir():
                shutil.copytree(src, work / part, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                shutil.copy2(src, work / part)
        t0 = time.time()
        for i, m in enumerate(chosen, 1):
            tests = tests_for(work, m.file, KNOWN_TESTS)
            t = time.time()
            m.status = run_one(work, m, tests, args.timeout)
            m.seconds = round(time.time() - t, 1)
            where = f"{m.file}:{m.line}" if m.line else m.file
            print(f"[{i}/{len(chosen)}] {m.status:8s} {m.seconds:6.1f}s  {where}  {m.func}  {m.op}",
                  flush=True)  # fmt: skip
        total = time.time() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    counts: dict[str, int] = {}
    for m in chosen:
        counts[m.status] = counts.get(m.status, 0) + 1
    print(f"\n{len(chosen)} mutants in {total / 60:.1f} min: {counts}")
    surv = [m for m in chosen if m.status == "survived"]
    if surv:
        print("survivors:")
        for m in surv:
            print(f"  {m.file}:{m.line}  {m.func}  {m.op}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "root": str(root), "fraction": frac, "total_ast_mutants": len(every),
            "minutes": round(total / 60, 1), "counts": counts,
            "mutants": [asdict(m) for m in chosen]}, indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
