"""The fleet page's snapshot: the fleet read, its alert rules evaluated, its JSON encoded and
(on the first page load) its table rendered once per period for every viewer, made after a
response rather than before it (decision 0145).

Reading, evaluating and rendering 1,000 stations costs ~70-100 ms of CPU; every open fleet
page polls ``/api/fleet`` every :data:`~fieldstation.hub.web.app.FLEET_POLL` seconds. Done per
request, that cost grows with the viewers and sits in every poll's response time. Here:

- a snapshot younger than ``max_age`` is served as it is (a request copies bytes out);
- one older than ``max_age`` but younger than ``stale_after`` is served at once, and a new one
  is made after that response is sent (:meth:`Snapshots.refresh`, a Starlette background
  task of that request: owned by it, nothing detached);
- none, or one older than ``stale_after`` (nobody asked for a while, or refreshes fail), is
  made before answering (the only time a request waits for it).

So a figure served is never older than ``stale_after`` seconds, a polling viewer sees it at
most about one polling period old, and the fleet costs at most one snapshot per ``max_age``
per hub process whatever the number of viewers. Thread-safe and single-flight: one snapshot
is made at a time; requests needing one meanwhile wait for it instead of making their own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from fieldstation.clock import Clock

__all__ = ["FleetSnapshot", "Snapshots"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class FleetSnapshot:
    """The fleet at ``at`` (aware UTC): ``stations`` (:func:`fieldstation.hub.fleet.fleet`'s
    rows), ``json`` (the ``/api/fleet`` body, UTF-8 bytes) and ``rows_html`` (the fleet
    table's ``<tr>`` rows, escaped HTML): given, or made by ``render(at, stations)`` on first
    use, once per snapshot (a hub whose viewers only poll the JSON never renders them)."""

    def __init__(
        self,
        at: datetime,
        stations: list[dict[str, Any]],
        json: bytes,
        render: Callable[[datetime, list[dict[str, Any]]], str],
        rows_html: str | None = None,
    ) -> None:
        self.at = at
        self.stations = stations
        self.json = json
        self._render = render
        self._rows_html = rows_html

    @property
    def rows_html(self) -> str:
        if self._rows_html is None:  # two threads may both render: same text, no harm
            self._rows_html = self._render(self.at, self.stations)
        return self._rows_html


class Snapshots(Generic[T]):
    """Values of ``make(now)``, each reused for ``max_age`` seconds and served (while a new one
    is made, :meth:`refresh`) up to ``stale_after`` seconds, on ``clock.monotonic()``.
    Raises ValueError unless 0 <= ``max_age`` <= ``stale_after``."""

    def __init__(
        self, make: Callable[[datetime], T], clock: Clock, max_age: float, stale_after: float
    ) -> None:
        if not 0 <= max_age <= stale_after:
            raise ValueError(
                f"max_age = {max_age!r}, stale_after = {stale_after!r}: seconds, "
                "0 <= max_age <= stale_after"
            )
        self._make = make
        self._clock = clock
        self.max_age = max_age
        self.stale_after = stale_after
        self._state = threading.Lock()  # guards _value and _made (held briefly)
        self._making = threading.Lock()  # one make at a time (held while making)
        self._value: T | None = None
        self._made = 0.0

    def _current(self) -> tuple[T | None, float]:
        """The newest value and its age (s)."""
        with self._state:
            return self._value, self._clock.monotonic() - self._made

    def _make_now(self) -> T:
        started = self._clock.monotonic()
        value = self._make(self._clock.now())
        with self._state:
            self._value, self._made = value, started
        return value

    def get(self) -> tuple[T, bool]:
        """(the value to serve, whether it is older than ``max_age``: then call
        :meth:`refresh` after answering). Makes one first when there is none younger than
        ``stale_after``; the exception of ``make`` then reaches the caller."""
        value, age = self._current()
        if value is not None and age < self.stale_after:
            return value, age >= self.max_age
        with self._making:
            value, age = self._current()  # made by another request while this one waited?
            if value is not None and age < self.max_age:
                return value, False
            return self._make_now(), False

    def refresh(self) -> None:
        """Make a new value unless one is being made or the newest is younger than
        ``max_age``. A failure is logged and keeps the old value (a request finding it older
        than ``stale_after`` makes one itself, and gets the error)."""
        if not self._making.acquire(blocking=False):
            return
        try:
            value, age = self._current()
            if value is None or age >= self.max_age:
                self._make_now()
        except Exception:
            log.warning("fleet snapshot: refresh failed; the previous one is served", exc_info=True)
        finally:
            self._making.release()
