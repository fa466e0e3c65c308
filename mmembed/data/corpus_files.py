"""Reading the files of a local corpus: a recursive walk that survives symlink loops and
unreadable folders, and per-kind readers (image, text, jsonl) that report bad files instead of
failing. Knows nothing of dids or indexes (that is ``mmembed.data.corpus``)."""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from mmembed.data.images import IMAGE_EXTENSIONS, ImageLoadError, load_image

TEXT_EXTENSIONS = frozenset({".txt", ".md"})
JSONL_EXTENSIONS = frozenset({".jsonl"})
MAX_TEXT_CHARS = 4000  # longer texts are cut (an encoder sees ~512 tokens anyway)
# Larger files are reported, not read: a note is not 16 MB, a photo not 256 MB. A .jsonl has no
# cap as a whole (it is streamed line by line, each line capped by mbeir.MAX_LINE_BYTES).
MAX_FILE_BYTES = {"text": 16 * 1024 * 1024, "image": 256 * 1024 * 1024}
# Never followed, even when following links is asked for: not files anyone means to index.
SYSTEM_TREES = ("/proc", "/sys", "/dev")


class Skipped(NamedTuple):
    """A file (or ``file:line`` of a jsonl) that was not indexed, and why."""

    path: str
    reason: str


# --------------------------------------------------------------------------- walking


def read_bytes(path: Path) -> bytes:
    """Read a whole file. The one place corpus files are opened whole: call it through the
    module (``corpus_files.read_bytes``) so that a patched opener sees every read."""
    with open(path, "rb") as f:
        return f.read()


def open_stream(path: Path) -> BinaryIO:
    """Open a file to stream it (jsonl); call it through the module, like ``read_bytes``."""
    return open(path, "rb")


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def walk_files(
    root: Path,
    skipped: list[Skipped],
    *,
    include_hidden: bool = False,
    follow_links: bool = False,
) -> Iterator[Path]:
    """Regular files under ``root`` in sorted order.

    Symlinks that stay inside ``root`` are followed once; links that leave it are reported to
    ``skipped`` and not followed unless ``follow_links`` (links into /proc, /sys or /dev never
    are). Directory symlink loops, broken links, unreadable directories, FIFOs, sockets and
    devices are reported too, and the walk goes on. Hidden files and folders (``.name``) are
    left out unless asked."""
    seen_dirs: set[tuple[int, int]] = set()
    root_real = os.path.realpath(root)

    def visit(folder: Path) -> Iterator[Path]:
        try:
            st = folder.stat()
        except OSError as e:
            skipped.append(Skipped(str(folder), os_reason(e)))
            return
        ident = (st.st_dev, st.st_ino)
        if ident in seen_dirs:
            skipped.append(
                Skipped(str(folder), "symlink loop or folder already visited through another link")
            )
            return
        seen_dirs.add(ident)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            skipped.append(Skipped(str(folder), os_reason(e)))
            return
        for entry in entries:
            if not include_hidden and entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                reason = _link_refusal(path, root_real, follow_links)
                if reason:
                    skipped.append(Skipped(str(path), reason))
                    continue
            try:
                st = path.stat()  # follows symlinks
            except OSError as e:
                skipped.append(Skipped(str(path), os_reason(e)))
                continue
            if stat.S_ISDIR(st.st_mode):
                yield from visit(path)
            elif stat.S_ISREG(st.st_mode):
                yield path
            else:
                skipped.append(
                    Skipped(str(path), f"{_special_kind(st.st_mode)}, not a regular file")
                )

    yield from visit(root)


def _link_refusal(path: Path, root_real: str, follow_links: bool) -> str | None:
    """Why the symlink ``path`` is not followed, or None to follow it."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError) as e:  # ValueError: embedded NUL; OSError: loops (3.13+)
        return f"unresolvable symlink ({e})"
    if _is_within(real, root_real):
        return None
    if any(_is_within(real, t) for t in SYSTEM_TREES):
        return f"symlink to {real} (a system file; never indexed)"
    if not follow_links:
        return (
            f"symlink to {real}, outside the indexed folder (not followed; "
            "--follow-links indexes such links)"
        )
    return None


def too_large(kind: str, size: int) -> str | None:
    """The reason a ``kind`` file of ``size`` bytes is not read, or None when it is small enough."""
    from mmembed.data.mbeir import _size

    cap = MAX_FILE_BYTES.get(kind)
    if cap is None or size <= cap:
        return None
    return f"file too large ({_size(size)}; {kind} files over {_size(cap)} are not read)"


def os_reason(e: OSError) -> str:
    """A short, actionable reason for an OS error on a corpus file."""
    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT:
        return "broken symlink or vanished file"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (make it readable)"
    return f"cannot read ({e.strerror or e})"


def relkey(path: Path, root: Path) -> str:
    """The path of ``path`` relative to ``root``: POSIX separators, NFC-normalised."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(os.path.relpath(path, root))
    return unicodedata.normalize("NFC", rel.as_posix())


def file_kind(path: Path) -> str | None:
    """The reader for ``path`` by extension ("image", "text", "jsonl"); None: not read."""
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in TEXT_EXTENSIONS:
        return "text"
    if ext in JSONL_EXTENSIONS:
        return "jsonl"
    return None


# --------------------------------------------------------------------------- reading files


class FileItem(NamedTuple):
    """One item read from a file, before it has a did."""

    key: str
    text: str | None
    image_path: str | None
    src: dict[str, Any]
    path: str
    line: int | None


def _decode_text(data: bytes) -> str:
    """Bytes of a text file -> str; raises ValueError with a reason for binary or bad bytes."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:8192]:
        raise ValueError("binary content (NUL bytes), not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"not valid UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); re-save as UTF-8"
        ) from None


def _title(path: Path) -> str:
    return " ".join(path.stem.replace("_", " ").replace("-", " ").split())


class FileReader:
    """Turns one file's bytes into items, appending problems to ``skipped``."""

    def __init__(self, root: Path, verify_images: bool, max_text_chars: int, max_pixels: int):
        self.root = root
        self.verify_images = verify_images
        self.max_text_chars = max_text_chars
        self.max_pixels = max_pixels
        self.skipped: list[Skipped] = []

    def check_image(self, path: Path, data: bytes | None = None) -> str | None:
        """None if the image decodes (or verification is off), else the reason it does not."""
        if not self.verify_images:
            return None
        try:
            if data is None:
                data = read_bytes(path)  # module global: a patched opener is seen
            load_image(data, name=str(path), max_pixels=self.max_pixels, max_side=None)
        except ImageLoadError as e:
            return e.problem
        except OSError as e:
            return os_reason(e)
        return None

    def image(self, path: Path, rel: str, data: bytes) -> list[FileItem]:
        reason = self.check_image(path, data)
        if reason:
            self.skipped.append(Skipped(str(path), reason))
            return []
        return [FileItem(rel, None, str(path), {"path": rel}, str(path), None)]

    def text(self, path: Path, rel: str, data: bytes) -> list[FileItem]:
        try:
            body = _decode_text(data).strip()
        except (ValueError, UnicodeDecodeError) as e:
            self.skipped.append(Skipped(str(path), str(e)))
            return []
        if not body:
            self.skipped.append(Skipped(str(path), "no text (only whitespace)"))
            return []
        title = _title(path)
        truncated = len(body) > self.max_text_chars
        text = f"{title}\n{body[: self.max_text_chars]}" if title else body[: self.max_text_chars]
        src = {"path": rel, "title": title, "truncated": truncated}
        return [FileItem(rel, text, None, src, str(path), None)]

    def jsonl(self, path: Path, rel: str, f: BinaryIO, hasher: Any = None) -> list[FileItem]:
        """Items of a jsonl file, streamed from ``f`` one capped line at a time (``hasher`` is
        fed every byte). Every bad line is reported with its number and read on past."""
        from mmembed.data.mbeir import iter_lines, parse_json_line, too_long

        items: list[FileItem] = []
        first_line: dict[str, int] = {}
        for lineno, raw, n in iter_lines(f, hasher=hasher):
            where = f"{path}:{lineno}"
            if raw is None:
                self.skipped.append(Skipped(where, too_long(n)))
                continue
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                self.skipped.append(Skipped(where, f"not UTF-8 (byte 0x{raw[e.start]:02x})"))
                continue
            try:
                obj = parse_json_line(line)
            except ValueError as e:
                self.skipped.append(Skipped(where, str(e)))
                continue
            item = self.record(path, rel, lineno, obj, first_line)
            if item is not None:
                items.append(item)
        return items

    def record(
        self, path: Path, rel: str, lineno: int, obj: Any, first_line: dict[str, int]
    ) -> FileItem | None:
        """One parsed jsonl record -> an item, or None (reported) when it cannot be one."""
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            self.skipped.append(Skipped(where, f"expected a JSON object, got {type(obj).__name__}"))
            return None
        text = obj.get("txt", obj.get("text"))
        image = obj.get("img_path", obj.get("image"))
        if not isinstance(text, (str, type(None))) or not isinstance(image, (str, type(None))):
            self.skipped.append(
                Skipped(where, "'text'/'txt' and 'image'/'img_path' must be strings")
            )
            return None
        text = (text or "").strip()[: self.max_text_chars] or None
        if not text and not image:
            self.skipped.append(Skipped(where, "record has neither text nor an image"))
            return None
        image_path = None
        if image:
            resolved = self.resolve(path, image)
            if resolved is None:
                self.skipped.append(
                    Skipped(where, f"image {image!r} not found next to the jsonl or under the root")
                )
                return None
            reason = self.check_image(resolved)
            if reason:
                self.skipped.append(Skipped(where, f"image {image!r}: {reason}"))
                return None
            image_path = str(resolved)
        rid = obj.get("did", obj.get("id"))
        if rid is not None and not isinstance(rid, (str, int)) or isinstance(rid, bool):
            self.skipped.append(Skipped(where, "'did'/'id' must be a string or an integer"))
            return None
        rid = None if rid is None else str(rid)
        if rid is not None and rid in first_line:
            self.skipped.append(
                Skipped(where, f"duplicate id {rid!r} (first on line {first_line[rid]})")
            )
            return None
        if rid is not None:
            first_line[rid] = lineno
        key = f"{rel}#{rid}" if rid is not None else f"{rel}#L{lineno}"
        src = {"path": rel, "line": lineno, **({"id": rid} if rid is not None else {})}
        return FileItem(key, text, image_path, src, str(path), lineno)

    def resolve(self, jsonl_path: Path, image: str) -> Path | None:
        p = Path(image)
        if p.is_absolute():
            return p if _is_file(p) else None
        for base in (jsonl_path.parent, self.root):
            if _is_file(base / p):
                return base / p
        return None


def _is_file(p: Path) -> bool:
    """``p.is_file()`` that is False, not an error, for names too long or with NUL bytes."""
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False
