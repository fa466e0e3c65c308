"""Import cycles inside the mmembed package: builds the module-to-module import graph from the
source with ``ast`` (every ``import``/``from ... import``, at module level or inside functions,
relative imports resolved; ``if TYPE_CHECKING:`` blocks left out) and prints each cycle, one
strongly connected component a line. Exits 1 when there is a cycle. Reads files only.

    python3 scripts/import_cycles.py            # cycles of mmembed/
    python3 scripts/import_cycles.py --edges    # also the whole graph, one edge a line
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package modules ``path`` (module ``name``) imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                found.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            for a in node.names:  # `from pkg import module` names the module, not pkg
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out = set()
    for f in found:
        while f and f not in modules:  # `from a.b import func` -> a.b
            f = f.rpartition(".")[0]
        if f and f != name:
            out.add(f)
    return out


def graph(package_dir: Path) -> dict[str, set[str]]:
    root = package_dir.parent
    files = {module_name(p, root): p for p in sorted(package_dir.rglob("*.py"))}
    modules = set(files)
    return {m: imports_of(p, m, modules) for m, p in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            strong(v)
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--package", type=Path, default=ROOT / "mmembed")
    p.add_argument("--edges", action="store_true", help="also print every edge")
    a = p.parse_args(argv)
    g = graph(a.package)
    if a.edges:
        for m in sorted(g):
            for d in sorted(g[m]):
                print(f"{m} -> {d}")
    found = cycles(g)
    n_edges = sum(len(v) for v in g.values())
    print(f"{len(g)} modules, {n_edges} imports, {len(found)} cycles")
    for c in found:
        # the edges inside the component, so the reader sees which imports close it
        inner = [f"{m} -> {d}" for m in c for d in sorted(g[m]) if d in c]
        print(f"cycle ({len(c)} modules): " + "; ".join(inner))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
