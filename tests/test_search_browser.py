"""The web page in real headless Chromium (Debian `chromium` + `chromium-driver`, driven by
selenium): a real uvicorn server on 127.0.0.1; type a query and see thumbnails; upload an image.

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

from mmembed.search.library import Library, update_library
from mmembed.search.query import Searcher
from mmembed.search.server import create_app
from mmembed.testing.colour_embedder import ColourEmbedder, draw_corpus

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


def _wait(driver, condition, timeout: float = 15.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _cards(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#results .card")


def _card_names(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [c.find_element(By.CSS_SELECTOR, ".meta a").text for c in _cards(driver)]


def _loaded_thumbs(driver) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .card img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length"
    )


def test_type_a_query_and_see_thumbnails(server, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _ = server
    browser.get(url + "/")
    _wait(browser, lambda d: "items" in d.find_element(By.ID, "info").text)
    assert "8 items from 1 folder" in browser.find_element(By.ID, "info").text
    box = browser.find_element(By.ID, "q")
    box.send_keys("something green", Keys.ENTER)
    _wait(browser, lambda d: "results for" in d.find_element(By.ID, "status").text)
    names = _card_names(browser)
    assert len(names) == 8 and set(names[:2]) == {"green.png", "green-note.txt"}
    _wait(browser, lambda d: _loaded_thumbs(d) == 6)  # the six pictures; notes show text
    assert "green things" in browser.find_element(By.CSS_SELECTOR, "#results .doc").text
    shot = Path(os.environ.get("MMEMBED_SCREENSHOT_DIR", tmp_path)) / "search_text.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 5000


def test_upload_an_image_and_compose_with_text(server, browser, tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url + "/")
    query = tmp_path / "query-blue.png"
    Image.new("RGB", (64, 64), (35, 65, 215)).save(query)
    browser.find_element(By.ID, "file").send_keys(str(query))
    _wait(browser, lambda d: d.find_elements(By.ID, "queryimg"))
    browser.find_element(By.ID, "go").click()
    _wait(browser, lambda d: "image in" in d.find_element(By.ID, "status").text)
    assert _card_names(browser)[0] == "blue.png"
    _wait(browser, lambda d: _loaded_thumbs(d) == 6)

    box = browser.find_element(By.ID, "q")  # same image + text: both colours come first
    box.send_keys("yellow")
    browser.find_element(By.ID, "go").click()
    _wait(browser, lambda d: "“yellow” + image" in d.find_element(By.ID, "status").text)
    assert set(_card_names(browser)[:2]) == {"blue.png", "yellow.png"}

    browser.find_element(By.ID, "clear").click()  # removing the image: text-only again
    box.clear()
    browser.find_element(By.ID, "go").click()
    _wait(browser, lambda d: "Type a query" in d.find_element(By.ID, "status").text)
    shot = Path(os.environ.get("MMEMBED_SCREENSHOT_DIR", tmp_path)) / "search_image.png"
    browser.save_screenshot(str(shot))


def test_oversized_upload_is_refused_in_the_page(server, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url + "/")
    _wait(browser, lambda d: "items" in d.find_element(By.ID, "info").text)
    big = tmp_path / "huge.png"
    big.write_bytes(b"\x89PNG" + b"\x00" * (11 * 1024 * 1024))
    browser.find_element(By.ID, "file").send_keys(str(big))
    _wait(browser, lambda d: "upload limit" in d.find_element(By.ID, "status").text)
    assert not browser.find_elements(By.ID, "queryimg")


def test_drop_an_image_onto_the_page(server, browser) -> None:
    """A file dropped anywhere on the page becomes the query image and the search runs."""
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url + "/")
    _wait(browser, lambda d: "items" in d.find_element(By.ID, "info").text)
    browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const c = document.createElement("canvas");
        c.width = c.height = 40;
        const g = c.getContext("2d");
        g.fillStyle = "rgb(240,220,40)";
        g.fillRect(0, 0, 40, 40);
        c.toBlob((blob) => {
          const dt = new DataTransfer();
          dt.items.add(new File([blob], "dropped.png", {type: "image/png"}));
          document.body.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
          done();
        }, "image/png");
        """
    )
    _wait(browser, lambda d: "image in" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "queryimg").get_attribute("alt") == "query image"
    assert _card_names(browser)[0] == "yellow.png"
