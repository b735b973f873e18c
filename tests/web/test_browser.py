"""The page in a real browser (Debian's chromium + chromium-driver through Selenium) on a real
station replaying the real bird recording: every page opens, a recording plays (its
``currentTime`` advances), the spectrogram images are decoded. Screenshots are kept in
``$FIELDSTATION_ARTIFACTS/screenshots`` (default ``test-artifacts/screenshots``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.web.conftest import LiveStation, wait_for

from fieldstation.testing.browser import chromium_driver, screenshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.conftest import require

    with chromium_driver(require, size=(1200, 1000)) as driver:
        yield driver


def decoded(driver: Any, selector: str) -> list[int]:
    """``naturalWidth`` of each image matching ``selector`` once it finished loading."""
    script = (
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(i => i.complete ? i.naturalWidth : -1);"
    )
    return wait_for(
        lambda: (lambda widths: widths if widths and -1 not in widths else None)(
            driver.execute_script(script, selector)
        ),
        60,
        f"images {selector} loaded",
    )


def shoot(driver: Any, name: str) -> Path:
    return screenshot(driver, f"web-{name}")


def test_every_page_in_chromium(live_station: LiveStation, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live_station.url + "/")
    jobs = browser.find_element(By.ID, "jobs").text
    assert "recorder:mic" in jobs and "processor:energy" in jobs and "web" in jobs
    assert browser.find_element(By.ID, "health").text
    shoot(browser, "status")

    browser.get(live_station.url + "/recordings?sensor=mic")
    rows = browser.find_elements(By.CSS_SELECTOR, "#recordings td:first-child a")
    assert rows, "no recording listed"
    shoot(browser, "recordings")
    rows[-1].click()  # the oldest on the page: processed, its file complete

    widths = decoded(browser, "#spectrogram")
    assert widths == [1000]
    start = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const audio = document.getElementById("player");
        audio.play().then(() => done(audio.currentTime), (e) => done("play failed: " + e));
        """
    )
    assert not isinstance(start, str), start
    advanced = wait_for(
        lambda: browser.execute_script(
            "const a = document.getElementById('player');"
            "return a.currentTime > arguments[0] + 0.5 ? a.currentTime : null;",
            start,
        ),
        30,
        "the player's currentTime advancing",
    )
    assert advanced > start
    shoot(browser, "recording")
    browser.execute_script("document.getElementById('player').pause()")

    browser.get(live_station.url + "/detections")
    specs = browser.find_elements(By.CSS_SELECTOR, "img.det-spec")
    if specs:  # the energy detector found something in the bird recording
        browser.execute_script(
            "document.querySelectorAll('img.det-spec').forEach(i => i.loading = 'eager')"
        )
        assert all(w > 0 for w in decoded(browser, "img.det-spec"))
    shoot(browser, "detections")

    browser.get(live_station.url + "/schedule")
    assert "mic" in browser.find_element(By.CSS_SELECTOR, "section.sensor-plan").text
    shoot(browser, "schedule")

    browser.get(live_station.url + "/login")
    assert browser.find_element(By.ID, "login")
    shoot(browser, "login")
