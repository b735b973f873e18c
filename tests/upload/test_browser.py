"""The dashboard's station page plays an uploaded recording in a real browser (headless
Chromium): a WAV uploaded by the station's client loads in the page's <audio> element, seeks
(HTTP Range) and plays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from fieldstation.hub.store import set_station_status
from fieldstation.hub.users import add_user
from fieldstation.testing.browser import screenshot

PASSWORD = "a long enough password"


@pytest.mark.slow
def test_station_page_plays_an_uploaded_recording(
    make_hub: Any, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    hub = make_hub(dashboard=True)
    add_user(hub.db, "vera", PASSWORD, "viewer")
    set_station_status(hub.db, "default", True)
    path = tmp_path / "chirp.wav"
    t = np.arange(16_000 * 6) / 16_000
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * (500 + 300 * t) * t), 16_000)
    hub.upload(
        path,
        "0b9f0a8e-0000-4000-8000-0000000000b1",
        {"filename": "chirp.wav", "media_type": "audio/wav", "recording_id": "1"},
    )
    base = hub.url.removesuffix("/uploads")
    browser.get(base + "/login")
    browser.find_element(By.ID, "name").send_keys("vera")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    wait.until(lambda b: "/login" not in b.current_url)
    browser.get(base + "/stations/default")
    audio = browser.find_element(By.CSS_SELECTOR, "#uploads audio")
    browser.execute_script("arguments[0].preload = 'auto'; arguments[0].load();", audio)
    duration = wait.until(
        lambda b: b.execute_script(
            "const a = arguments[0]; return a.readyState >= 1 && a.duration > 0 && a.duration;",
            audio,
        )
    )
    assert abs(duration - 6.0) < 0.05
    # seek to the middle (a Range request), then play muted: time advances
    browser.execute_script("arguments[0].currentTime = 3.0;", audio)
    wait.until(lambda b: b.execute_script("return !arguments[0].seeking;", audio))
    browser.execute_script("arguments[0].muted = true; arguments[0].play();", audio)
    wait.until(lambda b: b.execute_script("return arguments[0].currentTime > 3.2;", audio))
    assert browser.execute_script("return arguments[0].error;", audio) is None
    browser.execute_script("arguments[0].scrollIntoView();", audio)
    screenshot(browser, "hub-station-uploads")
