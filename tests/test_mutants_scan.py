"""Incremental rescans: a file edited in place is read again even when its size did not change,
and a library re-encodes an image edited in place (search then finds the new picture)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from mmembed.data.corpus import scan_corpus
from mmembed.search.library import Library, update_library
from mmembed.search.query import Searcher
from mmembed.search.scan import scan_roots
from mmembed.testing.colour_embedder import ColourEmbedder, draw_corpus


def test_same_size_edit_is_read_again(tmp_path: Path, monkeypatch) -> None:
    from mmembed.data import corpus_files

    root = tmp_path / "c"
    root.mkdir()
    note = root / "note.txt"
    note.write_text("the red fox", encoding="utf-8")
    os.utime(note, ns=(1_000_000_000, 1_000_000_000))
    first = scan_corpus(root)
    assert [c.text for c in first.candidates] == ["note\nthe red fox"]
    note.write_text("the tan cat", encoding="utf-8")  # same size, new content and mtime
    os.utime(note, ns=(2_000_000_000, 2_000_000_000))
    again = scan_corpus(root, previous=first)
    assert [c.text for c in again.candidates] == ["note\nthe tan cat"]
    assert [c.did for c in again.candidates] == [c.did for c in first.candidates]  # same item

    # size and mtime both unchanged: the old reading is reused without opening the file
    def unread(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(corpus_files, "read_bytes", unread)
    reused = scan_corpus(root, previous=again)
    assert [c.text for c in reused.candidates] == ["note\nthe tan cat"] and not reused.skipped


def test_image_edited_in_place_changes_its_content_key(tmp_path: Path) -> None:
    root = tmp_path / "p"
    draw_corpus(root, colours=("red", "blue"))
    ids = {str(root): 20}
    keys = {
        os.path.basename(e.source): e.key for e in scan_roots([str(root)], root_ids=ids).entries
    }
    Image.new("RGB", (48, 48), (250, 250, 250)).save(root / "blue.png")  # same path, new picture
    after = {
        os.path.basename(e.source): e.key for e in scan_roots([str(root)], root_ids=ids).entries
    }
    assert after["blue.png"] != keys["blue.png"]
    assert {n: k for n, k in after.items() if n != "blue.png"} == {
        n: k for n, k in keys.items() if n != "blue.png"
    }


def test_library_search_sees_an_image_edited_in_place(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    draw_corpus(photos)
    lib = tmp_path / "lib"
    update_library(lib, [photos], ColourEmbedder())
    Image.new("RGB", (48, 48), (250, 250, 250)).save(photos / "blue.png")  # now a white picture
    emb = ColourEmbedder()
    r = update_library(lib, [], emb)
    assert (r.files_changed, r.encoded, emb.encoded) == (1, 1, 1)
    s = Searcher(Library.open(lib), emb)
    assert [os.path.basename(h.entry.source) for h in s.search("white", k=1)] == ["blue.png"]
    assert "blue.png" not in [os.path.basename(h.entry.source) for h in s.search("blue", k=1)]


def test_snippet_cuts_only_past_the_limit() -> None:
    from mmembed.search.scan import LibraryEntry

    def snip(text: str) -> str | None:
        return LibraryEntry("1:1", "/x", "text", text, None, "k").snippet(5)

    assert snip("abcde") == "abcde"  # exactly the limit: kept whole
    assert snip("abcdef") == "abcd…"  # one over: cut to the limit, ellipsis included
    assert snip("a  b\n\nc") == "a b c"  # whitespace runs folded before measuring
