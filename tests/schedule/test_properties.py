"""Property-based tests (hypothesis) of slots over random schedules, places and ranges.

The window oracle is independent of the merging code: it takes the raw intervals each local
date's windows resolve to (``WindowResolver.day``) and checks coverage directly. The
completeness properties at the end check the other direction (every slot that must exist does)
against windows computed here from the schedule's clock times with zoneinfo alone.
"""

from __future__ import annotations

import bisect
import os
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fieldstation.config.schedule import ScheduleConfig
from fieldstation.config.station import StationSection
from fieldstation.schedule import SchedulePlanner
from fieldstation.schedule.edges import to_us

PLACES = {
    "oxford": (51.752, -1.2577, 60.0, "Europe/London"),
    "new_york": (40.7128, -74.006, 10.0, "America/New_York"),
    "svalbard": (78.2, 15.6, 10.0, "Arctic/Longyearbyen"),
    "sydney": (-33.87, 151.21, 20.0, "Australia/Sydney"),
    "lord_howe": (-31.55, 159.08, 0.0, "Australia/Lord_Howe"),  # 30-minute DST shift
    "santiago": (-33.45, -70.67, 570.0, "America/Santiago"),  # DST changes at midnight
}
SUN = ["sunrise", "sunset", "noon", "civil_dawn", "civil_dusk", "nautical_dusk"]
CLOCK_PERIODS = [10, 60, 300, 600, 900, 3600, 7200]  # divide a day

clock_edge = st.builds(
    lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 24), st.sampled_from([0, 15, 30, 45])
).filter(lambda t: t <= "24:00")
sun_edge = st.builds(
    lambda event, sign, minutes: f"{event}{sign}{minutes}m" if minutes else event,
    st.sampled_from(SUN),
    st.sampled_from("+-"),
    st.integers(0, 720),
)
window = st.fixed_dictionaries({"start": clock_edge | sun_edge, "end": clock_edge | sun_edge})


@st.composite
def duty_cycles(draw: st.DrawFn) -> dict[str, Any] | None:
    kind = draw(st.sampled_from(["none", "window", "clock"]))
    if kind == "none":
        return None
    if kind == "window":
        record = draw(st.integers(30, 3600))
        return {"record": record, "sleep": draw(st.integers(0, 3600)), "align": "window"}
    period = draw(st.sampled_from(CLOCK_PERIODS))
    return {
        "record": draw(st.integers(1, period)),
        "every": period,
        "offset": draw(st.integers(0, period - 1)),
        "align": "clock",
    }


@st.composite
def schedules(draw: st.DrawFn) -> ScheduleConfig:
    fields: dict[str, Any] = {
        "windows": draw(st.lists(window, min_size=1, max_size=3)),
        "polar": draw(st.sampled_from(["skip", "whole_day"])),
        "every_nth_day": draw(st.sampled_from([1, 1, 2, 3])),
    }
    duty = draw(duty_cycles())
    if duty is not None:
        fields["duty_cycle"] = duty
    if draw(st.booleans()):
        first = draw(st.dates(min_value=date(2025, 12, 1), max_value=date(2026, 12, 31)))
        fields["first_date"] = first
        fields["last_date"] = first + timedelta(days=draw(st.integers(0, 60)))
    if draw(st.booleans()):
        fields["weekdays"] = draw(
            st.lists(
                st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                min_size=1,
                unique=True,
            )
        )
    return ScheduleConfig.model_validate(fields)


places = st.sampled_from(sorted(PLACES)).map(
    lambda name: StationSection(
        id="p",
        latitude=PLACES[name][0],
        longitude=PLACES[name][1],
        elevation=PLACES[name][2],
        timezone=PLACES[name][3],
    )
)
# 2026 holds every DST change of the places above; ranges of up to 3 days
instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 20), timezones=st.just(UTC)
)
spans = st.timedeltas(min_value=timedelta(hours=1), max_value=timedelta(days=3))
SETTINGS = settings(
    max_examples=int(os.environ.get("SCHEDULE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def raw_union(planner: SchedulePlanner, lo: int, hi: int) -> list[tuple[int, int]]:
    """Union of the raw per-date window intervals around [lo, hi), merged here (oracle)."""
    days = planner.days
    first = days.local_date(lo) - timedelta(days=4)
    last = days.local_date(hi) + timedelta(days=4)
    intervals = []
    day = first
    while day <= last:
        intervals += [(s, e) for s, e, _ in planner.windows.day(day).intervals]
        day += timedelta(days=1)
    union: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if union and s <= union[-1][1]:
            union[-1] = (union[-1][0], max(union[-1][1], e))
        else:
            union.append((s, e))
    return union


@SETTINGS
@given(schedule=schedules(), station=places, start=instants, span=spans)
@example(  # found by hypothesis: a clock-aligned slot across a full-day cut at midnight
    schedule=ScheduleConfig.model_validate(
        {
            "windows": [{"start": "00:00", "end": "00:00"}],
            "duty_cycle": {"record": 2, "every": 10, "offset": 9, "align": "clock"},
        }
    ),
    station=StationSection(
        id="p", latitude=-31.55, longitude=159.08, timezone="Australia/Lord_Howe"
    ),
    start=datetime(2026, 1, 1, tzinfo=UTC),
    span=timedelta(days=1),
)
def test_slots_sorted_disjoint_inside_windows_and_full_length(schedule, station, start, span):
    planner = SchedulePlanner(schedule, station)
    end = start + span
    slots = planner.slots_between(start, end)
    lo, hi = to_us(start), to_us(end)
    union = raw_union(planner, lo - 3 * 86_400_000_000, hi + 3 * 86_400_000_000)
    duty = schedule.duty_cycle
    for slot in slots:
        assert start <= slot.start < end
        assert slot.end > slot.start
        s, e = to_us(slot.start), to_us(slot.end)
        i = bisect.bisect_right(union, (s, 2**63)) - 1
        container = [union[i]] if i >= 0 and union[i][0] <= s and e <= union[i][1] else []
        assert container, f"{slot} is outside every window"
        if duty is not None and slot.duration != duty.record:
            assert duty.align == "clock" and slot.duration < duty.record
            assert e == container[0][1], "only the window end may shorten a slot"
        if duty is not None and duty.align == "clock":
            local = slot.start.astimezone(station.tz)
            seconds = local.hour * 3600 + local.minute * 60 + local.second
            assert (seconds - duty.offset) % duty.period == 0
    for a, b in pairwise(slots):
        assert a.start < b.start
        assert a.end <= b.start
        assert a.continues == (a.end == b.start)


@SETTINGS
@given(
    schedule=schedules(),
    station=places,
    start=instants,
    first=spans,
    second=spans,
)
def test_slots_are_stable_under_splitting_the_range(schedule, station, start, first, second):
    planner = SchedulePlanner(schedule, station)
    middle, end = start + first, start + first + second
    whole = planner.slots_between(start, end)
    fresh = SchedulePlanner(schedule, station)  # a cold cache must agree too
    assert whole == fresh.slots_between(start, middle) + fresh.slots_between(middle, end)


@SETTINGS
@given(schedule=schedules(), station=places, now=instants)
def test_next_slot_agrees_with_slots_between(schedule, station, now):
    planner = SchedulePlanner(schedule, station)
    found = planner.next_slot(now, horizon_days=10)
    listed = [
        s
        for s in planner.slots_between(now - timedelta(days=3), now + timedelta(days=10))
        if s.end > now
    ]
    if not listed:
        assert found is None
        return
    first = listed[0]
    assert found is not None
    assert found.start == max(first.start, now)
    assert (found.end, found.polar, found.continues) == (first.end, first.polar, first.continues)


# -- completeness: slots against an independent zoneinfo computation of clock-time windows ----
# The properties above only check the slots that exist; a planner returning no slots would pass
# them. These compute what must be there from the schedule's words alone, with zoneinfo.

ORACLE_PERIODS = [60, 300, 600, 900, 3600, 7200]  # divide a day; >= 1 min keeps the grid cheap
_WEEKDAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@st.composite
def clock_schedules(draw: st.DrawFn, align: str | None) -> ScheduleConfig:
    fields: dict[str, Any] = {
        "windows": draw(
            st.lists(
                st.fixed_dictionaries({"start": clock_edge, "end": clock_edge}),
                min_size=1,
                max_size=3,
            )
        ),
        "every_nth_day": draw(st.sampled_from([1, 1, 2])),
    }
    if align == "window":
        fields["duty_cycle"] = {
            "record": draw(st.integers(30, 3600)),
            "sleep": draw(st.integers(0, 3600)),
            "align": "window",
        }
    elif align == "clock":
        period = draw(st.sampled_from(ORACLE_PERIODS))
        fields["duty_cycle"] = {
            "record": draw(st.integers(1, period)),
            "every": period,
            "offset": draw(st.integers(0, period - 1)),
            "align": "clock",
        }
    if draw(st.booleans()):
        first = draw(st.dates(min_value=date(2025, 12, 20), max_value=date(2026, 12, 20)))
        fields["first_date"] = first
        fields["last_date"] = first + timedelta(days=draw(st.integers(0, 20)))
    if draw(st.booleans()):
        fields["weekdays"] = draw(
            st.lists(st.sampled_from(_WEEKDAY_NAMES), min_size=1, max_size=6, unique=True)
        )
    return ScheduleConfig.model_validate(fields)


short_spans = st.timedeltas(min_value=timedelta(hours=1), max_value=timedelta(days=2))


def _utc(naive: datetime, tz: ZoneInfo) -> datetime:
    """The instant of local wall time ``naive``: shifted forward out of a gap, first if twice."""
    first = naive.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return first.astimezone(UTC)
    # in a gap: fold=1 reads the time with the offset after the change, i.e. before the gap's
    # end; walk forward a minute at a time to the first instant whose wall time is not earlier
    moment = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    while moment.astimezone(tz).replace(tzinfo=None) < naive:
        moment += timedelta(minutes=1)
    return moment


def _seconds(edge: str) -> timedelta:
    hours, minutes = edge.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes))


def _recorded_on(schedule: ScheduleConfig, day: date) -> bool:
    if schedule.first_date is not None and day < schedule.first_date:
        return False
    if schedule.last_date is not None and day > schedule.last_date:
        return False
    if schedule.weekdays is not None and _WEEKDAY_NAMES[day.weekday()] not in schedule.weekdays:
        return False
    return (day - (schedule.first_date or date(1970, 1, 1))).days % schedule.every_nth_day == 0


def _local_dates(tz: ZoneInfo, lo: datetime, hi: datetime, pad: int) -> list[date]:
    first, last = lo.astimezone(tz).date(), hi.astimezone(tz).date()
    return [first + timedelta(days=n) for n in range(-pad, (last - first).days + pad + 1)]


def expected_windows(
    schedule: ScheduleConfig, tz: ZoneInfo, lo: datetime, hi: datetime
) -> list[tuple[datetime, datetime]]:
    """Merged windows around [lo, hi): each window on each recorded local date, end on the
    next date when it is not after the start on the wall clock, then overlaps merged."""
    intervals = []
    for day in _local_dates(tz, lo, hi, pad=4):
        if not _recorded_on(schedule, day):
            continue
        midnight = datetime.combine(day, time())
        for w in schedule.windows:
            start, end = midnight + _seconds(w.start), midnight + _seconds(w.end)
            if end <= start:
                end += timedelta(days=1)
            s, e = _utc(start, tz), _utc(end, tz)
            if e > s:
                intervals.append((s, e))
    union: list[tuple[datetime, datetime]] = []
    for s, e in sorted(intervals):
        if union and s <= union[-1][1]:
            union[-1] = (union[-1][0], max(union[-1][1], e))
        else:
            union.append((s, e))
    return union


def expected_pieces(
    union: list[tuple[datetime, datetime]], tz: ZoneInfo, lo: datetime, hi: datetime
) -> list[tuple[datetime, datetime]]:
    """The windows cut at every local midnight whose whole local day before lies inside."""
    midnights = [_utc(datetime.combine(d, time()), tz) for d in _local_dates(tz, lo, hi, pad=5)]
    pieces = []
    for s, e in union:
        start = s
        for before, midnight in pairwise(midnights):
            if s <= before and midnight < e and midnight > start:
                pieces.append((start, midnight))
                start = midnight
        pieces.append((start, e))
    return pieces


def _in(pairs, lo, hi):
    return [(s, e) for s, e in pairs if lo <= s < hi]


def _station(place: str) -> StationSection:
    latitude, longitude, elevation, timezone = PLACES[place]
    return StationSection(
        id="p", latitude=latitude, longitude=longitude, elevation=elevation, timezone=timezone
    )


@SETTINGS
@given(schedule=clock_schedules(None), station=places, start=instants, span=short_spans)
@example(  # a window inside New York's spring-forward gap is empty, not a whole day
    schedule=ScheduleConfig.model_validate({"windows": [{"start": "02:00", "end": "03:00"}]}),
    station=_station("new_york"),
    start=datetime(2026, 3, 7, 12, tzinfo=UTC),
    span=timedelta(days=2),
)
def test_without_duty_cycle_slots_are_exactly_the_windows(schedule, station, start, span):
    end = start + span
    tz = station.tz
    pieces = expected_pieces(expected_windows(schedule, tz, start, end), tz, start, end)
    slots = SchedulePlanner(schedule, station).slots_between(start, end)
    assert [(s.start, s.end) for s in slots] == _in(pieces, start, end)


@SETTINGS
@given(schedule=clock_schedules("window"), station=places, start=instants, span=short_spans)
@example(  # the last start is kept when its record ends exactly at the window end
    schedule=ScheduleConfig.model_validate(
        {
            "windows": [{"start": "08:00", "end": "08:10"}, {"start": "22:00", "end": "22:45"}],
            "duty_cycle": {"record": 300, "sleep": 0},
        }
    ),
    station=_station("oxford"),
    start=datetime(2026, 6, 1, tzinfo=UTC),
    span=timedelta(days=1),
)
def test_window_aligned_slots_fill_each_window_piece(schedule, station, start, span):
    end = start + span
    tz = station.tz
    duty = schedule.duty_cycle
    record, period = timedelta(seconds=duty.record), timedelta(seconds=duty.period)
    expected = []
    for s, e in expected_pieces(expected_windows(schedule, tz, start, end), tz, start, end):
        count = (e - s - record) // period + 1 if e - s >= record else 0
        expected += [(s + k * period, s + k * period + record) for k in range(count)]
    slots = SchedulePlanner(schedule, station).slots_between(start, end)
    assert [(s.start, s.end) for s in slots] == _in(expected, start, end)


@SETTINGS
@given(schedule=clock_schedules("clock"), station=places, start=instants, span=short_spans)
@example(  # Lord Howe repeats 01:30-02:00: the second 01:30 would start inside the first's slot
    schedule=ScheduleConfig.model_validate(
        {
            "windows": [{"start": "01:30", "end": "06:00"}],  # a mark at the window start
            "duty_cycle": {"record": 3600, "every": 7200, "offset": 5400, "align": "clock"},
        }
    ),
    station=_station("lord_howe"),
    start=datetime(2026, 4, 4, 12, tzinfo=UTC),
    span=timedelta(days=1),
)
def test_clock_aligned_slots_start_at_every_grid_mark_in_a_window(schedule, station, start, span):
    end = start + span
    tz = station.tz
    duty = schedule.duty_cycle
    record = timedelta(seconds=duty.record)
    marks = set()  # every instant whose local wall time is offset + k * period
    for day in _local_dates(tz, start, end, pad=1):
        midnight = datetime.combine(day, time())
        for k in range(86_400 // int(duty.period)):
            naive = midnight + timedelta(seconds=duty.offset + k * duty.period)
            for fold in (0, 1):  # both occurrences of a repeated time; none of a skipped one
                moment = naive.replace(tzinfo=tz, fold=fold)
                if moment.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
                    marks.add(moment.astimezone(UTC))
    expected = []
    for s, e in expected_windows(schedule, tz, start, end):
        inside = sorted(m for m in marks if s <= m < e)
        for previous, mark in zip([None, *inside], inside, strict=False):
            if previous is not None and mark < previous + record:
                continue  # a repeated fall-back mark inside the previous slot
            expected.append((mark, min(mark + record, e)))
    slots = SchedulePlanner(schedule, station).slots_between(start, end)
    got = [(s.start, s.end) for s in slots]
    fitting = [(s, e) for s, e in _in(expected, start, end) if e - s == record]
    assert set(fitting) <= set(got), "a grid mark whose slot fits the window is not a start"
    assert got == _in(expected, start, end)
