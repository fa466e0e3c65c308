"""The search library: incremental and resumable folder indexing, bad files, queries, and which
files may be served. Uses the transparent ColourEmbedder so results can be checked exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmembed.data.images import ImageLoadError
from mmembed.search.library import Library, LibraryError, update_library
from mmembed.search.query import QueryError, Searcher
from mmembed.search.store import ShardStore
from mmembed.testing.colour_embedder import ColourEmbedder, draw_corpus


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    draw_corpus(tmp_path / "photos")
    return tmp_path / "photos"


def _names(hits) -> list[str]:
    return [os.path.basename(h.entry.source) for h in hits]


def _stored(lib_path: Path) -> dict[str, np.ndarray]:
    """did -> stored fp16 embedding, read back from the shards."""
    lib = Library.open(lib_path)
    store = ShardStore(lib_path / "shards", lib.fingerprint)
    rows = store.load({e.key for e in lib.entries.values()})
    return {e.did: rows[e.key] for e in lib.entries.values()}


def test_index_then_search_by_text_image_and_both(photos: Path, tmp_path: Path) -> None:
    emb = ColourEmbedder()
    report = update_library(tmp_path / "lib", [photos], emb)
    assert (report.files_new, report.items, report.encoded, report.reused) == (6, 6, 6, 0)
    s = Searcher(Library.open(tmp_path / "lib"), emb)
    assert set(_names(s.search("something red", k=2))) == {"red.png", "red-note.txt"}
    assert _names(s.search(image=photos / "blue.png", k=1)) == ["blue.png"]
    # composed: a green image plus the word "red" ranks the two colours' items above the rest
    top4 = set(_names(s.search("red", Image.open(photos / "green.png"), k=4)))
    assert top4 == {"red.png", "red-note.txt", "green.png", "green-note.txt"}
    hits = s.search("yellow", k=50)
    assert len(hits) == 6 and [h.rank for h in hits] == list(range(1, 7))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_rerun_encodes_only_new_changed_and_drops_removed(photos: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    update_library(lib, [photos], ColourEmbedder())
    again = update_library(lib, [], ColourEmbedder())  # no folders given: refresh the known ones
    assert (again.encoded, again.reused, again.files_unchanged) == (0, 6, 6)

    (photos / "green.png").unlink()
    (photos / "notes" / "red-note.txt").write_text(
        "now this note is about yellow", encoding="utf-8"
    )
    Image.new("RGB", (30, 30), (250, 250, 250)).save(photos / "white.png")
    emb = ColourEmbedder()
    r = update_library(lib, [], emb)
    assert (r.files_new, r.files_changed, r.files_removed, r.files_unchanged) == (1, 1, 1, 4)
    assert (r.encoded, emb.encoded, r.items) == (2, 2, 6)
    s = Searcher(Library.open(lib), emb)
    assert "green.png" not in _names(s.search("green", k=6))
    assert _names(s.search("white", k=1)) == ["white.png"]
    assert set(_names(s.search("yellow", k=2))) == {"yellow.png", "red-note.txt"}


def test_crash_mid_run_resumes_with_identical_embeddings(photos: Path, tmp_path: Path) -> None:
    for i in range(6):
        Image.new("RGB", (20, 20), (40 * i, 200 - 30 * i, 90)).save(photos / f"extra{i}.png")
    crashing = ColourEmbedder(fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        update_library(tmp_path / "lib", [photos], crashing, batch_size=2)
    assert not Library.exists(tmp_path / "lib")  # nothing committed as searchable yet ...
    emb = ColourEmbedder()
    r = update_library(tmp_path / "lib", [photos], emb, batch_size=2)
    # ... but what was encoded before the crash was kept: 2 whole batches, and the first item
    # of the batch the crash began in (a failing batch is bisected, mmembed.index.embedding_shards)
    assert r.reused == 5 and r.encoded == 7 and emb.encoded == 7
    update_library(tmp_path / "ref", [photos], ColourEmbedder(), batch_size=2)
    resumed, reference = _stored(tmp_path / "lib"), _stored(tmp_path / "ref")
    assert resumed.keys() == reference.keys() and len(resumed) == 12
    for did, row in reference.items():
        np.testing.assert_array_equal(resumed[did], row)


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from mmembed.search.library import update_library
    from mmembed.testing.colour_embedder import ColourEmbedder

    class Slow(ColourEmbedder):
        def encode_candidates(self, items, **kw):
            time.sleep(0.15)
            return super().encode_candidates(items, **kw)

    update_library(sys.argv[1], [sys.argv[2]], Slow(), batch_size=1)
    """
)


def test_sigkill_then_rerun_resumes(photos: Path, tmp_path: Path) -> None:
    for i in range(14):
        Image.new("RGB", (16, 16), (10 * i, 90, 250 - 10 * i)).save(photos / f"k{i:02d}.png")
    lib = tmp_path / "lib"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(lib), str(photos)])
    deadline = time.monotonic() + 60
    shards = lib / "shards"
    while time.monotonic() < deadline and proc.poll() is None:
        if shards.is_dir() and sum(len(list(d.glob("*.npy"))) for d in shards.iterdir()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the indexer finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    emb = ColourEmbedder()
    r = update_library(lib, [photos], emb)
    assert r.reused >= 3 and r.reused + r.encoded == 20 and emb.encoded == r.encoded
    update_library(tmp_path / "ref", [photos], ColourEmbedder())
    resumed, reference = _stored(lib), _stored(tmp_path / "ref")
    assert resumed.keys() == reference.keys()
    for did, row in reference.items():
        np.testing.assert_array_equal(resumed[did], row)


def test_bad_files_are_reported_and_skipped(photos: Path, tmp_path: Path) -> None:
    (photos / "empty.png").write_bytes(b"")
    good = (photos / "red.png").read_bytes()
    (photos / "truncated.png").write_bytes(good[: len(good) // 2])
    (photos / "binary.txt").write_bytes(b"\x00\x01\x02garbage")

    class FailsOnBlue(ColourEmbedder):  # an image that goes bad between scan and encode
        def encode_candidates(self, items, **kw):
            for it in items:
                if it.image is not None and "blue" in str(it.image):
                    raise ImageLoadError(it.image, "cannot decode image (simulated)")
            return super().encode_candidates(items, **kw)

    r = update_library(tmp_path / "lib", [photos], FailsOnBlue(), batch_size=4)
    skipped = dict(r.skipped)
    assert set(skipped) == {str(photos / n) for n in ("empty.png", "truncated.png", "binary.txt")}
    assert "0 bytes" in skipped[str(photos / "empty.png")]
    assert [p for p, _ in r.failed] == [str(photos / "blue.png")]
    assert "simulated" in r.failed[0][1]
    assert r.items == 5  # the other items of blue's batch were encoded one by one
    lib = Library.open(tmp_path / "lib")
    assert len(lib.skipped) == 4 and len(lib) == 5


def test_model_change_reencodes_everything(photos: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    update_library(lib, [photos], ColourEmbedder())
    other = ColourEmbedder(salt="retrained")
    r = update_library(lib, [], other)
    assert r.model_changed and r.encoded == 6 and r.reused == 0
    assert len(list((lib / "shards").iterdir())) == 1  # the old model's shards are gone
    with pytest.raises(LibraryError, match="same --model"):
        Searcher(Library.open(lib), ColourEmbedder())
    assert len(Searcher(Library.open(lib), other).search("red", k=3)) == 3


def test_roots_add_forget_nested_and_missing(photos: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    more = tmp_path / "more"
    draw_corpus(more, colours=("white", "black"))
    update_library(lib, [photos], ColourEmbedder())
    r = update_library(lib, [more, photos / "notes"], ColourEmbedder())  # notes is inside photos
    state = Library.open(lib)
    assert [str(p) for p in state.roots] == sorted([str(photos), str(more)])
    assert r.items == 10 and len({e.did.split(":")[0] for e in state.entries.values()}) == 2
    with pytest.raises(LibraryError, match="not an indexed folder"):
        update_library(lib, [], ColourEmbedder(), forget=[tmp_path / "nowhere"])
    r = update_library(lib, [], ColourEmbedder(), forget=[more])
    assert r.items == 6 and r.files_removed == 4
    (photos / "notes" / "red-note.txt").unlink()
    os.rename(photos, tmp_path / "moved")
    with pytest.raises(LibraryError, match="--forget"):
        update_library(lib, [], ColourEmbedder())


def test_concurrent_update_is_refused(photos: Path, tmp_path: Path) -> None:
    import fcntl

    (tmp_path / "lib").mkdir()
    with open(tmp_path / "lib" / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(LibraryError, match="another `mmembed index`"):
            update_library(tmp_path / "lib", [photos], ColourEmbedder())


def test_queries_are_checked(photos: Path, tmp_path: Path) -> None:
    update_library(tmp_path / "lib", [photos], ColourEmbedder())
    s = Searcher(Library.open(tmp_path / "lib"), ColourEmbedder())
    with pytest.raises(QueryError, match="empty query"):
        s.search("   ")
    with pytest.raises(QueryError, match="between 1 and"):
        s.search("red", k=0)
    with pytest.raises(LibraryError, match="run `mmembed index"):
        Library.open(tmp_path / "missing")


def test_only_indexed_files_inside_roots_are_servable(photos: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    (photos / "link.png").symlink_to(outside)  # leaves the root: reported, not indexed ...
    (photos / "private.key").write_text("not indexed")
    r = update_library(tmp_path / "lib", [photos], ColourEmbedder())
    lib = Library.open(tmp_path / "lib")
    assert "link.png" not in {os.path.basename(e.source) for e in lib.entries.values()}
    assert any(
        p.endswith("link.png") and "outside the indexed folder" in why for p, why in r.skipped
    )
    assert lib.resolve_file(str(photos / "red.png")) == (photos / "red.png").resolve()
    refused = {
        str(photos / "link.png"): "outside the indexed folders",  # ... and never served
        str(outside): "outside the indexed folders",
        str(photos / ".." / "secret.png"): "outside the indexed folders",
        str(photos / "notes" / ".." / ".." / "secret.png"): "outside the indexed folders",
        "/etc/passwd": "outside the indexed folders",
        "photos/red.png": "only absolute paths",
        str(photos / "private.key"): "not an indexed file",
        "": "empty",
    }
    for requested, why in refused.items():
        with pytest.raises(PermissionError, match=why):
            lib.resolve_file(requested)


def test_follow_links_indexes_and_serves_what_links_reach(photos: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (8, 8), (0, 0, 255)).save(outside)
    (photos / "link.png").symlink_to(outside)
    update_library(tmp_path / "lib", [photos], ColourEmbedder(), follow_links=True)
    lib = Library.open(tmp_path / "lib")
    assert "link.png" in {os.path.basename(e.source) for e in lib.entries.values()}
    assert lib.resolve_file(str(photos / "link.png")) == outside.resolve()
    with pytest.raises(PermissionError, match="not an indexed file"):
        lib.resolve_file("/etc/passwd")
    r = update_library(tmp_path / "lib", [], ColourEmbedder())  # a refresh keeps the choice
    assert r.files_removed == 0 and Library.open(tmp_path / "lib").state["follow_links"]
    r = update_library(tmp_path / "lib", [], ColourEmbedder(), follow_links=False)
    assert r.files_removed == 1


def test_empty_folder_gives_an_empty_searchable_index(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = update_library(tmp_path / "lib", [tmp_path / "empty"], ColourEmbedder())
    assert r.items == 0 and r.encoded == 0
    assert Searcher(Library.open(tmp_path / "lib"), ColourEmbedder()).search("red") == []


def test_open_searcher_picks_up_a_reindex(photos: Path, tmp_path: Path) -> None:
    emb = ColourEmbedder()
    update_library(tmp_path / "lib", [photos], emb)
    s = Searcher(Library.open(tmp_path / "lib"), emb)
    assert not s.refresh()  # nothing changed
    Image.new("RGB", (30, 30), (250, 250, 250)).save(photos / "white.png")
    (photos / "red.png").unlink()
    update_library(tmp_path / "lib", [], emb)
    assert "white.png" not in _names(s.search("white", k=7))  # still the loaded index
    assert s.refresh(min_interval=0) and len(s.library) == 6
    assert _names(s.search("white", k=1)) == ["white.png"]
    assert "red.png" not in _names(s.search("red", k=6))
    s._load_model = lambda spec: ColourEmbedder(salt="other model")  # what a reload loads
    update_library(tmp_path / "lib", [], ColourEmbedder(salt="other model"))
    assert s.refresh() and len(s.search("red", k=6)) == 6  # follows the new model
    # (a model that cannot load is refused: tests/test_cli_fixes.py)


def test_touched_but_unchanged_files_are_not_reencoded(photos: Path, tmp_path: Path) -> None:
    update_library(tmp_path / "lib", [photos], ColourEmbedder())
    for p in [photos / "red.png", photos / "notes" / "red-note.txt"]:
        p.write_bytes(p.read_bytes())  # same bytes, new mtime
        os.utime(p, ns=(10**18, 10**18))
    emb = ColourEmbedder()
    r = update_library(tmp_path / "lib", [], emb)
    assert (r.files_changed, r.files_unchanged, r.encoded, emb.encoded) == (0, 6, 0, 0)


def test_temp_files_of_a_killed_run_are_removed(photos: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    update_library(lib, [photos], ColourEmbedder())
    orphans = [lib / ".state.json.4242.tmp", lib / "scans" / "100.json.tmp"]
    for p in orphans:
        p.write_text("{")
    update_library(lib, [], ColourEmbedder())
    assert not any(p.exists() for p in orphans)
    assert Library.open(lib).entries  # the committed state is untouched


def test_npz_shards_of_earlier_versions_are_converted_not_reencoded(
    photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A library written before the shared shard format (``NNNNNN.npz`` with ``keys`` and fp16
    ``emb``) keeps its embeddings: the next update converts the shards and encodes nothing."""
    from mmembed.index.embedding_shards import list_shards, read_shard, remove_shard

    lib = tmp_path / "lib"
    update_library(lib, [photos], ColourEmbedder(), batch_size=4)  # 6 items: 2 shards
    before = _stored(lib)
    (folder,) = (lib / "shards").iterdir()
    for n, stem in list_shards(folder):  # rewrite them as the earlier mmembed wrote them
        emb, keys = read_shard(stem, mmap=False)
        np.savez(folder / f"{n:06d}.npz", keys=np.asarray(keys, dtype=str), emb=emb)
        remove_shard(stem)
    (folder / "000009.npz").write_bytes(b"PK\x03\x04 not a zip")  # and one damaged shard
    assert sorted(p.name for p in folder.iterdir()) == ["000000.npz", "000001.npz", "000009.npz"]
    emb = ColourEmbedder()
    with caplog.at_level("WARNING"):
        r = update_library(lib, [], emb)
    assert (r.reused, r.encoded, emb.encoded) == (6, 0, 0)
    assert "converted 2 embedding shard(s) from the .npz format" in caplog.text
    assert "000009.npz: unreadable embedding shard of an earlier mmembed" in caplog.text
    assert not list(folder.glob("*.npz")) and len(list_shards(folder)) == 2
    after = _stored(lib)
    assert after.keys() == before.keys()
    for did, row in before.items():
        np.testing.assert_array_equal(after[did], row)


def test_one_item_batches_record_a_bad_item_and_go_on(photos: Path, tmp_path: Path) -> None:
    """--batch-size 1: a chunk of one that fails is a bad item, not a broken model, so the run
    records it and goes on (the all-fail stop applies to chunks of two or more)."""

    class FailsOnGreen(ColourEmbedder):
        def encode_candidates(self, items, **kw):
            if any(it.image is not None and "green" in str(it.image) for it in items):
                raise RuntimeError("the model cannot take this one\n(traceback detail)")
            return super().encode_candidates(items, **kw)

    r = update_library(tmp_path / "lib", [photos], FailsOnGreen(), batch_size=1)
    assert r.items == 5 and r.failed == [
        (
            str(photos / "green.png"),
            "cannot encode: RuntimeError: the model cannot take this one (traceback detail)",
        )
    ]
