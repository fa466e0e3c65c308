"""The one shard format and failure policy (mmembed.index.embedding_shards): a shard reads back
what was written, a half-written one does not count, and a failing batch is bisected down to the
bad item, which is recorded while the rest is encoded; a chunk where everything fails raises."""

from __future__ import annotations

import numpy as np
import pytest

from mmembed.index.embedding_shards import (
    EncodeEntry,
    encode_isolating,
    has_shard,
    list_shards,
    read_shard,
    read_skipped,
    remove_shard,
    shard_stem,
    write_shard,
)


class Picky:
    """An encoder whose rows are (value, 1): it refuses records named in ``bad`` (a whole call
    fails if any of its records is bad) and counts its calls."""

    dim = 2
    fingerprint = "picky"

    def __init__(self, bad=(), error=ValueError) -> None:
        self.bad, self.error, self.calls = set(bad), error, 0

    def _rows(self, records):
        self.calls += 1
        hit = [r for r in records if r in self.bad]
        if hit:
            raise self.error(f"cannot take {hit[0]}\nsecond line of the message")
        return np.array([[float(r), 1.0] for r in records], np.float32)  # (n, 2)

    def encode_candidates(self, records, **kw):
        return self._rows(records)

    def encode_queries(self, records, *, instructions=None, **kw):
        assert instructions is not None and len(instructions) == len(records)
        return self._rows(records)


def _entries(n: int) -> list[EncodeEntry]:
    return [EncodeEntry(f"id{i}", i) for i in range(n)]


def test_shard_round_trip_and_incomplete_shards(tmp_path) -> None:
    emb = np.arange(12, dtype=np.float32).reshape(4, 3) / 7  # (4, 3)
    stem = shard_stem(tmp_path, 3)
    write_shard(stem, emb, ["a", "b", "c", "d"], [{"id": "e", "error": "ValueError: x"}])
    got, ids = read_shard(stem)
    assert got.dtype == np.float16 and ids == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(got, emb.astype(np.float16))
    assert read_skipped(stem) == [{"id": "e", "error": "ValueError: x"}]
    # a shard whose .npy is missing (the crash came before the last rename) is not there
    write_shard(shard_stem(tmp_path, 5), emb[:1], ["z"])
    assert read_skipped(shard_stem(tmp_path, 5)) == []  # nothing failed: no .skipped.json
    assert not (tmp_path / "000005.skipped.json").exists()
    (tmp_path / "000005.npy").unlink()
    assert not has_shard(shard_stem(tmp_path, 5)) and has_shard(stem)
    assert list_shards(tmp_path) == [(3, stem)]
    assert not list(tmp_path.glob(".*.tmp"))  # every write renamed into place
    (tmp_path / "000003.ids").write_text("a\nb\n")  # ids and rows disagree
    with pytest.raises(ValueError, match="4 rows but 2 ids"):
        read_shard(stem)
    with pytest.raises(ValueError, match="line break"):
        write_shard(shard_stem(tmp_path, 6), emb[:1], ["bad\nid"])
    remove_shard(stem)
    assert list_shards(tmp_path) == [] and not list(tmp_path.glob("000003*"))


def test_bisection_isolates_the_bad_item_and_keeps_the_rest() -> None:
    enc = Picky(bad={11})
    ok, emb, bad = encode_isolating(enc, _entries(16), is_query=False)
    assert [e.id for e in ok] == [f"id{i}" for i in range(16) if i != 11]
    np.testing.assert_array_equal(emb[:, 0], [i for i in range(16) if i != 11])
    assert bad == [{"id": "id11", "error": "ValueError: cannot take 11 second line of the message"}]
    # bisection, not item by item: 1 + 2 per level of a 16-item chunk = 9 calls, not 17
    assert enc.calls == 9
    q = Picky(bad={0})
    ok, _, bad = encode_isolating(q, _entries(3), is_query=True)
    assert [e.id for e in ok] == ["id1", "id2"] and [b["id"] for b in bad] == ["id0"]


def test_any_error_is_isolated_but_a_chunk_that_all_fails_raises() -> None:
    ok, _, bad = encode_isolating(Picky(bad={2}, error=RuntimeError), _entries(4), is_query=False)
    assert len(ok) == 3 and bad[0]["error"].startswith("RuntimeError: cannot take 2")
    with pytest.raises(RuntimeError, match="every one of 3 records failed.*id0") as info:
        encode_isolating(Picky(bad={0, 1, 2}), _entries(3), is_query=False)
    assert isinstance(info.value.__cause__, ValueError)
    ok, emb, bad = encode_isolating(Picky(bad={0}), _entries(1), is_query=False)  # one item:
    assert ok == [] and emb.shape == (0, 2) and [b["id"] for b in bad] == ["id0"]  # recorded


def test_wrong_shape_from_the_encoder_is_not_taken() -> None:
    class Short(Picky):
        def encode_candidates(self, records, **kw):
            return super().encode_candidates(records)[:-1]  # one row too few

    with pytest.raises(RuntimeError, match="every one of 2 records failed.*shape"):
        encode_isolating(Short(), _entries(2), is_query=False)
