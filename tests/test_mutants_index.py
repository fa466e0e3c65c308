"""Index remove-then-re-add on an index type that cannot delete (HNSW): the re-added id must carry
its new vector only, never the old one (issue 18), in both id modes and across save/load."""

from __future__ import annotations

import numpy as np
import pytest

from mmembed.index import Index


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("factory", ["HNSW16", "Flat"])
@pytest.mark.parametrize("prefix", ["5:", "photo-"])  # M-BEIR dids (hashed labels) / table ids
def test_remove_then_readd_brings_back_only_the_new_vector(tmp_path, factory, prefix):
    rng = np.random.default_rng(12)
    x = unit(rng, 200, 16)
    ids = [f"{prefix}{n}" for n in range(200)]
    index = Index.build(x, ids, factory=factory)
    assert index.remove([ids[3], ids[7]]) == 2
    new = -x[3]  # the re-added content points the other way: cosine -1 to the old one
    index.add(new[None], [ids[3]])
    assert len(index) == 199  # 200 - 2 removed + 1 re-added

    full = {"efSearch": 400} if factory.startswith("HNSW") else None  # every vector reachable
    for ix in (index, Index.load(index.save(tmp_path / "ix"))):
        assert len(ix) == 199
        s, got = ix.search(new, 1)
        assert got == [[ids[3]]] and s[0, 0] == pytest.approx(1.0, abs=1e-5)
        # a query at the old content: the old vector is gone, so the id is not near the top
        s, got = ix.search(x[3], 199, params=full)
        assert got[0].count(ids[3]) == 1 and got[0][-1] == ids[3]
        assert s[0, -1] == pytest.approx(-1.0, abs=1e-5)
        assert ids[7] not in got[0] and len(got[0]) == 199  # still removed, every live id once
        assert len(set(got[0])) == 199


def test_removed_and_readded_twice_on_hnsw():
    rng = np.random.default_rng(13)
    x = unit(rng, 50, 8)
    ids = [f"2:{n}" for n in range(50)]
    index = Index.build(x, ids, factory="HNSW8")
    for v in (-x[0], x[0], unit(rng, 1, 8)[0]):
        index.remove([ids[0]])
        index.add(v[None], [ids[0]])
        assert len(index) == 50
        _, got = index.search(v, 1)
        assert got == [[ids[0]]]
    _, got = index.search(x[0], 50, params={"efSearch": 100})
    assert got[0].count(ids[0]) == 1  # one vector per id, whatever was removed before


def test_removing_unknown_ids_removes_nothing():
    rng = np.random.default_rng(14)
    x = unit(rng, 10, 8)
    for ids, unknown in (
        ([f"3:{n}" for n in range(10)], "3:99"),
        ([f"t{n}" for n in range(10)], "t99"),
    ):
        index = Index.build(x, ids)
        assert index.remove([unknown]) == 0 and index.remove([]) == 0
        assert len(index) == 10
