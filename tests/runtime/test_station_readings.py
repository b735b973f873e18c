"""A station runs a slow readings sensor as its own supervised job, storing rows."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import func, select

from fieldstation.config import parse_config
from fieldstation.runtime.liveness import ReadingsLiveness
from fieldstation.runtime.station import READINGS, Station, process_jobs
from fieldstation.store import open_database
from fieldstation.store.models import Message, Reading

from .test_station import fast_station, wait_for


def test_a_slow_sensor_runs_as_the_readings_job_and_stores_rows(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = fast_station(home)
    data["sensors"].append({"name": "host", "kind": "system", "period": "1s"})
    config = parse_config(data)
    jobs = {spec.name: spec for spec in process_jobs(config)}
    assert jobs["recorder:host"].target == READINGS
    assert isinstance(jobs["recorder:host"].liveness, ReadingsLiveness)
    assert jobs["recorder:mic"].target != READINGS

    station = Station(config, control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    try:
        assert station.ready.wait(60)

        def stored() -> tuple[int, int]:
            db = open_database(home / "station.db", migrate=False)
            try:
                with db.session() as s:
                    rows = s.scalar(select(func.count(Reading.id)).where(Reading.sensor == "host"))
                    messages = s.scalar(
                        select(func.count(Message.id)).where(Message.kind == "readings")
                    )
                    return int(rows or 0), int(messages or 0)
            finally:
                db.dispose()

        rows, messages = wait_for(lambda: stored() if stored()[1] >= 3 else None, timeout=60)
        assert rows > messages  # several quantities (load, memory, disk) per measurement
        supervisor = station.supervisor
        assert supervisor is not None
        assert supervisor.job("recorder:host")["state"] == "running"
    finally:
        stop.set()
        runner.join(60)
