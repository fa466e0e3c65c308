"""Local corpora: a folder of images, text and jsonl records becomes Candidates with stable,
collision-free dids; every kind of bad file is reported and skipped; rescans are incremental."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from data_fixtures import noise, png_header_only
from PIL import Image
from typer.testing import CliRunner

from mmembed.data import corpus, corpus_files
from mmembed.data.cli import app
from mmembed.data.corpus import CorpusScan, assign_dids, diff_scans, scan_corpus
from mmembed.data.records import Modality, hash_did

EXTS = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]
PIL_FORMAT = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF"}


def _img(path: Path, color=(200, 30, 30), size=(16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix[1:].lower()
    Image.new("RGB", size, color).save(path, PIL_FORMAT.get(ext, ext.upper()))
    return path


def make_good(root: Path) -> None:
    for i, ext in enumerate(EXTS):
        _img(root / "photos" / f"p{i}.{ext}", (30 * i, 100, 50))
    (root / "notes").mkdir()
    (root / "notes" / "shopping_list.txt").write_text("eggs\nmilk\n", encoding="utf-8")
    (root / "notes" / "trip-to-kyoto.md").write_text(
        "# Kyoto\n\nTemples ⛩ and tea.", encoding="utf-8"
    )
    (root / "records.jsonl").write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "did": "9:17",
                        "txt": "a cat",
                        "img_path": "photos/p2.png",
                        "modality": "image,text",
                    }
                ),
                json.dumps({"text": "just text"}),
                json.dumps({"image": "photos/p0.jpg"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (root / "README.pdf").write_bytes(b"%PDF-1.4 not read")
    (root / ".hidden").mkdir()
    _img(root / ".hidden" / "secret.png")


def test_folder_becomes_candidates_with_sources(tmp_path):
    make_good(tmp_path)
    scan = scan_corpus(tmp_path)
    assert scan.skipped == []
    assert scan.ignored == 1  # README.pdf; hidden folders are not walked
    by_src = {
        json.loads(c.src_content)["path"] + str(json.loads(c.src_content).get("line", "")): c
        for c in scan.candidates
    }
    assert len(scan.candidates) == len(EXTS) + 2 + 3
    for i, ext in enumerate(EXTS):
        c = by_src[f"photos/p{i}.{ext}"]
        assert c.modality is Modality.IMAGE and c.text is None
        assert Path(c.image_path).is_absolute() and Path(c.image_path).is_file()
    note = by_src["notes/shopping_list.txt"]
    assert note.text == "shopping list\neggs\nmilk" and note.modality is Modality.TEXT
    assert by_src["notes/trip-to-kyoto.md"].text.startswith("trip to kyoto\n# Kyoto")
    composed = by_src["records.jsonl1"]
    assert composed.modality is Modality.IMAGE_TEXT and composed.text == "a cat"
    assert composed.image_path == str(tmp_path.resolve() / "photos/p2.png")
    assert json.loads(composed.src_content)["id"] == "9:17"  # the record's own id is kept
    assert by_src["records.jsonl3"].modality is Modality.IMAGE
    # sources: did -> absolute file and jsonl line
    src = scan.sources[by_src["records.jsonl2"].did]
    assert src.path == str(tmp_path.resolve() / "records.jsonl") and src.line == 2
    assert set(scan.fingerprints) == {
        *(f"photos/p{i}.{e}" for i, e in enumerate(EXTS)),
        "notes/shopping_list.txt",
        "notes/trip-to-kyoto.md",
        "records.jsonl",
    }
    fp = scan.fingerprints["notes/shopping_list.txt"]
    assert fp.size == 10 and len(fp.sha256) == 64 and fp.mtime_ns > 0


def test_dids_are_stable_unique_and_hashable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "b"
    make_good(a)
    shutil.copytree(a, b, symlinks=True)
    s1, s2, s3 = scan_corpus(a), scan_corpus(a), scan_corpus(b)
    dids = [c.did for c in s1.candidates]
    assert len(set(dids)) == len(dids)
    assert dids == [c.did for c in s2.candidates] == [c.did for c in s3.candidates]  # moved root
    assert all(d.startswith("99:") and hash_did(d) // 10_000_000 == 99 for d in dids)
    other = scan_corpus(a, dataset_id=42)
    assert all(c.did.startswith("42:") for c in other.candidates)


def test_collisions_resolve_deterministically(monkeypatch):
    monkeypatch.setattr(corpus, "_slot", lambda key, attempt: (len(key) + attempt) % 5)
    keys = ["aa", "bb", "cc"]  # all land on slot 2 first, then probe 3 and 4
    first = assign_dids(keys)
    assert first == {"aa": "99:2", "bb": "99:3", "cc": "99:4"}
    assert assign_dids(list(reversed(keys))) == first  # independent of input order
    # "a0" sorts before "aa" and wants slot 2: from scratch it takes it ...
    assert assign_dids(["a0", *keys])["a0"] == "99:2"
    # ... but with the earlier assignment pinned, existing dids stay and the newcomer probes on
    again = assign_dids(["a0", *keys], pinned=first)
    assert {k: again[k] for k in keys} == first and again["a0"] == "99:0"
    monkeypatch.setattr(corpus, "DID_BASE", 5)
    with pytest.raises(ValueError, match="more than 5 items"):
        assign_dids([f"k{i}" for i in range(6)])


def _bad_folder(root: Path) -> dict[str, str]:
    """Plant every kind of bad file; returns {path relative to root: expected reason fragment}."""
    good = io.BytesIO()
    noise().save(good, "PNG")
    data = good.getvalue()
    (root / "bad").mkdir(parents=True)
    (root / "bad/truncated.png").write_bytes(data[: len(data) // 2])
    (root / "bad/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage " * 20)
    (root / "bad/empty.png").write_bytes(b"")
    (root / "bad/empty.txt").write_bytes(b"")
    (root / "bad/blank.md").write_text("   \n\n")
    (root / "bad/latin1.txt").write_bytes("café crème".encode("latin-1"))
    (root / "bad/binary.txt").write_bytes(b"\x00\x01\x02binary")
    (root / "bad/bomb.png").write_bytes(png_header_only(20_000, 20_000))
    (root / "bad/loop").symlink_to("..")  # a folder link back up: a symlink loop
    (root / "bad/self.png").symlink_to("self.png")  # a link to itself
    (root / "bad/dangling.jpg").symlink_to("missing.jpg")
    (root / "bad/records.jsonl").write_text(
        '{"text": "ok line"}\n{not json\n[1, 2]\n{"image": "nowhere.png"}\n{"text": 5}\n{}\n'
        '{"id": "x", "text": "one"}\n{"id": "x", "text": "two"}\n{"image": "truncated.png"}\n',
        encoding="utf-8",
    )
    _img(root / "fine.png")
    return {
        "bad/truncated.png": "truncated",
        "bad/corrupt.jpg": "",
        "bad/empty.png": "empty file (0 bytes)",
        "bad/empty.txt": "empty file (0 bytes)",
        "bad/blank.md": "no text",
        "bad/latin1.txt": "not valid UTF-8 text (byte 0xe9 at offset 3)",
        "bad/binary.txt": "binary content",
        "bad/bomb.png": "decompression bomb",
        "bad/loop": "symlink loop",
        "bad/self.png": "symlink loop",
        "bad/dangling.jpg": "broken symlink",
        "bad/records.jsonl:2": "malformed JSON",
        "bad/records.jsonl:3": "expected a JSON object",
        "bad/records.jsonl:4": "not found",
        "bad/records.jsonl:5": "must be strings",
        "bad/records.jsonl:6": "neither text nor an image",
        "bad/records.jsonl:8": "duplicate id 'x' (first on line 7)",
        "bad/records.jsonl:9": "truncated",
    }


def test_bad_files_are_reported_and_skipped(tmp_path):
    expected = _bad_folder(tmp_path)
    scan = scan_corpus(tmp_path)
    root = str(tmp_path.resolve())
    got = {s.path[len(root) + 1 :]: s.reason for s in scan.skipped}
    assert set(got) == set(expected), got
    for rel, fragment in expected.items():
        assert fragment in got[rel], (rel, got[rel])
    texts = sorted(c.text or "" for c in scan.candidates)
    assert texts == ["", "ok line", "one"]  # fine.png plus the two good jsonl lines


def test_images_are_not_decoded_when_verification_is_off(tmp_path):
    _bad_folder(tmp_path)
    scan = scan_corpus(tmp_path, verify_images=False)
    paths = {Path(c.image_path).name for c in scan.candidates if c.image_path}
    assert {"truncated.png", "corrupt.jpg", "bomb.png", "fine.png"} <= paths
    assert not any(s.path.endswith("bomb.png") for s in scan.skipped)


def test_unreadable_file_via_patched_opener(tmp_path, monkeypatch):
    _img(tmp_path / "ok.png")
    _img(tmp_path / "locked.png")
    (tmp_path / "locked.txt").write_text("secret")
    real = corpus_files.read_bytes

    def deny(path):
        if path.name.startswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(corpus_files, "read_bytes", deny)
    scan = scan_corpus(tmp_path)
    assert sorted((Path(s.path).name, s.reason) for s in scan.skipped) == [
        ("locked.png", "permission denied (make it readable)"),
        ("locked.txt", "permission denied (make it readable)"),
    ]
    assert [Path(c.image_path).name for c in scan.candidates] == ["ok.png"]


def test_unreadable_file_with_real_permissions():
    """chmod 000 for real. Root reads anything, so as root the scan runs in a forked child that
    drops to the unprivileged user 'nobody' (uid 65534) first."""
    root = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        _img(root / "ok.png")
        (root / "closed.txt").write_text("secret")
        os.chmod(root / "closed.txt", 0)
        (root / "shut").mkdir()
        (root / "shut/inner.txt").write_text("hidden")
        os.chmod(root / "shut", 0)
        Image.init()  # load every Pillow plugin now: the child may not read site-packages
        if os.geteuid() != 0:
            scan = scan_corpus(root)
        else:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: drop privileges, scan, send the result back
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    payload = json.dumps(scan_corpus(root).to_json())
                except BaseException as e:  # noqa: BLE001
                    payload = json.dumps({"error": repr(e)})
                os.write(w, payload.encode())
                os._exit(0)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                obj = json.loads(f.read())
            os.waitpid(pid, 0)
            assert "error" not in obj, obj
            scan = CorpusScan.from_json(obj)
        reasons = {Path(s.path).name: s.reason for s in scan.skipped}
        assert reasons == {
            "closed.txt": "permission denied (make it readable)",
            "shut": "permission denied (make it readable)",
        }
        assert [Path(c.image_path).name for c in scan.candidates] == ["ok.png"]
    finally:
        os.chmod(root / "shut", 0o755)
        shutil.rmtree(root)


def test_text_is_capped_and_titled(tmp_path):
    (tmp_path / "Long_Report-2024.txt").write_text("word " * 2000, encoding="utf-8")
    (tmp_path / "utf16.txt").write_bytes("hello ünïcode".encode("utf-16"))
    scan = scan_corpus(tmp_path, max_text_chars=100)
    long, u16 = scan.candidates if "Long" in scan.candidates[0].text else scan.candidates[::-1]
    assert long.text.startswith("Long Report 2024\nword word") and len(long.text) <= 100 + 17
    assert json.loads(long.src_content)["truncated"] is True
    assert u16.text == "utf16\nhello ünïcode"


def test_incremental_rescan_reuses_unchanged_files(tmp_path, monkeypatch):
    make_good(tmp_path)
    first = scan_corpus(tmp_path)
    reads: list[str] = []
    real = corpus_files.read_bytes
    monkeypatch.setattr(corpus_files, "read_bytes", lambda p: reads.append(p.name) or real(p))
    (tmp_path / "notes/shopping_list.txt").write_text("eggs\nmilk\nbread\n", encoding="utf-8")
    (tmp_path / "photos/p1.jpeg").unlink()
    _img(tmp_path / "photos/new.png")
    second = scan_corpus(tmp_path, previous=first)
    assert diff_scans(first, second) == (
        ["photos/new.png"],
        ["notes/shopping_list.txt"],
        ["photos/p1.jpeg"],
    )
    assert sorted(reads) == ["new.png", "shopping_list.txt"]  # each changed file read once
    full = scan_corpus(tmp_path)  # a from-scratch scan gives the same result
    assert [c.to_json() for c in second.candidates] == [c.to_json() for c in full.candidates]
    kept = {c.did for c in first.candidates} & {c.did for c in second.candidates}
    assert len(kept) == len(first.candidates) - 1  # only the removed file's did is gone
    assert len(second.candidates_of("records.jsonl")) == 3


def test_scan_saves_and_loads(tmp_path):
    make_good(tmp_path / "c")
    _bad_folder(tmp_path / "c")
    scan = scan_corpus(tmp_path / "c")
    scan.save(tmp_path / "scan.json")
    back = CorpusScan.load(tmp_path / "scan.json")
    assert back == scan


def test_not_a_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NotADirectoryError, match="not a folder"):
        scan_corpus(tmp_path / "missing")


def test_cli_scan_lists_skipped_files(tmp_path):
    _bad_folder(tmp_path)
    out = tmp_path / "scan.json"
    res = CliRunner().invoke(
        app, ["scan", str(tmp_path), "--out", str(out)], env={"COLUMNS": "250"}
    )
    assert res.exit_code == 0, res.output
    assert "3 candidates" in res.output and "bomb.png: " in res.output
    assert res.output.count("skipped ") == 18
    assert len(CorpusScan.load(out).candidates) == 3
