"""The ``web`` job under a real station (``fieldstation run``): supervised, idle without CPU,
restarted when it dies, and its buttons act on the station through the control API."""

from __future__ import annotations

import io
import json
import os
import signal
import time

import httpx
import psutil
import pytest
from PIL import Image
from tests.web.conftest import TOKEN, LiveStation, wait_for

pytestmark = pytest.mark.slow


def test_the_page_of_a_running_station(live_station: LiveStation) -> None:
    with httpx.Client(base_url=live_station.url, timeout=30) as http:
        status = http.get("/")
        assert status.status_code == 200
        assert "recorder:mic" in status.text and "processor:energy" in status.text
        page = http.get("/recordings", params={"sensor": "mic"})
        assert page.status_code == 200
        rid = int(page.text.split('href="/recordings/')[1].split('"')[0])
        png = http.get(f"/recordings/{rid}/spectrogram.png")
        assert png.status_code == 200
        assert Image.open(io.BytesIO(png.content)).size == (1000, 256)
        audio = http.get(f"/recordings/{rid}/audio", headers={"Range": "bytes=0-3"})
        assert audio.status_code == 206 and audio.content == b"fLaC"
        assert http.get("/schedule").status_code == 200
        assert http.get("/detections").status_code == 200
        # the live view is part of the same page, fed by the recorder's live tap
        assert "mic" in http.get("/live").text
        with http.stream("GET", "/live/mic/events") as events:
            data = next(line for line in events.iter_lines() if line.startswith("data:"))
        event = json.loads(data.removeprefix("data:"))
        assert event["media"] == "audio" and len(event["peak"]) >= 1


def test_the_idle_page_costs_no_cpu(live_station: LiveStation) -> None:
    """No request for 3 s: the web process uses no CPU time (uvicorn's 10 Hz tick is gone)."""
    pid = live_station.job("web")["pid"]
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(3.0)  # the measured interval itself, not a wait for an event
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    assert used <= 0.02, f"the idle web job used {used:.3f} s of CPU in 3 s"


def test_operators_stop_and_start_a_job_from_the_page(live_station: LiveStation) -> None:
    with httpx.Client(base_url=live_station.url, timeout=30, follow_redirects=True) as http:
        login = http.get("/login").text
        token = login.split('<meta name="csrf" content="')[1].split('"')[0]
        done = http.post("/login", data={"csrf": token, "secret": TOKEN, "next": "/"})
        assert done.status_code == 200 and "log out" in done.text
        token = done.text.split('<meta name="csrf" content="')[1].split('"')[0]
        assert 'action="/jobs/processor%3Aenergy/stop"' in done.text
        stopped = http.post("/jobs/processor%3Aenergy/stop", data={"csrf": token})
        assert stopped.status_code == 200
        wait_for(
            lambda: live_station.job("processor:energy")["state"] == "stopped",
            30,
            "the processor stopped",
        )
        assert 'action="/jobs/processor%3Aenergy/start"' in http.get("/").text
        started = http.post("/jobs/processor%3Aenergy/start", data={"csrf": token})
        assert started.status_code == 200
        wait_for(
            lambda: live_station.job("processor:energy")["state"] == "running",
            30,
            "the processor running again",
        )


def test_a_killed_web_job_is_restarted(live_station: LiveStation) -> None:
    before = live_station.job("web")
    os.kill(before["pid"], signal.SIGKILL)

    def back() -> bool:
        job = live_station.job("web")
        last = job.get("last_progress") or {}
        return job["pid"] not in (None, before["pid"]) and last.get("what") == "listening"

    wait_for(back, 60, "the web job restarted")
    with httpx.Client(base_url=live_station.url, timeout=30) as http:
        assert http.get("/").status_code == 200
    assert live_station.job("web")["restarts"] == before["restarts"] + 1
