"""Atomic file writes: readers see the old file or the whole new one, never half of either.

Every writer in the package that replaces a file goes through :func:`atomic_open` (or its two
shorthands). The bytes go to a temp file beside the target (same folder, so the rename stays on
one file system), are flushed and fsynced, and only then renamed over the target. A writer that
raises leaves the target untouched and removes its temp file. Temp names carry the process id
and a random tag, so two processes writing the same path never share a temp file; the last
rename wins.

Leaves alone: what is written (callers format their own bytes) and folder-level swaps (an index
folder renamed into place is the index package's business).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_json", "atomic_write_text", "temp_path"]


def temp_path(path: str | Path) -> Path:
    """A fresh hidden temp name beside ``path`` (``.NAME.PID.TAG.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_open(
    path: str | Path,
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
    fsync: bool = True,
) -> Iterator[IO[Any]]:
    """Open a temp file for writing; on a clean exit rename it over ``path``.

    ``mode`` is ``"w"`` (text, ``encoding``/``newline`` apply) or ``"wb"``. The parent folder is
    created. On an exception the temp file is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w", fsync=fsync) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1, **dump: Any) -> Path:
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept) to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent, **dump)
        f.write("\n")
    return Path(path)
