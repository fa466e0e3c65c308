"""The search page honours ?q= (and &k=), and a text search updates the address bar, so a search
can be linked (issue 19). Real headless Chromium (fixtures in tests/browser_fixtures.py)."""

from __future__ import annotations

import urllib.parse

from browser_fixtures import card_names, wait_for


def test_a_linked_search_runs_on_load_and_searches_are_linkable(server, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _ = server
    browser.get(url + "/?q=" + urllib.parse.quote("something green") + "&k=10")
    wait_for(browser, lambda d: "results for" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "q").get_attribute("value") == "something green"
    assert browser.find_element(By.ID, "k").get_attribute("value") == "10"
    assert set(card_names(browser)[:2]) == {"green.png", "green-note.txt"}

    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys("red", Keys.ENTER)
    wait_for(browser, lambda d: "“red”" in d.find_element(By.ID, "status").text)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(browser.current_url).query)
    assert query == {"q": ["red"], "k": ["10"]}
