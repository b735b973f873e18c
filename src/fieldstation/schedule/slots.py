"""Recording slots: the instants a sensor records, from windows and duty cycles.

Every function here is pure: the same schedule, station and query give the same slots, whatever
the range asked for (``slots_between(a, c) == slots_between(a, b) + slots_between(b, c)``).
Rules (see ``docs/schedules.md`` and decisions 0010-0013):

* no duty cycle: each window piece (see :mod:`fieldstation.schedule.windows`) is one slot;
* ``align = "window"`` (Beemon): starts at ``window start + k * period`` while the whole
  ``record`` still fits before the window end;
* ``align = "clock"`` (acoupi): starts at the instants whose local wall time is
  ``k * period + offset`` after local midnight and that lie inside a window; a slot is cut at the
  window end; a grid start before the window start is skipped (never clipped); in the repeated
  hour of a fall-back day both occurrences are grid instants unless that would overlap the
  previous slot, and grid times inside a spring-forward gap do not happen.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from fieldstation.schedule.edges import DAY_US, EPOCH, US, to_datetime, to_us
from fieldstation.schedule.windows import DayWindows, Piece, PolarFallback, WindowResolver

if TYPE_CHECKING:
    from fieldstation.config.schedule import ScheduleConfig
    from fieldstation.config.station import StationSection

__all__ = [
    "DEFAULT_HORIZON_DAYS",
    "DayPlan",
    "SchedulePlanner",
    "Slot",
    "next_slot",
    "plan_days",
    "planner",
    "slots_between",
]

DEFAULT_HORIZON_DAYS = 400
"""How far :func:`next_slot` looks ahead before answering None (days)."""
_PAD_DAYS = 8  # windows of local dates this far around a query can reach into it
_LOOK_US = 3 * DAY_US  # pieces are shorter than ~2 days + 1 h (full-day cut)
_CHUNK_US = 16 * DAY_US  # next_slot searches forward in chunks of this length
_EPOCH_DAY = date(1970, 1, 1)
_EPOCH = EPOCH


@dataclass(frozen=True, slots=True)
class Slot:
    """One recording slot.

    ``start``/``end``: aware UTC datetimes, ``end > start``. ``day``: the station's local date
    at ``start``. ``polar``: the slot comes from a polar fallback (``polar = "whole_day"``).
    ``continues``: the schedule's next slot starts exactly at ``end`` (continuous recording cut
    at a local midnight, or a duty cycle with no sleep): a recorder should carry on without a gap.
    """

    start: datetime
    end: datetime
    day: date
    polar: bool = False
    continues: bool = False

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class DayPlan:
    """What a schedule does on one local date (for previews).

    ``active``: the date passes the filters. ``windows``: merged windows starting that date,
    as ``(start, end)`` aware UTC. ``slots``: slots starting that date. ``polar``: windows whose
    sun event did not happen that date and the fallback applied.
    """

    day: date
    active: bool
    windows: tuple[tuple[datetime, datetime], ...]
    slots: tuple[Slot, ...]
    polar: tuple[PolarFallback, ...] = field(default=())

    @property
    def recorded_seconds(self) -> float:
        """Seconds recorded in the slots starting that date."""
        return sum(slot.duration for slot in self.slots)


class SchedulePlanner:
    """Slots of one schedule at one station; caches each local date's window resolution.

    Build one per (schedule, station) and reuse it, or call the module functions, which keep a
    small cache of planners. Safe to share between threads: its caches only ever gain complete
    entries (at worst two threads compute the same date).
    """

    def __init__(self, schedule: ScheduleConfig, station: StationSection) -> None:
        self.schedule = schedule
        self.station = station
        self.windows = WindowResolver(schedule, station)
        self.days = self.windows.days
        duty = schedule.duty_cycle
        self._record = round(duty.record * US) if duty else 0
        self._period = round(duty.period * US) if duty else 0
        self._offset = round(duty.offset * US) if duty else 0
        self._align = duty.align if duty else None

    # -- public API ---------------------------------------------------------------------------
    def slots_between(self, start: datetime, end: datetime) -> list[Slot]:
        """Slots whose start lies in ``[start, end)`` (aware datetimes), sorted, unclipped."""
        lo, hi = to_us(start), to_us(end)
        if hi <= lo:
            return []
        raw = list(self._iter(lo, hi + _LOOK_US))
        count = bisect.bisect_left(raw, hi, key=lambda item: item[0])
        if count and count == len(raw):  # the last one's successor lies beyond the lookahead
            last_end = raw[-1][1]
            raw.append((last_end if self._starts_at(last_end) else -1, 0, False))
        epoch, local_date, make = _EPOCH, self.days.local_date, Slot
        return [  # the hot loop of long previews: plain arithmetic, no helper calls
            make(
                epoch + timedelta(0, 0, s),
                epoch + timedelta(0, 0, e),
                local_date(s),
                polar,
                raw[i + 1][0] == e,
            )
            for i, (s, e, polar) in enumerate(raw[:count])
        ]

    def next_slot(self, now: datetime, horizon_days: int = DEFAULT_HORIZON_DAYS) -> Slot | None:
        """The slot containing ``now`` clipped to start at ``now``, else the next slot.

        Returns None when no slot starts within ``horizon_days`` days (e.g. after
        ``last_date``). ``now`` must be aware.
        """
        n = to_us(now)
        limit = n + horizon_days * DAY_US
        # A duty-cycle slot containing now started less than `record` ago; a whole piece
        # (continuous recording) less than _LOOK_US ago.
        lo = n - self._record if self._align else n - _LOOK_US
        hi = n + _CHUNK_US
        while lo < limit:
            for s, e, polar in self._iter(lo, min(hi, limit)):
                if e > n:
                    return self._slot(max(s, n), e, polar, self._starts_at(e))
            lo, hi = hi, hi + _CHUNK_US
        return None

    def plan_days(self, first: date, count: int) -> list[DayPlan]:
        """One :class:`DayPlan` per local date ``first`` .. ``first + count - 1``."""
        dates = [first + timedelta(days=i) for i in range(count)]
        if not dates:
            return []
        start = self.days.midnight(first)
        end = self.days.midnight(first + timedelta(days=count))
        slots: dict[date, list[Slot]] = {d: [] for d in dates}
        for slot in self.slots_between(to_datetime(start), to_datetime(end)):
            slots.setdefault(slot.day, []).append(slot)
        windows: dict[date, list[tuple[datetime, datetime]]] = {d: [] for d in dates}
        for piece in self._pieces(start, end):
            if start <= piece.start < end:
                day = self.days.local_date(piece.start)
                windows.setdefault(day, []).append(
                    (to_datetime(piece.start), to_datetime(piece.end))
                )
        plans = []
        for d in dates:
            resolved: DayWindows = self.windows.day(d)
            plans.append(
                DayPlan(d, resolved.active, tuple(windows[d]), tuple(slots[d]), resolved.polar)
            )
        return plans

    # -- internals ----------------------------------------------------------------------------
    def _slot(self, s: int, e: int, polar: bool, continues: bool) -> Slot:
        return Slot(to_datetime(s), to_datetime(e), self.days.local_date(s), polar, continues)

    def _pieces(self, lo: int, hi: int) -> list[Piece]:
        first = self.days.local_date(lo) - timedelta(days=_PAD_DAYS)
        last = self.days.local_date(hi) + timedelta(days=_PAD_DAYS)
        return self.windows.pieces(first, last)

    def _starts_at(self, instant: int) -> bool:
        return any(s == instant for s, _, _ in self._iter(instant, instant + 1))

    def _iter(self, lo: int, hi: int) -> Iterator[tuple[int, int, bool]]:
        """Slots ``(start_us, end_us, polar)`` with ``lo <= start < hi``, in order."""
        for piece in self._pieces(lo, hi):
            if piece.end <= lo or piece.start >= hi:
                continue
            if self._align is None:
                if piece.start >= lo:
                    yield piece.start, piece.end, piece.polar
            elif self._align == "window":
                yield from self._window_aligned(piece, lo, hi)
            else:
                yield from self._clock_aligned(piece, lo, hi)

    def _window_aligned(self, piece: Piece, lo: int, hi: int) -> Iterator[tuple[int, int, bool]]:
        record, period = self._record, self._period
        k = max(0, -(-(lo - piece.start) // period))
        start = piece.start + k * period
        while start < hi and start + record <= piece.end:
            yield start, start + record, piece.polar
            start += period

    def _clock_aligned(self, piece: Piece, lo: int, hi: int) -> Iterator[tuple[int, int, bool]]:
        # A slot runs on across a full-day cut (the window goes on) and is cut only at the end
        # of the merged window. A grid start inside the previous slot (possible only in a
        # repeated fall-back hour) is dropped; the previous grid start may lie in the piece
        # before a cut, so the grid is read from `record` earlier in that case.
        record = self._record
        first = piece.start - record if piece.joined else piece.start
        previous: int | None = None
        for start in self._grid(max(first, lo - record), min(piece.end, hi)):
            overlaps = previous is not None and start < previous + record
            previous = start
            if start >= lo and start >= piece.start and not overlaps:
                yield start, min(start + record, piece.window_end), piece.polar

    def _grid(self, lo: int, hi: int) -> Iterator[int]:
        """Instants in ``[lo, hi)`` whose local wall time is ``offset + k * period``, in order."""
        if hi <= lo:
            return
        period, offset = self._period, self._offset
        day = self.days.local_date(lo) - timedelta(days=1)
        last = self.days.local_date(hi) + timedelta(days=1)
        while day <= last:
            naive_midnight = (day - _EPOCH_DAY).days * DAY_US
            for segment in self.days.segments(day):
                base = naive_midnight - segment.offset + offset
                start, stop = max(segment.start, lo), min(segment.end, hi)
                if start >= stop:
                    continue
                k = -(-(start - base) // period)
                instant = base + k * period
                while instant < stop:  # segments follow each other in time: already in order
                    yield instant
                    instant += period
            day += timedelta(days=1)


_PLANNERS: OrderedDict[tuple[object, ...], SchedulePlanner] = OrderedDict()
_MAX_PLANNERS = 32
_PLANNERS_LOCK = threading.Lock()


def planner(schedule: ScheduleConfig, station: StationSection) -> SchedulePlanner:
    """A cached :class:`SchedulePlanner` for ``schedule`` at ``station`` (keyed by content)."""
    key = (
        repr(schedule.model_dump()),
        station.latitude,
        station.longitude,
        station.elevation,
        station.timezone,
    )
    with _PLANNERS_LOCK:
        found = _PLANNERS.get(key)
        if found is None:
            found = _PLANNERS[key] = SchedulePlanner(schedule, station)
            while len(_PLANNERS) > _MAX_PLANNERS:
                _PLANNERS.popitem(last=False)
        else:
            _PLANNERS.move_to_end(key)
        return found


def slots_between(
    schedule: ScheduleConfig, station: StationSection, start: datetime, end: datetime
) -> list[Slot]:
    """Slots of ``schedule`` at ``station`` whose start lies in ``[start, end)``.

    ``start``/``end`` are aware datetimes; slots are sorted, non-overlapping, not clipped to the
    query, and the result does not depend on how a range is split. Raises ``ValueError`` for
    naive datetimes.
    """
    return planner(schedule, station).slots_between(start, end)


def next_slot(
    schedule: ScheduleConfig,
    station: StationSection,
    now: datetime,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
) -> Slot | None:
    """The slot containing ``now`` (clipped to start at ``now``) or the next one, or None.

    Searches ``horizon_days`` days ahead (default 400). Cheap to call repeatedly: window
    resolution is cached per local date.
    """
    return planner(schedule, station).next_slot(now, horizon_days)


def plan_days(
    schedule: ScheduleConfig, station: StationSection, first: date, count: int
) -> list[DayPlan]:
    """Per-day plans (windows, slots, polar fallbacks) for ``count`` local dates from ``first``."""
    return planner(schedule, station).plan_days(first, count)
