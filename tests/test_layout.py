"""README.md's layout section matches the tree: every package of mmembed has a line, every line
names a package that exists, and each CLI command is listed under the package that holds it
(mmembed/cli.py's GROUPS and COMMANDS), so moving a command fails here until the README says so;
and no library module imports mmembed.testing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_entries() -> dict[str, str]:
    """Package name -> its README layout text (continuation lines joined)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        m = re.match(r"mmembed/(\w+)/\s+(.*)", line)
        if m:
            current = m.group(1)
            entries[current] = m.group(2)
        elif line.startswith(" ") and current is not None:
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def _commands_named(entry: str) -> set[str]:
    """Command names in backticks: `mmembed index`, `search`, `mmembed data ...`."""
    names = set()
    for token in re.findall(r"`([^`]+)`", entry):
        words = token.split()
        names.add(words[1] if words[0] == "mmembed" and len(words) > 1 else words[0])
    return names


def test_every_package_has_a_layout_line_and_every_line_a_package() -> None:
    packages = {p.parent.name for p in (ROOT / "mmembed").glob("*/__init__.py")}
    assert set(_layout_entries()) == packages


def test_each_command_is_listed_under_the_package_that_holds_it() -> None:
    from mmembed.cli import COMMANDS, GROUPS

    entries = _layout_entries()
    where = {name: target.split(":")[0] for name, target in COMMANDS.items()} | GROUPS
    for name, module in where.items():
        package = module.split(".")[1]
        assert name in _commands_named(entries[package]), (name, package)
        others = {p for p, e in entries.items() if p != package and name in _commands_named(e)}
        assert not others, f"`mmembed {name}` is in {package}, but README lists it under {others}"


def test_the_library_never_imports_its_test_fixtures() -> None:
    """mmembed/testing/ is for tests, benchmarks and users' tests; no library module uses it."""
    users = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "mmembed").rglob("*.py")
        if "testing" not in p.relative_to(ROOT / "mmembed").parts
        and re.search(r"mmembed\.testing\b|from \.+testing\b", p.read_text(encoding="utf-8"))
    ]
    assert users == []
