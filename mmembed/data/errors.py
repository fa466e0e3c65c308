"""Data errors that name the file, the line, the field and what to do, and a collector that
either stops at the first error (strict) or records and continues (report-and-skip)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """One problem in one record: ``path:line: field: problem (hint)``."""

    def __init__(
        self, path: str | Path, line: int | None, field: str | None, problem: str, hint: str = ""
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = f"{self.field}: {self.problem}" if self.field else self.problem
        return f"{where}: {what}" + (f" ({self.hint})" if self.hint else "")


@dataclass
class ErrorLog:
    """Collects DataErrors. ``strict=True`` raises the first one instead of collecting it."""

    strict: bool = False
    errors: list[DataError] = field(default_factory=list)
    limit: int = 10_000  # keep at most this many messages; counts stay exact

    _count: int = 0
    _by_file: Counter = field(default_factory=Counter)

    def add(self, error: DataError) -> None:
        if self.strict:
            raise error
        self._count += 1
        self._by_file[error.path] += 1
        if len(self.errors) < self.limit:
            self.errors.append(error)

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def count_for(self, path: str | Path) -> int:
        return self._by_file[str(path)]

    def summary(self) -> str:
        if not self._count:
            return "no errors"
        files = len(self._by_file)
        return f"{self._count} error(s) in {files} file(s)"


def report(errors: ErrorLog | None, error: DataError) -> None:
    """Send ``error`` to ``errors``; with no collector the error is raised (strict default)."""
    if errors is None:
        raise error
    errors.add(error)
