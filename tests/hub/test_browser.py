"""The dashboard in a real browser (headless Chromium via Selenium) on a real hub process,
a real station (``fieldstation run``) and a real Mosquitto: log in, open the fleet page, see
the station go offline when it is SIGKILLed (its LWT; the page updates without a reload),
acknowledge the alert, queue a fleet command for it. Screenshots of each page go to
test-artifacts/screenshots/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fieldstation.testing.broker import MosquittoBroker, free_port
from fieldstation.testing.browser import screenshot

CLI = [sys.executable, "-m", "fieldstation.cli"]
PASSWORD = "a long enough password"


def shot(browser: Any, name: str) -> None:
    screenshot(browser, name)


@pytest.mark.slow
def test_log_in_see_a_killed_station_go_offline_and_acknowledge_its_alert(
    tmp_path: Path, broker: MosquittoBroker, browser: Any, fleet_tools: Any
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    hub_config = fleet_tools.hub_file(
        tmp_path,
        "hub-1",
        f"sqlite:///{tmp_path / 'fleet.db'}",
        broker,
        port=port,
        extra='[alerts]\ninterval = "0.5s"\n[alerts.rules]\noffline_after = "1s"\n',
    )
    added = subprocess.run(
        [
            *CLI,
            "hub",
            "user",
            "add",
            "otto",
            "--role",
            "operator",
            "--password-stdin",
            "-c",
            str(hub_config),
        ],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr
    keygen = subprocess.run([*CLI, "hub", "keygen", "-c", str(hub_config)], capture_output=True)
    assert keygen.returncode == 0, keygen.stderr
    hub = fleet_tools.Process("hub", "run", str(hub_config))
    station = None
    try:
        hub.wait_for("dashboard on")
        hub.wait_for("mqtt ingest subscribed")
        station = fleet_tools.Process(
            "run", str(fleet_tools.station_file(tmp_path / "hedge-07", "hedge-07", broker))
        )
        base = f"http://127.0.0.1:{port}"
        # a click that submits a form reloads the page: an element found just before may go
        # stale while it is read; the wait looks again instead of failing
        wait = WebDriverWait(
            browser, 90, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
        )
        # log in (a wrong password first)
        browser.get(base + "/")
        assert "/login" in browser.current_url
        browser.find_element(By.ID, "name").send_keys("otto")
        browser.find_element(By.ID, "password").send_keys("wrong password")
        browser.find_element(By.ID, "login").click()
        wait.until(lambda b: b.find_elements(By.ID, "login-error"))
        shot(browser, "01-login-refused")
        browser.find_element(By.ID, "name").clear()
        browser.find_element(By.ID, "name").send_keys("otto")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login").click()
        wait.until(lambda b: b.find_elements(By.ID, "fleet"))
        assert "otto (operator)" in browser.find_element(By.ID, "who").text

        def presence(b: Any) -> str:
            cells = b.find_elements(By.CSS_SELECTOR, 'tr[data-station="hedge-07"] td.presence')
            return str(cells[0].text) if cells else ""

        # the station appears online (its retained status), live, with its heartbeat figures
        wait.until(lambda b: presence(b) == "online")
        wait.until(
            lambda b: (
                "ok"
                in b.find_element(By.CSS_SELECTOR, 'tr[data-station="hedge-07"] td.health').text
            )
        )
        # and its first detections (the energy detector on the synthetic chirps)
        wait.until(
            lambda b: (
                "never" not in b.find_element(By.CSS_SELECTOR, 'tr[data-station="hedge-07"]').text
            )
        )
        browser.execute_script("window.__noReload = 'still here';")
        shot(browser, "02-fleet-online")
        station.kill()  # SIGKILL: the broker publishes its will, "offline"
        wait.until(lambda b: presence(b) == "offline")
        assert browser.execute_script("return window.__noReload;") == "still here"
        shot(browser, "03-fleet-offline")
        # the alert opens (offline > 1 s), an operator acknowledges it
        browser.get(base + "/alerts")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "tr.open button.ack"))
        row = browser.find_element(By.CSS_SELECTOR, "tr.open")
        assert "hedge-07" in row.text and "offline" in row.text
        shot(browser, "04-alert-open")
        row.find_element(By.CSS_SELECTOR, "button.ack").click()
        wait.until(lambda b: "acknowledged by otto" in b.find_element(By.ID, "alerts").text)
        shot(browser, "05-alert-acknowledged")
        # the station page: charts from its heartbeats, its recordings and jobs
        browser.get(base + "/stations/hedge-07")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "svg.chart polyline"))
        assert browser.find_element(By.ID, "presence").text == "offline"
        shot(browser, "06-station")
        # an operator queues a ping for the (offline) station: it waits, listed as queued
        browser.find_element(By.ID, "command-verb").send_keys("ping")
        browser.find_element(By.ID, "queue").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#commands td.state.queued"))
        row = browser.find_element(By.CSS_SELECTOR, "#commands tr[data-command]")
        assert "ping" in row.text and "otto" in row.text
        shot(browser, "06b-station-command-queued")
        browser.get(base + "/detections")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#detections a"))
        shot(browser, "07-detections")
    finally:
        if station is not None and station.process.poll() is None:
            station.kill()
        assert hub.stop() == 0, "".join(hub.lines[-30:])
