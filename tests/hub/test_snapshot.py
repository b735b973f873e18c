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


def test_a_snapshot_is_reused_then_served_stale_while_refreshed_then_made_first() -> None:
    clock = VirtualClock(T0)
    made: list[datetime] = []

    def make(now: datetime) -> int:
        made.append(now)
        return len(made)

    snapshots = Snapshots(make, clock, max_age=2.0, stale_after=6.0)
    assert snapshots.get() == (1, False) and snapshots.get() == (1, False)
    clock.advance(1.9)
    assert snapshots.get() == (1, False)
    snapshots.refresh()  # young enough: nothing made
    assert made == [T0]
    clock.advance(0.1)
    assert snapshots.get() == (1, True)  # served, to be refreshed after the response
    snapshots.refresh()
    assert snapshots.get() == (2, False) and made == [T0, T0 + timedelta(seconds=2)]
    clock.advance(6.0)
    assert snapshots.get() == (3, False)  # too old to serve: made first
    for max_age, stale_after in ((-1.0, 1.0), (3.0, 2.0)):
        with pytest.raises(ValueError, match="max_age"):
            Snapshots(make, clock, max_age=max_age, stale_after=stale_after)


def test_clients_asking_at_once_share_one_snapshot_and_failures_keep_the_old_one() -> None:
    clock = VirtualClock(T0)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    fail = [True]

    def make(now: datetime) -> str:
        calls.append(1)
        if fail[0]:
            raise ConnectionError("database gone")
        started.set()
        assert release.wait(30), "never released"
        return f"fleet {len(calls)}"

    snapshots = Snapshots(make, clock, max_age=2.0, stale_after=6.0)
    with pytest.raises(ConnectionError):  # none to serve: the caller gets the error
        snapshots.get()
    fail[0] = False
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(snapshots.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert started.wait(30)
    release.set()
    for thread in threads:
        thread.join(30)
    assert results == [("fleet 2", False)] * 8 and len(calls) == 2
    # a failing refresh is logged and keeps serving the old one until it is too old
    fail[0] = True
    clock.advance(2.0)
    snapshots.refresh()
    assert snapshots.get() == ("fleet 2", True) and len(calls) == 3
    clock.advance(4.0)
    with pytest.raises(ConnectionError):
        snapshots.get()
