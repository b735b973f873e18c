"""The fleet snapshot (decision 0145): made at most once per period on the injected clock,
once for many clients asking at the same time, and the fleet page and ``/api/fleet`` served
from it (figures at most one polling period old, the period stated on the page)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.hub.web.snapshot import Snapshots

T0 = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)


def test_a_snapshot_is_made_once_per_period() -> None:
    clock = VirtualClock(T0)
    made: list[datetime] = []

    def make(now: datetime) -> int:
        made.append(now)
        return len(made)

    snapshots = Snapshots(make, clock, max_age=2.0)
    assert snapshots.get() == 1 and snapshots.get() == 1
    clock.advance(1.9)
    assert snapshots.get() == 1
    clock.advance(0.1)
    assert snapshots.get() == 2 and made == [T0, T0 + timedelta(seconds=2)]
    with pytest.raises(ValueError, match="max_age"):
        Snapshots(make, clock, max_age=-1)


def test_clients_asking_at_once_share_one_snapshot_and_a_failure_keeps_nothing() -> None:
    clock = VirtualClock(T0)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    fail = [True]

    def make(now: datetime) -> str:
        calls.append(1)
        if fail[0]:
            fail[0] = False
            raise ConnectionError("database gone")
        started.set()
        assert release.wait(30), "never released"
        return "fleet"

    snapshots = Snapshots(make, clock, max_age=2.0)
    with pytest.raises(ConnectionError):
        snapshots.get()
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(snapshots.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert started.wait(30)
    release.set()
    for thread in threads:
        thread.join(30)
    assert results == ["fleet"] * 8 and len(calls) == 2
