"""`mmembed index` / `mmembed search` end to end with a real (tiny, random) saved model, and the
self-contained HTML results page."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

from typer.testing import CliRunner

from mmembed.testing.colour_embedder import draw_corpus


def test_index_search_json_html_with_a_saved_model(cli, tiny_model: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    draw_corpus(photos)
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (photos / "records.jsonl").write_text(
        '{"text": "a caption with <script>alert(1)</script>", "image": "red.png"}\nnot json\n'
    )
    lib = tmp_path / "lib"
    r = cli("index", photos, "--index", lib, "--model", tiny_model)
    assert r.exit_code == 0, r.output
    assert "7 searchable (7 encoded now, 0 reused)" in r.output
    assert "skipped" in r.output and "broken.png" in r.output and "records.jsonl:2" in r.output

    again = cli("index", "--index", lib)  # refresh with the model the index remembers
    assert again.exit_code == 0 and "0 encoded now, 7 reused" in again.output

    r = cli("search", "a red thing", "--index", lib, "--k", 5, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [h["rank"] for h in out["results"]] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in out["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)

    r = cli("search", "--image", photos / "blue.png", "--index", lib, "-k", 3)
    assert r.exit_code == 0 and "3 results for" in r.output

    page = tmp_path / "out" / "page.html"
    r = cli(
        "search",
        "caption",
        "--image",
        photos / "green.png",
        "--index",
        lib,
        "--k",
        7,
        "--html",
        page,
        "--json",
    )
    assert r.exit_code == 0, r.output
    results = json.loads(r.output)["results"]
    html = page.read_text(encoding="utf-8")
    n_images = sum(1 for h in results if h["image"])
    assert html.count('src="data:image/jpeg;base64,') == n_images + 1  # + the query image
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    hrefs = set(re.findall(r'href="([^"]+)"', html))
    assert hrefs and all((page.parent / urllib.parse.unquote(h)).is_file() for h in hrefs)


def test_cli_errors_are_clear(cli, tiny_model: Path, tmp_path: Path) -> None:
    r = cli("search", "anything", "--index", tmp_path / "none")
    assert r.exit_code == 2 and "run `mmembed index" in r.output
    r = cli("search", "--index", tmp_path / "none")
    assert r.exit_code == 2 and "give query text" in r.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    r = cli("search", "--image", bad, "--index", tmp_path / "none")
    assert r.exit_code == 2 and "bad.png" in r.output and "empty" in r.output
    r = cli(
        "index", tmp_path / "missing-folder", "--index", tmp_path / "lib", "--model", tiny_model
    )
    assert r.exit_code == 2 and "missing-folder" in r.output and "not a folder" in r.output
    r = cli("index", tmp_path, "--index", tmp_path / "lib2", "--model", tmp_path / "not-a-model")
    assert r.exit_code == 2 and "cannot load model" in r.output


def test_serve_command_answers_on_loopback(tiny_model: Path, tmp_path: Path) -> None:
    """`mmembed serve` as a user runs it: a real process on 127.0.0.1, then a search over HTTP."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from mmembed.cli import app

    photos = tmp_path / "photos"
    draw_corpus(photos)
    r = CliRunner().invoke(app, ["index", str(photos), "--index", str(tmp_path / "lib"),
                                 "--model", str(tiny_model)])  # fmt: skip
    assert r.exit_code == 0, r.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mmembed", "serve", "--index",
                             str(tmp_path / "lib"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "mmembed serve did not start"
            try:
                info = httpx.get(base + "/api/info", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.25)
        assert info.status_code == 200 and info.json()["items"] == 6
        res = httpx.get(base + "/api/search", params={"q": "green", "k": 3}, timeout=30).json()
        assert len(res["results"]) == 3
        evil = httpx.get(base + "/api/info", headers={"host": "attacker.example"}, timeout=5)
        assert evil.status_code == 400  # DNS-rebinding guard on a loopback bind
    finally:
        proc.terminate()
        proc.wait(10)
