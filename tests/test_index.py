"""mmembed.index.Index: exact search against numpy brute force (ties tolerated), ids, add/remove,
atomic save/load with manifest and fingerprint checks, factory strings and search parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmembed.index import Index, IndexMismatchError


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(q: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q @ x.T  # (Q, N) full matrix: the slow reference
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


def assert_knn_equal(ref_s, ref_i, s, i, tol=1e-5):
    """Same scores; same ids except inside groups of tied scores (compared as sets), where the
    last group may be cut differently by k."""
    np.testing.assert_allclose(s, ref_s, atol=tol)
    for row in range(len(ref_s)):
        rs, ri, ours = ref_s[row], list(ref_i[row]), list(i[row])
        start = 0
        while start < len(rs):
            end = start
            while end + 1 < len(rs) and abs(rs[end + 1] - rs[start]) <= tol:
                end += 1
            if end + 1 < len(rs):  # a complete group: exactly the same members
                assert set(ri[start : end + 1]) == set(ours[start : end + 1]), (row, start)
            start = end + 1


@pytest.mark.parametrize("k", [1, 7, 50])
def test_flat_matches_brute_force(k):
    rng = np.random.default_rng(0)
    x, q = unit(rng, 500, 24), unit(rng, 40, 24)
    x[10] = x[20]  # exact ties
    x[30] = x[20]
    q[0] = x[20]
    ids = [f"7:{n}" for n in range(500)]
    index = Index.build(x, ids)
    s, got = index.search(q, k)
    ref_s, ref_i = brute_force(q, x, k)
    assert s.dtype == np.float32 and s.shape == (40, k)
    assert_knn_equal(ref_s, [[ids[j] for j in row] for row in ref_i], s, got)
    top = {"7:10", "7:20", "7:30"}
    assert set(got[0][:3]) == top if k >= 3 else set(got[0]) <= top


def test_l2_metric_and_chunked_queries():
    rng = np.random.default_rng(1)
    x, q = (
        rng.standard_normal((300, 16)).astype(np.float32),
        rng.standard_normal((33, 16)).astype(np.float32),
    )
    index = Index.build(x, [f"a{n}" for n in range(300)], metric="l2", normalized=False)
    s1, i1 = index.search(q, 5)
    s2, i2 = index.search(q, 5, batch_size=4)  # many small query chunks, same answer
    assert i1 == i2 and np.allclose(s1, s2)
    d = ((q[:, None, :] - x[None]) ** 2).sum(-1)  # (Q, N)
    ref = np.argsort(d, axis=1)[:, :5]
    assert i1 == [[f"a{j}" for j in row] for row in ref]


def test_normalises_without_touching_callers_array():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 8)).astype(np.float32) * 3
    before = x.copy()
    index = Index.build(x, [str(n) for n in range(50)])
    assert np.array_equal(x, before)
    s, _ = index.search(x[:4] * 10, 1)
    np.testing.assert_allclose(s[:, 0], 1.0, atol=1e-5)  # cosine of a vector with itself


def test_id_modes():
    rng = np.random.default_rng(3)
    x = unit(rng, 20, 8)
    assert Index.build(x, [f"2:{n}" for n in range(20)]).id_mode == "mbeir"
    t = Index.build(x, [f"img/{n}.png" for n in range(20)])
    assert t.id_mode == "table"
    assert t.search(x[5], 1)[1] == [["img/5.png"]]
    with pytest.raises(ValueError, match="duplicate id"):
        Index.build(x[:2], ["a", "a"])
    m = Index.build(x[:2], ["1:1", "1:2"])
    with pytest.raises(ValueError, match="not an M-BEIR did"):
        m.add(x[2:3], ["photo.jpg"])
    with pytest.raises(ValueError, match="already in the index"):
        m.add(x[2:3], ["1:1"])


def test_add_remove_and_readd():
    rng = np.random.default_rng(4)
    x = unit(rng, 100, 12)
    index = Index.build(x[:60], [f"d{n}" for n in range(60)])
    index.add(x[60:], [f"d{n}" for n in range(60, 100)])
    assert len(index) == 100
    assert index.search(x[80], 1)[1] == [["d80"]]
    assert index.remove(["d80", "d81", "nope"]) == 2
    assert len(index) == 98
    _, got = index.search(x[80:82], 98)
    assert all("d80" not in r and "d81" not in r for r in got)
    index.add(x[80:81], ["d80"])
    assert index.search(x[80], 1)[1] == [["d80"]]


def test_hnsw_remove_uses_tombstones_that_survive_save(tmp_path):
    rng = np.random.default_rng(5)
    x = unit(rng, 200, 16)
    index = Index.build(x, [f"5:{n}" for n in range(200)], factory="HNSW16")
    assert index.remove(["5:3"]) == 1
    assert len(index) == 199
    _, got = index.search(x[3], 5)
    assert "5:3" not in got[0] and len(got[0]) == 5
    index.save(tmp_path / "h")
    again = Index.load(tmp_path / "h")
    assert len(again) == 199
    assert "5:3" not in again.search(x[3], 5)[1][0]


def test_k_larger_than_index():
    rng = np.random.default_rng(6)
    x = unit(rng, 3, 4)
    s, got = Index.build(x, ["a", "b", "c"]).search(x[:1], 5)
    assert len(got[0]) == 3 and np.isneginf(s[0, 3:]).all()


def test_ivf_with_full_probe_is_exact_and_bad_params_are_clear():
    rng = np.random.default_rng(7)
    x, q = unit(rng, 2000, 16), unit(rng, 20, 16)
    ivf = Index.build(x, [str(n) for n in range(2000)], factory="IVF16,Flat")
    s, got = ivf.search(q, 10, params={"nprobe": 16})
    ref_s, ref_i = brute_force(q, x, 10)
    assert_knn_equal(ref_s, [[str(j) for j in r] for r in ref_i], s, got)
    with pytest.raises(ValueError, match="search parameters"):
        ivf.search(q, 3, params={"efSearch": 5})
    with pytest.raises(ValueError, match="index_factory"):
        Index.build(x, [str(n) for n in range(2000)], factory="NotAnIndex")


def test_save_load_manifest_and_fingerprint(tmp_path):
    rng = np.random.default_rng(8)
    x = unit(rng, 30, 8)
    index = Index.build(x, [f"0:{n}" for n in range(30)], fingerprint="a" * 64)
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert meta["dim"] == 8 and meta["count"] == 30 and meta["fingerprint"] == "a" * 64
    assert meta["factory"] == "Flat" and meta["normalized"] is True
    loaded = Index.load(tmp_path / "ix", expect_fingerprint="a" * 64)
    assert loaded.search(x[4], 1)[1] == [["0:4"]]
    with pytest.raises(IndexMismatchError, match="another model|different models|rebuild"):
        Index.load(tmp_path / "ix", expect_fingerprint="b" * 64)
    with pytest.raises(IndexMismatchError, match="not comparable"):
        loaded.search(x[:1], 1, fingerprint="b" * 64)
    with pytest.raises(IndexMismatchError, match="dimension 9"):
        loaded.search(np.ones((1, 9), np.float32), 1)
    with pytest.raises(FileNotFoundError, match="manifest"):
        Index.load(tmp_path)


def test_save_is_atomic(tmp_path, monkeypatch):
    import faiss

    rng = np.random.default_rng(9)
    x = unit(rng, 10, 4)
    Index.build(x, [f"s{n}" for n in range(10)]).save(tmp_path / "ix")
    bigger = Index.build(unit(rng, 20, 4), [f"t{n}" for n in range(20)])

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken)
    with pytest.raises(OSError):
        bigger.save(tmp_path / "ix")
    monkeypatch.undo()
    kept = Index.load(tmp_path / "ix")  # the old index is intact, no temp folders left over
    assert len(kept) == 10 and kept.search(x[0], 1)[1] == [["s0"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]
    bigger.save(tmp_path / "ix")
    assert len(Index.load(tmp_path / "ix")) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_fp16_memmap_input(tmp_path):
    rng = np.random.default_rng(10)
    x = unit(rng, 64, 8)
    np.save(tmp_path / "e.npy", x.astype(np.float16))
    mm = np.load(tmp_path / "e.npy", mmap_mode="r")
    index = Index.build(mm, [str(n) for n in range(64)])
    assert index.search(x[7], 1)[1] == [["7"]]


def test_gpu_choice_is_made_in_one_place():
    from mmembed.index import device

    n = device.num_gpus()
    assert device.resolve_gpu("auto") == n and device.resolve_gpu(False) == 0
    if n == 0:  # this machine (faiss-cpu): asking for a GPU says what to install
        with pytest.raises(RuntimeError, match="faiss-gpu"):
            device.resolve_gpu(True)
        with pytest.raises(RuntimeError, match="faiss sees 0"):
            device.resolve_gpu(2)
    rng = np.random.default_rng(11)
    x = unit(rng, 10, 4)
    assert Index.build(x, [str(i) for i in range(10)], gpu=False).search(x[3], 1)[1] == [["3"]]
