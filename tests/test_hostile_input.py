"""A hostile-input corpus, generated at test time, run through `mmembed index`, `search`,
`data validate`, `encode` and the server: no traceback; every good item indexed and found; every
bad one reported with its file (and line) and a reason a person can act on."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from mmembed.data import mbeir

DEEP = "[" * 100_000 + "]" * 100_000  # RecursionError in json.loads
LONG_INT = "1" * 5001  # ValueError: Exceeds the limit (4300 digits)
MARKUP = "see [/quote] and [bold]this[/bold] and [/yellow]"


def _png(path: Path, rgb=(200, 0, 0), size=16) -> None:
    Image.new("RGB", (size, size), rgb).save(path)


def _gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 0, 200)).save(buf, format="GIF")
    return buf.getvalue()


def hostile_folder(root: Path) -> tuple[set[str], dict[str, str]]:
    """The corpus. Returns (file names of good items, {where-suffix: reason fragment})."""
    root.mkdir(parents=True)
    _png(root / "red.png")
    (root / "note.txt").write_text("a note about apples " + MARKUP, encoding="utf-8")
    (root / "[yellow]odd[b].md").write_text("a file whose name is markup")
    records = [
        json.dumps({"text": "first good record"}),
        DEEP,
        '{"text": ' + LONG_INT + "}",
        json.dumps({"text": MARKUP}),
        '{"text": ' + "[" * 150 + "1" + "]" * 150 + "}",
        json.dumps({"text": "picture", "image": "x" * 5000 + ".png"}),
        json.dumps({"text": "picture", "image": "a\x00b.png"}),
        json.dumps({"text": "last good record"}),
    ]
    (root / "records.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    (root / "broken.gif").write_bytes(_gif_bytes()[:20])
    (root / "empty.txt").write_bytes(b"")
    (root / "odd [").mkdir()
    (root / "odd [" / "yellow] x.txt").write_bytes(b"")  # the path holds "[/yellow]"
    (root / "passwd.txt").symlink_to("/etc/passwd")
    (root / "environ.txt").symlink_to("/proc/self/environ")
    os.mkfifo(root / "pipe.txt")
    with open(root / "huge.txt", "wb") as f:  # sparse: costs no disk
        f.truncate(17 * 1024 * 1024)
    good = {"red.png", "note.txt", "[yellow]odd[b].md", "records.jsonl:1",
            "records.jsonl:4", "records.jsonl:8"}  # fmt: skip
    bad = {
        "records.jsonl:2": "nested too deeply",
        "records.jsonl:3": "number too long",
        "records.jsonl:5": "nested too deeply",
        "records.jsonl:6": "not found",
        "records.jsonl:7": "not found",
        "broken.gif": "truncated or corrupt GIF",
        "empty.txt": "empty file",
        "odd [/yellow] x.txt": "empty file",
        "passwd.txt": "outside the indexed folder",
        "environ.txt": "a system file",
        "pipe.txt": "FIFO",
        "huge.txt": "file too large",
    }
    return good, bad


def _where(good: str, root: Path) -> str:
    return str(root / good)


def test_index_and_search_survive_the_hostile_folder(cli, tiny_model, tmp_path, monkeypatch):
    from mmembed.data import corpus_files
    from mmembed.search.library import Library

    root = tmp_path / "hostile"
    good, bad = hostile_folder(root)
    lib = tmp_path / "lib"
    r = cli("index", root, "--index", lib, "--model", tiny_model, "--show-skipped", 100)
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert f"{len(good)} searchable" in r.output
    lines = r.output.splitlines()
    for where, why in bad.items():
        hit = [ln for ln in lines if f"{root}/{where}:" in ln and "skipped" in ln]
        assert hit and why in hit[0], (where, why, r.output)

    entries = Library.open(lib).entries.values()
    found = {os.path.basename(e.where) for e in entries}
    assert found == good
    assert not any("root:" in (e.text or "") for e in entries)  # /etc/passwd never indexed

    # an unchanged re-run reads no file again, skipped ones included
    reads: list[str] = []
    real_read, real_open = corpus_files.read_bytes, corpus_files.open_stream
    monkeypatch.setattr(corpus_files, "read_bytes", lambda p: reads.append(p.name) or real_read(p))
    monkeypatch.setattr(corpus_files, "open_stream", lambda p: reads.append(p.name) or real_open(p))
    again = cli("index", "--index", lib, "--show-skipped", 100)
    assert again.exit_code == 0 and "0 encoded now" in again.output, again.output
    assert reads == [] and all(f"{root}/{w}:" in again.output for w in bad)

    r = cli("search", MARKUP, "--index", lib, "-k", 20)  # markup in the query and the results
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert "[/quote]" in r.output
    r = cli("search", "apples", "--index", lib, "-k", 20, "--json")
    assert r.exit_code == 0
    hits = json.loads(r.output)["results"]
    shown = {os.path.basename(h["path"]) + (f":{h['line']}" if h["line"] else "") for h in hits}
    assert shown == good


def test_validate_reports_hostile_lines_with_file_and_line(cli, tmp_path, monkeypatch):
    from data_fixtures import make_tree

    make_tree(tmp_path)
    pool = tmp_path / "cand_pool/local/mbeir_mscoco_task0_cand_pool.jsonl"
    query = tmp_path / "query/test/mbeir_mscoco_task0_test.jsonl"
    n_pool = len(pool.read_text().splitlines())
    n_query = len(query.read_text().splitlines())
    monkeypatch.setattr(mbeir, "MAX_LINE_BYTES", 256 * 1024)
    with open(pool, "a") as f:
        f.write(DEEP + "\n" + '{"did": ' + LONG_INT + "}\n" + "x" * 300_000 + "\n")
    with open(query, "a") as f:
        f.write('{"qid": "9:99", "query_txt": "' + MARKUP + '", "nested": ' + DEEP + "}\n")
    r = cli("data", "validate", tmp_path, "--json", tmp_path / "report.json")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    errors = json.loads((tmp_path / "report.json").read_text())["errors"]
    got = {(Path(e["path"]).name, e["line"]): e["problem"] for e in errors}
    expect = {
        (pool.name, n_pool + 1): "nested too deeply",
        (pool.name, n_pool + 2): "number too long",
        (pool.name, n_pool + 3): "over the 256.0 KB limit",
        (query.name, n_query + 1): "nested too deeply",
    }
    for key, why in expect.items():
        assert key in got and why in got[key], (key, got)


def test_encode_skips_hostile_records_and_names_their_lines(cli, tiny_model, tmp_path):
    pool = tmp_path / "mbeir_toy_task1_cand_pool.jsonl"
    good = [{"did": f"11:{i}", "txt": f"passage {i}", "img_path": None, "modality": "text"}
            for i in range(4)]  # fmt: skip
    lines = [json.dumps(good[0]), DEEP, json.dumps(good[1]), '{"did": ' + LONG_INT + "}",
             json.dumps({**good[2], "txt": MARKUP}), json.dumps(good[3])]  # fmt: skip
    pool.write_text("\n".join(lines) + "\n")
    out = tmp_path / "enc"
    r = cli("encode", pool, "--out", out, "--model", tiny_model, "--no-progress")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert "2 bad record(s) skipped" in r.output
    assert f"{pool}:2" in r.output and "nested too deeply" in r.output
    assert f"{pool}:4" in r.output and "number too long" in r.output
    ids = (out / "ids.txt").read_text().split()
    assert ids == ["11:0", "11:1", "11:2", "11:3"]


# ----------------------------------------------------------------------------- server


@pytest.fixture()
def hostile_app(tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from mmembed.search.library import Library, update_library
    from mmembed.search.query import Searcher
    from mmembed.search.server import create_app
    from mmembed.testing.colour_embedder import ColourEmbedder

    root = tmp_path / "hostile"
    good, _ = hostile_folder(root)
    emb = ColourEmbedder()
    update_library(tmp_path / "lib", [root], emb)
    searcher = Searcher(Library.open(tmp_path / "lib"), emb)

    def make(**kw):
        return TestClient(create_app(searcher, allowed_hosts=None, **kw))

    return make, root, good


def test_server_over_the_hostile_folder(hostile_app):
    make, root, good = hostile_app
    client = make()
    r = client.get("/api/search", params={"q": MARKUP, "k": 50})
    assert r.status_code == 200
    hits = r.json()["results"]
    assert {os.path.basename(h["path"]) + (f":{h['line']}" if h["line"] else "") for h in hits} == (
        good
    )
    assert not any("root:" in (h["text"] or "") for h in hits)  # the /etc/passwd link
    assert client.get("/api/file", params={"path": str(root / "passwd.txt")}).status_code == 403

    r = client.post("/api/search", json={"q": "apples"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/api/search", files={"image": ("x.bin", b"hello, not an image")})
    assert r.status_code == 400 and "object at 0x" not in r.text
    assert "not a recognised image format" in r.json()["detail"]
    r = client.post("/api/search", files={"image": ("t.gif", _gif_bytes()[:20])})
    assert r.status_code == 400 and "truncated or corrupt GIF" in r.json()["detail"]


def test_uploads_are_decoded_off_the_event_loop_and_limited(hostile_app, monkeypatch):
    import mmembed.search.server as server

    make, _, _ = hostile_app
    threads: list[str] = []
    entered, release = threading.Event(), threading.Event()
    real = server._decode

    def slow_decode(data, name):
        threads.append(threading.current_thread().name)
        entered.set()
        release.wait(10)
        return real(data, name)

    monkeypatch.setattr(server, "_decode", slow_decode)
    client = make(max_uploads=1)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="PNG")
    png = buf.getvalue()
    first: dict = {}
    t = threading.Thread(
        target=lambda: first.update(r=client.post("/api/search", files={"image": ("a.png", png)}))
    )
    t.start()
    assert entered.wait(10)
    # while the upload is being decoded, the loop still answers, and a second upload is refused
    assert client.get("/api/search", params={"q": "red"}).status_code == 200
    second = client.post("/api/search", files={"image": ("b.png", png)})
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    release.set()
    t.join(10)
    assert first["r"].status_code == 200 and first["r"].json()["results"]
    assert threads and all(n.startswith("mmembed-decode") for n in threads)


def test_half_sent_body_times_out():
    import asyncio

    from mmembed.search.server import BodyLimit

    sent: list[dict] = []

    async def app(scope, receive, send):  # never reached
        raise AssertionError("the app must not see a half-sent body")

    async def receive():
        await asyncio.sleep(10)

    async def send(message):
        sent.append(message)

    limit = BodyLimit(app, max_bytes=1024, timeout_s=0.2)
    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"100")]}
    asyncio.run(limit(scope, receive, send))
    assert sent[0]["status"] == 408 and b"within 0.2 s" in sent[1]["body"]
