"""Shared browser fixtures: ``server``, a real uvicorn server on 127.0.0.1 over a library of drawn
colour pictures (ColourEmbedder), and ``browser``, headless Chromium driven by selenium, plus
small page helpers. Loaded as a plugin by tests/conftest.py (so any test can ask for the two
fixtures; nothing heavy is imported until one does) and imported by the browser tests for the
helpers; holds no tests itself.

Needs: apt `chromium chromium-driver` (scripts/install.sh) and pip `selenium` (dev extra)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MMEMBED_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MMEMBED_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1200,800",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    import uvicorn

    from mmembed.search.library import Library, update_library
    from mmembed.search.query import Searcher
    from mmembed.search.server import create_app
    from mmembed.testing.colour_embedder import ColourEmbedder, draw_corpus

    root = tmp_path_factory.mktemp("browser")
    photos = root / "photos"
    draw_corpus(photos, colours=("red", "green", "blue", "yellow", "white", "black"))
    emb = ColourEmbedder()
    update_library(root / "lib", [photos], emb)
    app = create_app(Searcher(Library.open(root / "lib"), emb), allowed_hosts=["127.0.0.1"])
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", photos
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for exe, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not shutil.which(exe):
            pytest.fail(
                f"{exe} not found: install it with `apt-get install {pkg}` (scripts/install.sh does)"
            )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install selenium (the dev extra)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout: float = 15.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def cards(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#results .card")


def card_names(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [c.find_element(By.CSS_SELECTOR, ".meta a").text for c in cards(driver)]


def loaded_thumbs(driver) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .card img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length"
    )
