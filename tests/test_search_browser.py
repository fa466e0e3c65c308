"""The web page in real headless Chromium (Debian `chromium` + `chromium-driver`, driven by
selenium): a real uvicorn server on 127.0.0.1; type a query and see thumbnails; upload an image.
The ``server`` and ``browser`` fixtures are in tests/browser_fixtures.py.

Needs: apt `chromium chromium-driver` (scripts/install.sh) and pip `selenium` (dev extra)."""

from __future__ import annotations

import os
from pathlib import Path

from browser_fixtures import card_names, loaded_thumbs, wait_for


def test_type_a_query_and_see_thumbnails(server, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _ = server
    browser.get(url + "/")
    wait_for(browser, lambda d: "items" in d.find_element(By.ID, "info").text)
    assert "8 items from 1 folder" in browser.find_element(By.ID, "info").text
    box = browser.find_element(By.ID, "q")
    box.send_keys("something green", Keys.ENTER)
    wait_for(browser, lambda d: "results for" in d.find_element(By.ID, "status").text)
    names = card_names(browser)
    assert len(names) == 8 and set(names[:2]) == {"green.png", "green-note.txt"}
    wait_for(browser, lambda d: loaded_thumbs(d) == 6)  # the six pictures; notes show text
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
    wait_for(browser, lambda d: d.find_elements(By.ID, "queryimg"))
    browser.find_element(By.ID, "go").click()
    wait_for(browser, lambda d: "image in" in d.find_element(By.ID, "status").text)
    assert card_names(browser)[0] == "blue.png"
    wait_for(browser, lambda d: loaded_thumbs(d) == 6)

    box = browser.find_element(By.ID, "q")  # same image + text: both colours come first
    box.send_keys("yellow")
    browser.find_element(By.ID, "go").click()
    wait_for(browser, lambda d: "“yellow” + image" in d.find_element(By.ID, "status").text)
    assert set(card_names(browser)[:2]) == {"blue.png", "yellow.png"}

    browser.find_element(By.ID, "clear").click()  # removing the image: text-only again
    box.clear()
    browser.find_element(By.ID, "go").click()
    wait_for(browser, lambda d: "Type a query" in d.find_element(By.ID, "status").text)
    shot = Path(os.environ.get("MMEMBED_SCREENSHOT_DIR", tmp_path)) / "search_image.png"
    browser.save_screenshot(str(shot))


def test_oversized_upload_is_refused_in_the_page(server, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url + "/")
    wait_for(browser, lambda d: "items" in d.find_element(By.ID, "info").text)
    big = tmp_path / "huge.png"
    big.write_bytes(b"\x89PNG" + b"\x00" * (11 * 1024 * 1024))
    browser.find_element(By.ID, "file").send_keys(str(big))
    wait_for(browser, lambda d: "upload limit" in d.find_element(By.ID, "status").text)
    assert not browser.find_elements(By.ID, "queryimg")


def test_drop_an_image_onto_the_page(server, browser) -> None:
    """A file dropped anywhere on the page becomes the query image and the search runs."""
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url + "/")
    wait_for(browser, lambda d: "items" in d.find_element(By.ID, "info").text)
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
    wait_for(browser, lambda d: "image in" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "queryimg").get_attribute("alt") == "query image"
    assert card_names(browser)[0] == "yellow.png"
