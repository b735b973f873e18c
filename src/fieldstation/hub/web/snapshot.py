"""The fleet page's snapshot: the fleet read, its alert rules evaluated, its JSON encoded and
its table rendered ONCE per ``max_age`` seconds for every client (decision 0145).

A fleet of 1,000 stations costs ~100 ms of CPU to read, evaluate and render; every open
fleet page polls ``/api/fleet`` every :data:`~fieldstation.hub.web.app.FLEET_POLL` seconds.
Per request that cost would grow with the number of viewers; per snapshot it is paid at most
once per period whoever asks, and a request costs copying bytes out. ``max_age`` is the
polling period, so a figure the page shows is at most one period older than without the
snapshot (stated on the page).

:class:`Snapshots` is thread-safe and single-flight: requests arriving while a snapshot is
being made wait for that one instead of each making their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from fieldstation.clock import Clock

__all__ = ["FleetSnapshot", "Snapshots"]

T = TypeVar("T")


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet at ``at`` (aware UTC): ``stations`` (:func:`fieldstation.hub.fleet.fleet`'s
    rows), ``json`` (the ``/api/fleet`` body, UTF-8 bytes) and ``rows_html`` (the fleet
    table's ``<tr>`` rows, escaped HTML)."""

    at: datetime
    stations: list[dict[str, Any]]
    json: bytes
    rows_html: str


class Snapshots(Generic[T]):
    """``make(now)`` called at most once per ``max_age`` seconds (on ``clock.monotonic()``);
    :meth:`get` returns the newest value. An exception of ``make`` reaches the caller and
    keeps nothing (the next :meth:`get` tries again)."""

    def __init__(self, make: Callable[[datetime], T], clock: Clock, max_age: float) -> None:
        if max_age < 0:
            raise ValueError(f"max_age = {max_age!r}: seconds, 0 or more")
        self._make = make
        self._clock = clock
        self.max_age = max_age
        self._lock = threading.Lock()
        self._value: T | None = None
        self._made = 0.0

    def get(self) -> T:
        """The newest value, made now when none is younger than ``max_age``."""
        with self._lock:
            if self._value is None or self._clock.monotonic() - self._made >= self.max_age:
                self._value = None
                started = self._clock.monotonic()
                self._value = self._make(self._clock.now())
                self._made = started
            return self._value
