"""Fleet alerts: the pure evaluation on chosen instants (every kind opens and clears), the
open / acknowledge / close cycle in a real database (once, even when two evaluators race),
and notifications through Apprise to a real local HTTP server (``json://``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.hub.alerts import (
    AlertLoop,
    AlertRules,
    AlertsConfig,
    Notifier,
    StationState,
    acknowledge,
    apply_conditions,
    evaluate,
)
from fieldstation.hub.db import HubDatabase, open_hub_database
from fieldstation.hub.store import set_station_status

T0 = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)
RULES = AlertRules(offline_after=300, missing_after=3, silent_after=3600, disk_percent=90)


def state(**changes: Any) -> StationState:
    """A healthy station at T0: online, heartbeat just now (every 60 s), recorded just now."""
    base: dict[str, Any] = {
        "id": "st-1",
        "first_seen_at": T0 - timedelta(days=1),
        "online": True,
        "status_changed_at": T0 - timedelta(days=1),
        "last_heartbeat_at": T0,
        "heartbeat_interval": 60.0,
        "last_recording_at": T0,
        "disk_percent": 40.0,
        "disk_free": 10**10,
        "jobs": ({"name": "recorder:mic", "state": "running"},),
    }
    base.update(changes)
    return StationState(**base)


def kinds(s: StationState, now: datetime, rules: AlertRules = RULES) -> set[str]:
    return {c.kind for c in evaluate([s], now, rules)}


def test_each_kind_opens_past_its_threshold_and_not_before() -> None:
    assert kinds(state(), T0) == set()
    # offline: 5 min after the LWT, not at 4 min 59 s; no heartbeat alert while offline
    gone = state(online=False, status_changed_at=T0)
    assert kinds(gone, T0 + timedelta(seconds=299)) == set()
    assert kinds(gone, T0 + timedelta(seconds=301)) == {"offline"}
    assert kinds(gone, T0 + timedelta(hours=5)) == {"offline"}
    # heartbeat missing: 3 announced intervals; it then hides "silent"
    assert kinds(state(), T0 + timedelta(seconds=179)) == set()
    assert kinds(state(), T0 + timedelta(seconds=181)) == {"heartbeat_missing"}
    # silent: heartbeats arrive, no recording for > 1 h
    quiet = state(last_heartbeat_at=T0 + timedelta(hours=2), last_recording_at=T0)
    assert kinds(quiet, T0 + timedelta(hours=2)) == {"silent"}
    never = state(last_recording_at=None, first_seen_at=T0 - timedelta(minutes=30))
    assert kinds(never, T0) == set()
    assert kinds(never, T0 + timedelta(minutes=31)) == {"heartbeat_missing"}
    assert kinds(quiet, T0 + timedelta(hours=2), AlertRules(silent_after=0)) == set()
    # disk low: percent or free bytes
    assert kinds(state(disk_percent=90.0), T0) == {"disk_low"}
    assert kinds(state(disk_percent=89.9), T0) == set()
    assert kinds(state(disk_free=10**8), T0, AlertRules(disk_free="1GB")) == {"disk_low"}
    # job failed: one alert per failed job, subject = the job
    jobs = (
        {"name": "processor:energy", "state": "failed", "problem": "exit 1"},
        {"name": "recorder:mic", "state": "config_error"},
        {"name": "summary", "state": "backoff"},
    )
    found = evaluate([state(jobs=jobs)], T0, RULES)
    assert {(c.kind, c.subject) for c in found} == {
        ("job_failed", "processor:energy"),
        ("job_failed", "recorder:mic"),
    }
    assert "exit 1" in next(c.detail for c in found if c.subject == "processor:energy")


@pytest.fixture
def db(hub_url: str) -> Iterator[HubDatabase]:
    database = open_hub_database(hub_url)
    yield database
    database.dispose()


def test_an_alert_opens_once_is_acknowledged_and_closes(db: HubDatabase) -> None:
    gone = [state(online=False, status_changed_at=T0)]
    later = T0 + timedelta(minutes=10)
    conditions = evaluate(gone, later, RULES)
    first = apply_conditions(db, conditions, later)
    assert [a["kind"] for a in first.opened] == ["offline"] and not first.closed
    # evaluated again (this process or another): nothing new
    again = apply_conditions(db, evaluate(gone, later + timedelta(minutes=1), RULES), later)
    assert not again.opened and not again.closed
    alert_id = first.opened[0]["id"]
    assert acknowledge(db, alert_id, "otto", later)
    assert not acknowledge(db, alert_id, "otto", later)  # once
    # back online: the condition is gone, the alert closes once
    back = T0 + timedelta(minutes=20)
    healthy = state(last_heartbeat_at=back, last_recording_at=back)
    closed = apply_conditions(db, evaluate([healthy], back, RULES), back)
    assert [a["id"] for a in closed.closed] == [alert_id]
    assert not apply_conditions(db, [], back).closed
    # offline again later: a NEW alert (the closed one stays closed)
    reopened = apply_conditions(db, conditions, back + timedelta(minutes=1))
    assert reopened.opened and reopened.opened[0]["id"] != alert_id


def test_two_evaluators_racing_open_and_close_each_alert_once(db: HubDatabase) -> None:
    stations = [state(id=f"st-{i}", online=False, status_changed_at=T0) for i in range(40)]
    now = T0 + timedelta(hours=1)
    conditions = evaluate(stations, now, RULES)
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        for _ in range(3):
            results.append(apply_conditions(db, conditions, now))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    opened = [a["id"] for r in results for a in r.opened]
    assert len(opened) == len(set(opened)) == 40


class Receiver:
    """A local HTTP server that keeps every JSON body posted to it (Apprise's json://)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                with receiver.arrived:
                    receiver.bodies.append(body)
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.bodies) >= count, timeout)
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()


def test_the_loop_notifies_apprise_when_an_alert_opens_and_closes(db: HubDatabase) -> None:
    receiver = Receiver()
    try:
        clock = VirtualClock(T0)
        config = AlertsConfig(notify=[f"json://127.0.0.1:{receiver.port}/alerts"])
        loop = AlertLoop(db, config, clock, Notifier(config.notify))
        set_station_status(db, "hedge-07", False, now=T0)
        assert not loop.run_once().opened  # not yet 5 minutes
        clock.advance(301)
        assert [a["kind"] for a in loop.run_once().opened] == ["offline"]
        bodies = receiver.wait(1)
        assert "hedge-07: offline opened" in bodies[0]["title"]
        assert bodies[0]["type"] == "failure" and "offline for" in bodies[0]["message"]
        set_station_status(db, "hedge-07", True, now=clock.now())
        assert loop.run_once().closed
        bodies = receiver.wait(2)
        assert "hedge-07: offline closed" in bodies[1]["title"] and bodies[1]["type"] == "success"
        assert len(receiver.bodies) == 2
    finally:
        receiver.close()


def test_an_unknown_notification_url_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="Apprise does not understand"):
        Notifier(["nosuchscheme://x"])
