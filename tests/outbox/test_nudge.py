"""Event-driven delivery: a committed message wakes its output's worker at once; the poll is
only the fallback (issue 22). No timing: the poll is an hour, so a delivery seen at all within
the test's limit came from the nudge."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from fieldstation.clock import SystemClock
from fieldstation.config import StationConfig, parse_config
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.runtime.station import Station
from fieldstation.store import Database
from fieldstation.store import outbox as store

from ..runtime.test_station import fast_station, wait_for

HOUR = 3600.0


def delivered(path: Path) -> list[dict]:  # type: ignore[type-arg]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_nudge_ends_the_wait_between_passes(
    make_station: Callable[..., StationConfig], db: Database, home: StationHome
) -> None:
    config = make_station([{"name": "up", "kind": "file", "path": "up.jsonl"}])
    clock = SystemClock()
    loop = DeliveryLoop(config, db, clock, home, poll_interval=HOUR)
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    try:
        worker = loop.workers["up"]
        wait_for(lambda: worker.busy_for(clock.monotonic()) is None)  # waiting its hour
        with db.session() as session:
            store.enqueue(
                session,
                kind="detection",
                body={"n": 1},
                destinations=["up"],
                now=clock.now(),
                station_id="default",
            )
        loop.nudge()
        wait_for(lambda: delivered(home.root / "up.jsonl"), timeout=60)
    finally:
        stop.set()
        runner.join(60)
    assert not runner.is_alive()  # the stop ended the hour's wait too


def test_a_station_delivers_a_new_chunks_notice_without_waiting_for_the_poll(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    data = fast_station(home, chunk="1s")
    data["runtime"]["outbox_poll"] = "1h"
    data["heartbeat"]["interval"] = "1h"
    config = parse_config(data)
    station = Station(config, control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    try:
        assert station.ready.wait(60)
        outbox = StationHome(home).root / "outbox.jsonl"

        def kinds() -> set[str]:
            return {m["kind"] for m in delivered(outbox)}

        # the first chunk's notice and its detections come long before the hour's poll
        wait_for(lambda: kinds() >= {"recording", "detection"}, timeout=120)
    finally:
        stop.set()
        runner.join(60)
