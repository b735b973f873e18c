"""Window edges on a local date: local wall-clock times and sun events, as UTC instants.

Instants are integers: microseconds since 1970-01-01 UTC (exact, unlike float seconds), turned
into aware ``datetime`` objects only at the API boundary (:func:`to_datetime`).

Daylight-saving rules for local wall-clock times (documented in ``docs/schedules.md``):

* a local time that does not exist (spring forward) is shifted forward to the first instant
  after the gap (``02:30`` on a 02:00→03:00 day becomes ``03:00``), as pandas'
  ``nonexistent="shift_forward"`` does;
* a local time that happens twice (fall back) is the first occurrence (PEP 495 ``fold=0``).

Sun events come from :mod:`astral` (``astral.sun``; NOAA solar equations) for an observer at the
station's latitude, longitude and elevation: the events of the solar day whose noon falls on the
station's local date (see :class:`SunEvents`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from fieldstation.config.schedule import parse_edge

if TYPE_CHECKING:
    from fieldstation.config.station import StationSection

__all__ = [
    "DAY_US",
    "US",
    "Edge",
    "LocalDays",
    "SunEventMissing",
    "SunEvents",
    "to_datetime",
    "to_us",
]

US = 1_000_000
"""Microseconds per second."""
DAY_US = 86_400 * US
"""Microseconds per 24 hours."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_CACHED = 20_000  # entries per cache (each one local date): years of a running station


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware ``datetime``; raises ``ValueError`` if naive."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} is naive: give a timezone-aware datetime (UTC)")
    return (moment - EPOCH) // _ONE_US


def to_datetime(us: int) -> datetime:
    """Aware UTC ``datetime`` of ``us`` microseconds since the epoch."""
    return EPOCH + timedelta(0, 0, us)


class SunEventMissing(ValueError):
    """A sun event does not happen on a local date (polar day or polar night)."""


@dataclass(frozen=True)
class Segment:
    """A stretch of a local day with one UTC offset: instants ``[start, end)``, offset µs."""

    start: int
    end: int
    offset: int


class LocalDays:
    """Local dates and wall-clock times of one timezone, as UTC microsecond instants (cached)."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._midnights: dict[date, int] = {}
        self._segments: dict[date, tuple[Segment, ...]] = {}
        self._last = Segment(0, 0, 0)  # segment of the latest local_date() answer

    def offset(self, us: int) -> int:
        """UTC offset (µs) in force at instant ``us``."""
        offset = to_datetime(us).astimezone(self.tz).utcoffset()
        assert offset is not None
        return offset // _ONE_US

    def local_date(self, us: int) -> date:
        """Local calendar date of instant ``us``."""
        last = self._last
        if not last.start <= us < last.end:
            day = to_datetime(us).astimezone(self.tz).date()
            for segment in self.segments(day):
                if segment.start <= us < segment.end:
                    self._last = last = segment
                    break
            else:  # only around a skipped local midnight
                return day
        return date.fromordinal(_EPOCH_ORDINAL + (us + last.offset) // DAY_US)

    def wall(self, us: int) -> datetime:
        """Local wall-clock time (aware, station timezone) of instant ``us``."""
        return to_datetime(us).astimezone(self.tz)

    def to_utc(self, day: date, seconds_us: int) -> int:
        """The instant of local wall time ``day 00:00 + seconds_us`` (may pass 24 h).

        Non-existent times are shifted forward to the end of the gap; ambiguous ones take the
        first occurrence (``fold=0``).
        """
        naive = datetime.combine(day, time()) + timedelta(microseconds=seconds_us)
        first = to_us(naive.replace(tzinfo=self.tz, fold=0))
        if self._is_wall(first, naive):
            return first
        # In a gap fold=0 maps with the offset before the transition, i.e. past the gap's end;
        # the transition lies within the few hours before that.
        return self._transition(first - 6 * 3600 * US, first)

    def midnight(self, day: date) -> int:
        """First instant of local date ``day`` (its 00:00, shifted forward if missing)."""
        found = self._midnights.get(day)
        if found is None:
            if len(self._midnights) >= _MAX_CACHED:
                self._midnights.clear()
            found = self._midnights[day] = self.to_utc(day, 0)
        return found

    def segments(self, day: date) -> tuple[Segment, ...]:
        """The instants of local date ``day`` split where the UTC offset changes (usually one)."""
        found = self._segments.get(day)
        if found is not None:
            return found
        start, end = self.midnight(day), self.midnight(day + timedelta(days=1))
        first, last = self.offset(start), self.offset(end - 1)
        if first == last and end - start == DAY_US:
            found = (Segment(start, end, first),)
        else:
            change = self._transition(start, end - 1)
            found = (Segment(start, change, first), Segment(change, end, last))
        if len(self._segments) >= _MAX_CACHED:
            self._segments.clear()
        self._segments[day] = found
        return found

    def _is_wall(self, us: int, naive: datetime) -> bool:
        return self.wall(us).replace(tzinfo=None) == naive

    def _transition(self, before: int, after: int) -> int:
        """First instant (whole second) in ``(before, after]`` with ``after``'s UTC offset."""
        target = self.offset(after)
        lo, hi = before // US, -(-after // US)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.offset(mid * US) == target:
                hi = mid
            else:
                lo = mid
        return hi * US


_SUN_RADIUS = 0.26666666666666666  # degrees, astral.sun.SUN_APPARENT_RADIUS
_EVENTS: dict[str, tuple[bool, float, str]] = {
    # name: (rising, sun elevation in degrees, what the elevation means)
    "sunrise": (True, -_SUN_RADIUS, "the horizon"),
    "sunset": (False, -_SUN_RADIUS, "the horizon"),
    "civil_dawn": (True, -6.0, "6 degrees below the horizon"),
    "civil_dusk": (False, -6.0, "6 degrees below the horizon"),
    "nautical_dawn": (True, -12.0, "12 degrees below the horizon"),
    "nautical_dusk": (False, -12.0, "12 degrees below the horizon"),
    "astronomical_dawn": (True, -18.0, "18 degrees below the horizon"),
    "astronomical_dusk": (False, -18.0, "18 degrees below the horizon"),
}


class SunEvents:
    """Sun events at one place, per local date, computed with astral and cached.

    The event of a local date ``D`` is the one of the solar day whose noon falls on ``D``: a
    rising event (sunrise, dawns) is the last one before that noon, a setting event (sunset,
    dusks) the first one after it. This is astral's answer on ordinary days; it differs where
    an event drifts across local midnight, where astral finds none on the date and raises
    although the sun does cross that elevation (astronomical dusk at A Coruna, 43.4 N 8.4 W,
    falls at 00:00 CEST in late May: the dusk of 19 May is at 00:00:42 on the 20th). Times come
    from ``astral.sun.time_at_elevation`` (NOAA equations, refraction and observer elevation
    included, as astral's own ``sunrise``/``dusk``), solar noon from ``astral.sun.noon``.

    Raises :class:`SunEventMissing` only when the sun never reaches the event's elevation in
    that solar day (polar day or night).
    """

    def __init__(self, latitude: float, longitude: float, elevation: float, tz: ZoneInfo) -> None:
        from astral import Observer

        self.tz = tz
        self._observer = Observer(latitude=latitude, longitude=longitude, elevation=elevation)
        self._cache: dict[tuple[str, date], int | str] = {}

    @classmethod
    def of(cls, station: StationSection) -> SunEvents:
        """Sun events at ``station`` (latitude, longitude, elevation in metres, timezone)."""
        return cls(station.latitude, station.longitude, float(station.elevation), station.tz)

    def at(self, event: str, day: date) -> int:
        """Instant (µs) of ``event`` (a name in ``SUN_EVENTS``) on local date ``day``."""
        key = (event, day)
        found = self._cache.get(key)
        if found is None:
            computed = self._compute(event, day)
            # astral is good to about a minute; whole seconds read better in file names.
            found = computed if isinstance(computed, str) else round(to_us(computed) / US) * US
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key] = found
        if isinstance(found, str):
            raise SunEventMissing(f"no {event} on {day.isoformat()}: {found}")
        return found

    def _compute(self, event: str, day: date) -> datetime | str:
        """The event's time on local date ``day``, or why it does not happen."""
        from astral import sun

        if event == "noon":
            return self._noon(day)
        rising, elevation, meaning = _EVENTS[event]
        direction = sun.SunDirection.RISING if rising else sun.SunDirection.SETTING
        # the event of the solar day of `day` lies between this noon and the one before (rising)
        # or after (setting); astral's date argument is a UTC date, so look on either side.
        noon = self._noon(day)
        lo, hi = (self._noon(day - timedelta(days=1)), noon) if rising else (noon, None)
        if hi is None:
            hi = self._noon(day + timedelta(days=1))
        noon_utc = noon.astimezone(UTC).date()
        for shift in (0, -1, 1):
            try:
                found = sun.time_at_elevation(
                    self._observer, elevation, noon_utc + timedelta(days=shift), direction, UTC
                )
            except ValueError:
                continue
            if lo < found < hi:
                return found
        high = sun.elevation(self._observer, noon) > elevation
        state = "above" if high else "below"
        return f"the sun stays {state} {meaning} all day (polar {'day' if high else 'night'})"

    def _noon(self, day: date) -> datetime:
        """Solar noon (aware UTC) falling on local date ``day``."""
        from astral import sun

        found: datetime = sun.noon(self._observer, day)
        local = found.astimezone(self.tz).date()
        if local != day:  # astral's date is a UTC date; far from UTC the local date differs
            found = sun.noon(self._observer, day + (day - local))
        return found


@dataclass(frozen=True)
class Edge:
    """A parsed window edge: ``anchor`` ("clock" or a sun event) and ``offset`` in µs.

    For ``clock`` the offset is the local wall time after midnight (``24:00`` = next midnight);
    for a sun event it is the signed shift from the event.
    """

    text: str
    anchor: str
    offset: int

    @classmethod
    def parse(cls, text: str) -> Edge:
        """Parse ``"05:30"``, ``"24:00"``, ``"sunset-30m"``...; raises ``ValueError``."""
        anchor, offset = parse_edge(text)
        return cls(text, anchor, round(offset * US))

    @property
    def is_sun(self) -> bool:
        """True for a sun-relative edge."""
        return self.anchor != "clock"

    def on(self, day: date, days: LocalDays, sun: SunEvents | None) -> int:
        """Instant (µs) of this edge on local date ``day``; raises :class:`SunEventMissing`."""
        if self.anchor == "clock":
            return days.to_utc(day, self.offset)
        if sun is None:
            raise ValueError("a sun-relative edge needs SunEvents")
        return sun.at(self.anchor, day) + self.offset

    def wall(self, day: date, instant: int, days: LocalDays) -> datetime:
        """Local wall-clock time (naive) of this edge on ``day``, resolved to ``instant`` (µs).

        For a clock edge it is the time as written, even when that does not exist (a time in a
        spring-forward gap stays ``02:30`` although its instant is the end of the gap); for a
        sun edge it is the wall time of ``instant``. Windows compare these to decide whether
        they cross midnight.
        """
        if self.anchor == "clock":
            return datetime.combine(day, time()) + timedelta(microseconds=self.offset)
        return days.wall(instant).replace(tzinfo=None)
