"""The Clock protocol that schedules and every waiting component take (``fieldstation.clock``).

Kept beside the schedule tests: the recorder waits for the next slot with ``sleep_until``.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from fieldstation.clock import Clock, SystemClock, VirtualClock


class WithoutSleepUntil:
    """Has every Clock method except ``sleep_until``."""

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        pass

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.is_set()


def test_sleep_until_is_part_of_the_protocol() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(VirtualClock(), Clock)
    assert not isinstance(WithoutSleepUntil(), Clock)
    doc = Clock.sleep_until.__doc__ or ""
    assert "UTC" in doc and "aware" in doc


def test_virtual_sleep_until_jumps_to_the_instant_and_never_back() -> None:
    clock = VirtualClock(datetime(2026, 3, 8, 6, tzinfo=UTC))
    target = datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    clock.sleep_until(target)
    assert clock.now() == target and clock.monotonic() == 5400
    clock.sleep_until(target - timedelta(hours=1))  # in the past: returns at once
    assert clock.now() == target


def test_system_sleep_until_the_past_returns_at_once() -> None:
    clock = SystemClock()
    start = clock.monotonic()
    clock.sleep_until(clock.now() - timedelta(seconds=5))
    clock.sleep_until(clock.now() + timedelta(milliseconds=20))
    assert 0.015 <= clock.monotonic() - start < 1
