"""The ``power`` job in a running station (real time, real recorder and processor processes):
a ``readings`` value below the cut-off pauses the recorder (chunk ``suspended``) and stops the
processor; back above the resume level both run again; events and ``status`` say so."""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fieldstation.clock import SystemClock
from fieldstation.config import parse_config, template_text
from fieldstation.runtime.station import Station
from fieldstation.store import open_database
from fieldstation.store.models import Event, Recording
from fieldstation.store.readings import NewReading, insert_readings


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.mark.slow
def test_a_low_reading_pauses_recorder_and_processor_in_a_running_station(tmp_path: Path) -> None:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(tmp_path / "home")
    data["sensors"][0].update(sample_rate="16kHz", chunk="1s", min_free="1MB")
    data["processors"][0].update(poll_interval="0.2s", high="7kHz")
    data["retention"]["min_free"] = "1MB"
    data["runtime"].update(liveness_grace="2s", stop_timeout="3s", status_interval="0.5s")
    data["suspenders"] = [
        {
            "name": "battery-low",
            "source": "reading",
            "sensor": "batt",
            "quantity": "voltage",
            "below": 11.9,
            "resume": 12.4,
            "jobs": ["recorder:*", "processor:*"],
            "min_suspended": "0s",
            "min_running": "0s",
            "interval": "0.2s",
        }
    ]
    config = parse_config(data)
    sensor = config.sensors[0].name
    processor = f"processor:{config.processors[0].name}"
    station = Station(config, SystemClock(), control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,), daemon=True)
    runner.start()
    try:
        assert station.ready.wait(30)
        db = open_database(station.home.database, migrate=False)

        def recordings() -> list[Recording]:
            with db.session() as session:
                return list(session.scalars(select(Recording).order_by(Recording.id)))

        def kinds() -> list[str]:
            with db.session() as session:
                query = select(Event.kind).where(Event.source == "suspender:battery-low")
                return list(session.scalars(query.order_by(Event.id)))

        def volts(value: float) -> None:
            assert station.deployment_id is not None
            with db.session() as session:
                insert_readings(
                    session,
                    deployment_id=station.deployment_id,
                    sensor="batt",
                    readings=[NewReading("voltage", "V", datetime.now(UTC), value)],
                )

        def state(job: str) -> str:
            assert station.supervisor is not None
            return str(station.supervisor.job(job)["state"])

        wait_for(lambda: recordings())
        wait_for(lambda: state(processor) == "running")
        volts(11.5)
        wait_for(lambda: kinds() == ["suspended"])
        wait_for(lambda: state(processor) == "stopped")
        status = station.status()
        held = status["power"]["held"]
        assert set(held) == {f"recorder:{sensor}", processor}
        assert "suspended by battery-low" in held[f"recorder:{sensor}"]["reason"]
        recorder = status["recording"]["sensors"][sensor]
        wait_for(
            lambda: (
                "suspended" in (station.status()["recording"]["sensors"][sensor]["problem"] or "")
            )
        )
        # the chunk open when the pause came is cut and marked; a pause that falls between two
        # chunks (no frame written yet: likely on a busy machine) has nothing to cut
        before = recordings()
        cut = [r for r in before if r.end_reason == "suspended"]
        assert len(cut) <= 1 and all(r is before[-1] for r in cut), [
            (r.chunk_index, r.end_reason) for r in before
        ]
        assert all(r.end_reason == "complete" for r in before if r not in cut)
        count = len(before)
        time.sleep(1.5)  # paused: no chunk is committed (a chunk is 1 s)
        assert len(recordings()) == count, recorder
        volts(12.6)
        wait_for(lambda: kinds() == ["suspended", "resumed"])
        wait_for(lambda: len(recordings()) > count)
        wait_for(lambda: state(processor) == "running")
        assert station.status()["power"]["held"] == {}
        after = recordings()[count:]
        assert after[0].chunk_index == 0 and after[0].started_at > before[-1].started_at
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
