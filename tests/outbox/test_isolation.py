"""Output isolation: a stalled output (an HTTP endpoint that never answers, a broker that never
sends PUBACK) does not delay the other outputs (decision 0048). Real sockets, real time."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldstation.clock import SystemClock
from fieldstation.config import StationConfig
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import Database
from fieldstation.store import outbox as store
from fieldstation.testing.broker import SilentBroker, SilentEndpoint

MAX_DELAY = 5.0
"""Seconds from enqueue to the line in the file output that the test allows (issue 14)."""


def _enqueue(db: Database, n: int, tag: str) -> list[str]:
    with db.session() as session:
        return store.enqueue_many(
            session,
            [
                store.NewMessage("detection", {"tag": tag, "n": i}, ["local", "stalled"])
                for i in range(n)
            ],
            now=SystemClock().now(),
            station_id="default",
        )


def _lines(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {json.loads(line)["id"] for line in path.read_text().splitlines() if line}


def _delay_until_written(path: Path, ids: list[str], enqueued: float, timeout: float) -> float:
    """Seconds from ``enqueued`` (monotonic) until every id is a line of ``path``."""
    deadline = enqueued + timeout
    while not set(ids) <= _lines(path):
        if time.monotonic() > deadline:
            return float("inf")
        time.sleep(0.02)
    return time.monotonic() - enqueued


class Stalled:
    """A stalled network output: its config and the server behind it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "http":
            self.endpoint: Any = SilentEndpoint()
            self.output: dict[str, Any] = {
                "name": "stalled",
                "kind": "http",
                "url": self.endpoint.url,
            }
        else:
            self.endpoint = SilentBroker()
            self.output = {
                "name": "stalled",
                "kind": "mqtt",
                "host": "127.0.0.1",
                "port": self.endpoint.port,
                "protocol": "3.1.1",
            }

    def stuck(self) -> bool:
        """True once the output's worker is waiting on the silent server."""
        if self.kind == "http":
            return bool(self.endpoint.asked.is_set())
        return int(self.endpoint.received) > 0


@pytest.fixture(params=["http", "mqtt"])
def stalled(request: pytest.FixtureRequest) -> Iterator[Stalled]:
    server = Stalled(request.param)
    yield server
    server.endpoint.close()


def test_a_stalled_output_does_not_delay_the_file_output(
    make_station: Callable[..., StationConfig],
    home: StationHome,
    db: Database,
    stalled: Stalled,
) -> None:
    """An HTTP endpoint that accepts and never answers (30 s timeout), or a broker that never
    sends PUBACK (30 s ack timeout), beside a file output: every message reaches the file
    within 5 s of being enqueued, while the stalled output holds its own batch."""
    config = make_station(
        [{"name": "local", "kind": "file", "path": "local.jsonl"}, stalled.output],
        batch_size=10,
    )
    path = home.root / "local.jsonl"
    stop = threading.Event()
    loop = DeliveryLoop(config, db, SystemClock(), home, poll_interval=0.2)
    runner = threading.Thread(target=loop.run, args=(stop,), name="delivery-under-test")
    runner.start()
    delays: list[float] = []
    try:
        enqueued = time.monotonic()
        ids = _enqueue(db, 25, "first")
        delays.append(_delay_until_written(path, ids, enqueued, 20 * MAX_DELAY))
        deadline = time.monotonic() + 20
        while not stalled.stuck():  # the stalled output is now waiting on its answer
            assert time.monotonic() < deadline, "the stalled output never sent anything"
            time.sleep(0.02)
        for round_ in range(3):  # while it waits (30 s), new messages keep reaching the file
            enqueued = time.monotonic()
            ids = _enqueue(db, 25, f"round {round_}")
            delays.append(_delay_until_written(path, ids, enqueued, 4 * MAX_DELAY))
    finally:
        stop.set()
        stalled.endpoint.close()  # ends the hanging request, so the worker stops at once
        runner.join(60)
    assert not runner.is_alive(), "the delivery loop did not stop"
    print(f"\nfile output delays beside a stalled {stalled.kind} output: {delays}")
    assert max(delays) <= MAX_DELAY, f"file output delayed: {delays} s"
    with db.session() as session:
        counts = store.status(session).counts
    assert counts["local"]["sent"] == 100
    assert counts["stalled"].get("sent", 0) == 0
