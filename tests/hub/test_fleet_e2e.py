"""End to end: three real stations (``fieldstation run``: replay of a real bird recording,
energy detector, MQTT output) and two real ``fieldstation hub run`` processes on one
Mosquitto and one PostgreSQL. One hub and one station are SIGKILLed mid-run and restarted.
Every detection a station handed to the broker is stored exactly once in the fleet DB."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fieldstation.hub.db import HubDatabase, open_hub_database
from fieldstation.hub.models import Detection, IngestedMessage
from fieldstation.testing.broker import MosquittoBroker, free_port

STATIONS = ("st-a", "st-b", "st-c")
Key = tuple[str, str, int, float, str]
"""(station, message id, recording id, start, label): one detection."""


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)  # polling the databases the processes write (the event we wait on)


def fleet_counts(db: HubDatabase) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(
            select(Detection.station, func.count()).group_by(Detection.station)
        ).all()
    return {station: int(n) for station, n in rows}


def station_sent(home: Path) -> tuple[list[Key], list[Key]]:
    """The detections in the messages the station's outbox marked sent (the broker has them),
    and those of every detection message in it (sent or not)."""
    connection = sqlite3.connect(f"file:{home / 'station.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute(
            "SELECT m.payload, d.state FROM outbox_messages m JOIN outbox_deliveries d "
            "ON d.message_pk = m.id WHERE m.kind = 'detection'"
        ).fetchall()
    finally:
        connection.close()
    sent: list[Key] = []
    every: list[Key] = []
    for payload, state in rows:
        envelope = json.loads(payload)
        body = envelope["body"]
        keys = [
            (envelope["station"], envelope["id"], body["recording_id"], d["start"], d["label"])
            for d in body["detections"]
        ]
        every += keys
        if state == "sent":
            sent += keys
    return sent, every


def fleet_keys(db: HubDatabase) -> list[Key]:
    with db.session() as session:
        rows = session.execute(
            select(
                Detection.station,
                Detection.message_id,
                Detection.recording_id,
                Detection.start,
                Detection.label,
            )
        ).all()
    return [(r[0], r[1], int(r[2]), float(r[3]), r[4]) for r in rows]


@pytest.mark.slow
def test_three_stations_two_hubs_kills_and_every_detection_once(
    tmp_path: Path,
    broker: MosquittoBroker,
    postgres_url: str,
    bird_files: list[Path],
    fleet_tools: Any,
) -> None:
    sensor = {
        "kind": "replay",
        "files": [str(bird_files[0])],
        "loop": True,
        "speed": 2.0,
        "schedule": "always",
    }
    db = open_hub_database(postgres_url)
    hub_files = [
        fleet_tools.hub_file(tmp_path, name, postgres_url, broker, port=free_port())
        for name in ("hub-1", "hub-2")
    ]
    hubs = [fleet_tools.Process("hub", "run", str(path)) for path in hub_files]
    homes = {s: tmp_path / s for s in STATIONS}
    files = {s: fleet_tools.station_file(homes[s], s, broker, sensor) for s in STATIONS}
    stations: dict[str, Any] = {}
    try:
        for hub in hubs:
            hub.wait_for("mqtt ingest subscribed")
        stations = {s: fleet_tools.Process("run", str(files[s])) for s in STATIONS}
        wait_until(
            lambda: all(fleet_counts(db).get(s, 0) >= 3 for s in STATIONS), 180, "detections"
        )
        # mid-run: SIGKILL one hub and one station, let the others go on, restart both
        hubs[0].kill()
        stations["st-a"].kill()
        before = fleet_counts(db)
        # Mosquitto queues a share of the group's messages for the killed hub's persistent
        # session (MQTT 5 allows it): hub-2 gets the rest, so wait for it to store one
        wait_until(
            lambda: any(fleet_counts(db).get(s, 0) > before.get(s, 0) for s in ("st-b", "st-c")),
            300,
            "hub-2 alone storing",
        )
        hubs[0] = fleet_tools.Process("hub", "run", str(hub_files[0]))
        stations["st-a"] = fleet_tools.Process("run", str(files["st-a"]))
        hubs[0].wait_for("mqtt ingest subscribed")
        after = fleet_counts(db)
        wait_until(
            lambda: all(fleet_counts(db).get(s, 0) >= after.get(s, 0) + 3 for s in STATIONS),
            300,
            "detections after the restarts",
        )
        for s in STATIONS:
            assert stations[s].stop() == 0, "".join(stations[s].lines[-30:])
        sent: list[Key] = []
        made: list[Key] = []
        for s in STATIONS:
            delivered, every = station_sent(homes[s])
            sent += delivered
            made += every
        # the hubs store all that the broker was given (the killed hub's unacknowledged
        # messages are redelivered to it after its restart, or to hub-2)
        wait_until(lambda: set(sent) <= set(fleet_keys(db)), 120, "every sent detection")
        stored = fleet_keys(db)
        copies = Counter(stored)
        assert max(copies.values()) == 1, [k for k, n in copies.items() if n > 1][:5]
        assert set(stored) <= set(made)  # nothing stored that no station made
        assert len(sent) >= 3 * 6, len(sent)
        with db.session() as session:
            via = set(session.scalars(select(IngestedMessage.received_via).distinct()).all())
        assert {"mqtt:hub-1", "mqtt:hub-2"} <= via, via
    finally:
        for process in [*stations.values(), *hubs]:
            if process.process.poll() is None:
                process.stop()
        db.dispose()
