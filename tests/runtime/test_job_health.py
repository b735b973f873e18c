"""What a whole station says about its jobs: status, heartbeat, events and exit status.

Real stations (database, fork server, job processes, the heartbeat and delivery threads and
the file output) run in a thread of the test.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.runtime.jobs import ProcessJobSpec
from fieldstation.runtime.station import Station, process_jobs
from fieldstation.store import open_database
from fieldstation.store.models import Event
from fieldstation.testing.jobs import job_processes

JOBS = "fieldstation.testing.jobs"


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def config_of(home: Path, sensor: dict[str, Any] | None = None) -> StationConfig:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    if sensor is not None:
        data["sensors"][0] = sensor
    else:
        data["sensors"][0].update(sample_rate="16kHz", chunk="2s", min_free="1MB")
    data["processors"][0].update(poll_interval="0.2s", high="7kHz")
    data["retention"]["min_free"] = "1MB"
    data["heartbeat"]["interval"] = "0.5s"
    data["runtime"].update(
        backoff_initial="0.05s", stop_timeout="3s", status_interval="0.5s", outbox_poll="0.2s"
    )
    return parse_config(data)


@contextmanager
def running(station: Station) -> Iterator[Station]:
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    try:
        assert station.ready.wait(30)
        yield station
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
    assert job_processes() == []


def heartbeats(home: Path) -> list[dict[str, Any]]:
    path = home / "outbox.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line["body"] for line in lines if line["kind"] == "heartbeat"]


def events_of(home: Path, kind: str) -> list[Event]:
    db = open_database(home / "station.db", migrate=False)
    try:
        with db.session() as session:
            return list(session.scalars(select(Event).where(Event.kind == kind)))
    finally:
        db.dispose()


def test_a_missing_audio_device_makes_the_station_degraded_with_the_reason(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    sensor = {
        "name": "usb",
        "kind": "audio",
        "device": "no-such-microphone",
        "sample_rate": "16kHz",
        "chunk": "2s",
        "schedule": "always",
        "min_free": "1MB",
    }
    with running(Station(config_of(home, sensor), control=False, tick=0.1)) as station:
        status = wait_for(lambda: (s := station.status())["health"] == "degraded" and s)
        assert any("recorder:usb" in p and "device error" in p for p in status["problems"]), status[
            "problems"
        ]
        assert status["healthy"] is True  # working, recording nothing: degraded, not failing
        assert status["recording"]["sensors"]["usb"]["problem"].startswith("device error")
        beat = wait_for(lambda: [b for b in heartbeats(home) if b["status"] == "degraded"][-1:])[0]
        assert any("recorder:usb" in r and "device error" in r for r in beat["reasons"])


def test_a_config_error_shows_in_status_heartbeat_events_and_exit_status(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    config = config_of(home)
    bad = ProcessJobSpec("recorder:bad", f"{JOBS}:misconfigured")
    station = Station(config, jobs=[*process_jobs(config), bad], control=False, tick=0.1)
    with running(station):
        status = wait_for(lambda: (s := station.status())["health"] == "unhealthy" and s)
        job = next(j for j in status["jobs"] if j["name"] == "recorder:bad")
        assert job["state"] == "config_error" and "missing.wav" in job["reason"]
        assert any("recorder:bad config_error" in p for p in status["problems"])
        beat = wait_for(lambda: [b for b in heartbeats(home) if b["status"] == "failing"][-1:])[0]
        assert any(
            "recorder:bad config_error: " in r and "missing.wav" in r for r in beat["reasons"]
        )
        # the healthy jobs keep working meanwhile
        wait_for(lambda: station.status()["recording"]["active"])
        # the status file is rewritten every status_interval: wait for the one after the error

        def written_reason() -> str:
            try:
                written = json.loads((home / "run" / "status.json").read_text())
            except FileNotFoundError:  # not written yet
                return ""
            job = next((j for j in written["jobs"] if j["name"] == "recorder:bad"), {})
            return str(job.get("reason") or "")

        assert "missing.wav" in wait_for(
            lambda: "missing.wav" in written_reason() and written_reason()
        )
    assert station.exit_status() == 78
    (event,) = events_of(home, "job_config_error")
    assert event.source == "recorder:bad" and event.severity == "error"
    assert "missing.wav" in event.message
    assert events_of(home, "job_restarted") == []
