"""Recording windows: resolved per local day, filtered, merged, and cut at full days.

For each local date ``D`` that passes the schedule's filters (first/last date, weekdays, every
Nth day, all applied to ``D``), each window gives the interval ``[start(D), end)`` where ``end``
is the end edge on ``D``, or on ``D + 1`` when its local wall-clock time is not after the
start's (the window crosses midnight; ``"00:00"``-``"00:00"`` is a whole day). The wall-clock
times are compared, not the instants: a window whose edges both fall in a spring-forward gap
resolves to one instant and is empty that day. An interval whose end is not after its start is
dropped. When a sun event of a window does not happen
on ``D`` (polar day or night) the schedule's ``polar`` option decides: ``skip`` drops the window
that day, ``whole_day`` records local ``D`` from 00:00 to 24:00.

Intervals of all days are merged where they overlap or touch. A merged interval is cut at a
local midnight only when the whole local day before that midnight is inside it: a window
``22:00``-``04:00`` stays one piece, a 24-hour schedule becomes one piece per local day. This
keeps every piece finite and the result independent of the range asked for (decision 0011).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Literal

from fieldstation.schedule.edges import Edge, LocalDays, SunEventMissing, SunEvents

if TYPE_CHECKING:
    from fieldstation.config.schedule import ScheduleConfig
    from fieldstation.config.station import StationSection

__all__ = ["DayWindows", "Piece", "PolarFallback", "WindowResolver"]

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_EPOCH_DAY = date(1970, 1, 1)
REACH_DAYS = 3
"""A window computed for local date D lies within D - 1 day .. D + 3 days (edges are on D or
D + 1, sun offsets are at most 12 h), so any instant is covered only by windows of the few local
dates around it."""


@dataclass(frozen=True)
class PolarFallback:
    """A window whose sun event did not happen on a local date, and what was done instead.

    ``window`` is the index in ``schedule.windows``; ``edge`` the edge text (``"sunrise-30m"``);
    ``action`` is ``"skip"`` or ``"whole_day"``; ``reason`` says why (the sun stays above or
    below the event's elevation all that solar day). An event that happens but falls just past
    a local midnight is not missing (see :class:`~fieldstation.schedule.edges.SunEvents`).
    """

    day: date
    window: int
    edge: str
    action: Literal["skip", "whole_day"]
    reason: str


@dataclass(frozen=True)
class DayWindows:
    """Windows computed for one local date: intervals ``(start_us, end_us, polar)``."""

    day: date
    active: bool
    intervals: tuple[tuple[int, int, bool], ...]
    polar: tuple[PolarFallback, ...]


@dataclass(frozen=True)
class Piece:
    """A merged window (or the part of it in one local day): ``[start, end)`` µs UTC.

    ``polar`` is True when a polar fallback contributed; ``cut`` is True when the piece ends at
    a local midnight only because of the full-day cut (the schedule keeps recording after it);
    ``joined`` is True when the piece starts at such a cut; ``window_end`` is the end of the
    whole merged window the piece belongs to.
    """

    start: int
    end: int
    polar: bool
    cut: bool = False
    joined: bool = False
    window_end: int = 0


class WindowResolver:
    """Resolves a schedule's windows for a station, caching each local date's result."""

    MAX_CACHED_DAYS = 4000

    def __init__(self, schedule: ScheduleConfig, station: StationSection) -> None:
        self.schedule = schedule
        self.days = LocalDays(station.tz)
        self.edges = [(Edge.parse(w.start), Edge.parse(w.end)) for w in schedule.windows]
        needs_sun = any(edge.is_sun for pair in self.edges for edge in pair)
        self.sun = SunEvents.of(station) if needs_sun else None
        self._weekdays = (
            None
            if schedule.weekdays is None
            else {_WEEKDAYS.index(name) for name in schedule.weekdays}
        )
        self._cache: dict[date, DayWindows] = {}

    def active(self, day: date) -> bool:
        """True when local date ``day`` passes the schedule's date, weekday and Nth-day filters."""
        s = self.schedule
        if s.first_date is not None and day < s.first_date:
            return False
        if s.last_date is not None and day > s.last_date:
            return False
        if self._weekdays is not None and day.weekday() not in self._weekdays:
            return False
        anchor = s.first_date or _EPOCH_DAY
        return (day - anchor).days % s.every_nth_day == 0

    def day(self, day: date) -> DayWindows:
        """The windows computed for local date ``day`` (cached)."""
        found = self._cache.get(day)
        if found is None:
            if len(self._cache) >= self.MAX_CACHED_DAYS:
                self._cache.clear()
            found = self._cache[day] = self._resolve(day)
        return found

    def _resolve(self, day: date) -> DayWindows:
        if not self.active(day):
            return DayWindows(day, False, (), ())
        intervals: list[tuple[int, int, bool]] = []
        polar: list[PolarFallback] = []
        action = self.schedule.polar
        for index, (start_edge, end_edge) in enumerate(self.edges):
            edge = start_edge
            try:
                start = start_edge.on(day, self.days, self.sun)
                edge = end_edge
                end = end_edge.on(day, self.days, self.sun)
                # Crossing midnight is read on the wall clock, not from the instants: in a
                # spring-forward gap both edges shift to the same instant (02:00-03:00 on a
                # 02:00->03:00 day), which is an empty window, not a whole day.
                start_wall = start_edge.wall(day, start, self.days)
                if end_edge.wall(day, end, self.days) <= start_wall:
                    end = end_edge.on(day + timedelta(days=1), self.days, self.sun)
            except SunEventMissing as missing:
                polar.append(PolarFallback(day, index, edge.text, action, str(missing)))
                if action == "whole_day":
                    next_day = day + timedelta(days=1)
                    intervals.append((self.days.midnight(day), self.days.midnight(next_day), True))
                continue
            if end > start:
                intervals.append((start, end, False))
        return DayWindows(day, True, tuple(intervals), tuple(polar))

    def pieces(self, first: date, last: date) -> list[Piece]:
        """Merged, full-day-cut pieces of the windows computed for local dates first..last.

        Pieces near either end of the range may be incomplete (windows of dates outside it are
        missing); callers pad the range by :data:`REACH_DAYS` and more.
        """
        intervals: list[tuple[int, int, bool]] = []
        day = first
        while day <= last:
            intervals.extend(self.day(day).intervals)
            day += timedelta(days=1)
        intervals.sort()
        pieces: list[Piece] = []
        if not intervals:
            return pieces
        start, end, polar = intervals[0]
        for next_start, next_end, next_polar in intervals[1:]:
            if next_start <= end:
                end = max(end, next_end)
                polar = polar or next_polar
            else:
                pieces.extend(self._cut(start, end, polar))
                start, end, polar = next_start, next_end, next_polar
        pieces.extend(self._cut(start, end, polar))
        return pieces

    def _cut(self, start: int, end: int, polar: bool) -> list[Piece]:
        if end - start < 20 * 3600 * 1_000_000:  # shorter than any local day: no full day inside
            return [Piece(start, end, polar, window_end=end)]
        out: list[Piece] = []
        piece_start = start
        day = self.days.local_date(start) + timedelta(days=1)
        while True:
            midnight = self.days.midnight(day)
            if midnight >= end:
                break
            if self.days.midnight(day - timedelta(days=1)) >= start and midnight > piece_start:
                out.append(Piece(piece_start, midnight, polar, True, bool(out), end))
                piece_start = midnight
            day += timedelta(days=1)
        out.append(Piece(piece_start, end, polar, False, bool(out), end))
        return out
