"""mmembed.data.atomic: the target is the old file or the whole new one, never a mix."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from mmembed.data.atomic import atomic_open, atomic_write_json, atomic_write_text


def test_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]


def test_failed_writer_keeps_old_file_and_removes_temp(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"v": 1})
    with pytest.raises(RuntimeError, match="boom"), atomic_open(p) as f:
        f.write('{"v": 2')  # half a document
        raise RuntimeError("boom")
    assert json.loads(p.read_text()) == {"v": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["a.json"]


def test_binary_mode_and_bad_mode(tmp_path):
    p = tmp_path / "b.bin"
    with atomic_open(p, "wb") as f:
        f.write(b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode must be"), atomic_open(p, "a"):
        pass


def _writer(path: str, n: int) -> None:
    for _i in range(50):
        atomic_write_text(path, str(n) * 10_000)


def test_concurrent_writers_never_interleave(tmp_path):
    p = tmp_path / "c.txt"
    procs = [mp.get_context("spawn").Process(target=_writer, args=(str(p), n)) for n in (1, 2)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(60)
    text = p.read_text()
    assert len(text) == 10_000 and len(set(text)) == 1
    assert [x.name for x in tmp_path.iterdir()] == ["c.txt"]
