"""The HTTP app: JSON search by text, image upload and both; thumbnails; upload limits; file
serving confined to indexed files inside the roots; Host checks; the page itself."""

from __future__ import annotations

import io
import json
import urllib.parse
from pathlib import Path

import fastapi  # noqa: F401  (serve extra, installed by CI: a missing one fails, never skips)
import pytest
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image

from mmembed.search.library import Library, update_library  # noqa: E402
from mmembed.search.query import Searcher  # noqa: E402
from mmembed.search.server import create_app  # noqa: E402
from mmembed.testing.colour_embedder import ColourEmbedder, draw_corpus  # noqa: E402

LIMIT = 64 * 1024


@pytest.fixture()
def setup(tmp_path: Path):
    photos = tmp_path / "photos"
    draw_corpus(photos)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    (photos / "escape.txt").symlink_to(secret)
    (photos / "notes" / "ignored.bin").write_bytes(b"\x00binary")
    outside = tmp_path / "outside.png"
    Image.new("RGB", (20, 20), (10, 10, 10)).save(outside)
    (photos / "records.jsonl").write_text(json.dumps({"text": "black", "image": str(outside)}))
    emb = ColourEmbedder()
    update_library(tmp_path / "lib", [photos], emb)
    searcher = Searcher(Library.open(tmp_path / "lib"), emb)
    app = create_app(searcher, max_upload_bytes=LIMIT, allowed_hosts=["testserver", "127.0.0.1"])
    return TestClient(app), photos, secret


def _png(rgb, size=40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return buf.getvalue()


def _file(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def test_page_and_info(setup) -> None:
    client, photos, _ = setup
    r = client.get("/")
    assert r.status_code == 200 and 'id="q"' in r.text and 'type="file"' in r.text
    nonce = r.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in r.text
    assert (
        client.get("/").headers["content-security-policy"] != r.headers["content-security-policy"]
    )
    assert r.headers["x-content-type-options"] == "nosniff"
    info = client.get("/api/info").json()
    assert (
        info["items"] == 7 and info["roots"] == [str(photos)] and info["max_upload_bytes"] == LIMIT
    )


def test_text_image_and_composed_search(setup) -> None:
    client, photos, _ = setup
    r = client.get("/api/search", params={"q": "green", "k": 2})
    assert r.status_code == 200
    res = r.json()["results"]
    assert {_file(x["path"]) for x in res} == {"green.png", "green-note.txt"}
    img = next(x for x in res if x["modality"] == "image")
    assert img["thumb"].startswith("/api/thumb/") and img["file"].startswith("/api/file?path=")
    thumb = client.get(img["thumb"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (48, 48)
    full = client.get(img["file"])
    assert full.status_code == 200 and full.content == (photos / "green.png").read_bytes()

    files = {"image": ("q.png", _png((30, 60, 220)), "image/png")}
    r = client.post("/api/search", data={"k": "1"}, files=files)
    assert r.status_code == 200, r.text
    assert [_file(x["path"]) for x in r.json()["results"]] == ["blue.png"]
    assert r.json()["query"] == {"text": None, "image": True}

    files = {"image": ("q.png", _png((30, 60, 220)), "image/png")}
    r = client.post("/api/search", data={"q": "yellow", "k": "2"}, files=files)
    assert {_file(x["path"]) for x in r.json()["results"]} == {"blue.png", "yellow.png"}
    note = client.get("/api/search", params={"q": "red", "k": 7}).json()["results"]
    text_hit = next(x for x in note if x["modality"] == "text")
    assert text_hit["thumb"] is None and "red things" in text_hit["text"]


def test_bad_queries_get_clear_errors(setup) -> None:
    client, _, _ = setup
    r = client.get("/api/search", params={"q": "  "})
    assert r.status_code == 400 and "empty query" in r.json()["detail"]
    assert client.get("/api/search", params={"q": "red", "k": 0}).status_code == 422
    r = client.post("/api/search", data={"k": "3"})
    assert r.status_code == 400 and "empty query" in r.json()["detail"]
    files = {"image": ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")}
    r = client.post("/api/search", files=files)
    assert r.status_code == 400 and "broken.png" in r.json()["detail"]
    assert client.get("/api/thumb/99:123").status_code == 404


def test_upload_limit_413(setup) -> None:
    client, _, _ = setup
    big = _png((200, 10, 10), size=16) + b"\x00" * LIMIT  # PNG with trailing junk, over the limit
    r = client.post("/api/search", files={"image": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "limit is" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(5):
            yield b"x" * (LIMIT // 4)

    r = client.post(
        "/api/search",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=zz"},
    )
    assert r.status_code == 413


def test_file_serving_refuses_traversal_and_outside(setup) -> None:
    client, photos, secret = setup
    attempts = {
        str(photos / ".." / "secret.txt"): 403,
        str(photos / "notes" / ".." / ".." / "secret.txt"): 403,
        str(secret): 403,
        "/etc/passwd": 403,
        str(photos / "escape.txt"): 403,  # symlink inside the root pointing outside
        "../secret.txt": 403,
        "red.png": 403,
        str(photos / "notes" / "ignored.bin"): 403,  # inside the root but not indexed
    }
    for path, status in attempts.items():
        r = client.get("/api/file", params={"path": path})
        assert r.status_code == status, (path, r.status_code, r.text)
        assert "do not serve" not in r.text
    raw = "/api/file?path=" + urllib.parse.quote(str(photos)) + "/%2e%2e/secret.txt"
    assert client.get(raw).status_code == 403
    assert client.get("/api/file/../../etc/passwd").status_code == 404
    ok = client.get("/api/file", params={"path": str(photos / "notes" / "red-note.txt")})
    assert ok.status_code == 200 and b"red things" in ok.content


def test_unknown_host_refused(setup) -> None:
    client, _, _ = setup
    assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/info", headers={"host": "127.0.0.1:8000"}).status_code == 200


def test_outside_images_are_searchable_but_not_shown(setup) -> None:
    client, photos, _ = setup
    res = client.get("/api/search", params={"q": "black", "k": 8}).json()["results"]
    rec = next(x for x in res if x["modality"] == "image,text")
    assert rec["path"] == str(photos / "records.jsonl") and rec["line"] == 1
    assert rec["thumb"] is None and client.get(f"/api/thumb/{rec['did']}").status_code == 403
    assert client.get(rec["file"]).status_code == 200  # the jsonl itself is an indexed file
