"""Daylight-saving changes at mid-latitudes and polar day/night at Svalbard."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from fieldstation.schedule import next_slot, plan_days, slots_between

# (place, timezone, spring-forward date, fall-back date) in 2026
DST = [
    ("oxford", "Europe/London", date(2026, 3, 29), date(2026, 10, 25)),
    ("new_york", "America/New_York", date(2026, 3, 8), date(2026, 11, 1)),
]


def days_around(day: date) -> list[date]:
    return [day + timedelta(days=n) for n in range(-2, 3)]


@pytest.mark.parametrize(("place", "tzname", "spring", "autumn"), DST)
def test_a_0530_window_stays_at_0530_local_across_both_changes(
    at, make_schedule, place, tzname, spring, autumn
):
    tz = ZoneInfo(tzname)
    station = at(place)
    s = make_schedule(windows=[{"start": "05:30", "end": "07:00"}])
    for change in (spring, autumn):
        plans = plan_days(s, station, change - timedelta(days=2), 5)
        offsets = set()
        for plan in plans:
            (slot,) = plan.slots
            start, end = slot.start.astimezone(tz), slot.end.astimezone(tz)
            assert (start.date(), start.time(), end.time()) == (plan.day, time(5, 30), time(7))
            assert slot.duration == 90 * 60
            offsets.add(start.utcoffset())
        assert len(offsets) == 2  # the UTC time of the window did move with the change


@pytest.mark.parametrize(("place", "tzname", "spring", "autumn"), DST)
def test_nonexistent_local_time_is_shifted_forward_ambiguous_takes_first(
    at, make_schedule, place, tzname, spring, autumn
):
    tz = ZoneInfo(tzname)
    station = at(place)
    gap_hour = 1 if tzname == "Europe/London" else 2  # 01:00->02:00 UK, 02:00->03:00 US
    inside = f"{gap_hour:02d}:30"
    s = make_schedule(windows=[{"start": inside, "end": f"{gap_hour + 3:02d}:00"}])
    (slot,) = plan_days(s, station, spring, 1)[0].slots
    # 01:30 does not exist on the spring day: the window starts when the clocks jump
    assert slot.start.astimezone(tz).time() == time(gap_hour + 1, 0)
    assert (
        slot.start.astimezone(tz).utcoffset()
        != (slot.start - timedelta(seconds=1)).astimezone(tz).utcoffset()
    )
    # on the autumn day 01:30 happens twice: the window starts at the first one (fold=0)
    fall_hour = 1  # both zones repeat 01:00-02:00 local
    s = make_schedule(windows=[{"start": f"{fall_hour:02d}:30", "end": "04:00"}])
    (slot,) = plan_days(s, station, autumn, 1)[0].slots
    start = slot.start.astimezone(tz)
    assert start.time() == time(1, 30) and start.fold == 0
    assert slot.duration == 3.5 * 3600  # 01:30 (first) .. 04:00 is 3.5 real hours


@pytest.mark.parametrize(("place", "tzname", "spring", "autumn"), DST)
def test_clock_aligned_grid_keeps_local_marks_across_changes(
    at, make_schedule, place, tzname, spring, autumn
):
    tz = ZoneInfo(tzname)
    station = at(place)
    s = make_schedule(duty_cycle={"record": "1m", "every": "15m", "offset": "5s", "align": "clock"})
    for change, hours in ((spring, 23), (autumn, 25)):
        plan = plan_days(s, station, change, 1)[0]
        assert len(plan.slots) == hours * 4
        assert {slot.start.astimezone(tz).strftime("%M:%S") for slot in plan.slots} == {
            "00:05",
            "15:05",
            "30:05",
            "45:05",
        }
        starts = [slot.start for slot in plan.slots]
        assert all(b - a == timedelta(minutes=15) for a, b in pairwise(starts))


@pytest.mark.parametrize(("place", "tzname", "spring", "autumn"), DST)
def test_continuous_days_are_23_and_25_hours(at, make_schedule, place, tzname, spring, autumn):
    station = at(place)
    plans = plan_days(make_schedule(), station, spring, 1) + plan_days(
        make_schedule(), station, autumn, 1
    )
    assert [p.recorded_seconds / 3600 for p in plans] == [23, 25]


SVALBARD_SUN_WINDOWS = [
    {"start": "sunrise-30m", "end": "sunrise+2h"},
    {"start": "civil_dusk-1h", "end": "nautical_dusk"},
    {"start": "astronomical_dawn", "end": "sunset"},
]


@pytest.mark.parametrize("month", [6, 12])
def test_svalbard_skip_reports_every_window_and_records_nothing(at, make_schedule, month):
    station = at("svalbard")
    s = make_schedule(
        windows=SVALBARD_SUN_WINDOWS, duty_cycle={"record": "1m", "every": "5m"}, polar="skip"
    )
    plans = plan_days(s, station, date(2026, month, 1), 30)
    for plan in plans:
        assert plan.slots == () and plan.windows == ()
        assert sorted({f.window for f in plan.polar}) == [0, 1, 2]
        assert all(f.action == "skip" and f.day == plan.day for f in plan.polar)
        assert all("no " in f.reason for f in plan.polar)
    start = datetime(2026, month, 10, tzinfo=UTC)
    upcoming = next_slot(s, station, start)
    assert upcoming is not None  # the sun comes back: the first slot is months later
    assert upcoming.start > start + timedelta(days=30)


@pytest.mark.parametrize("month", [6, 12])
def test_svalbard_whole_day_records_each_day_with_duty_cycle(at, make_schedule, month):
    station = at("svalbard")
    s = make_schedule(
        windows=SVALBARD_SUN_WINDOWS, duty_cycle={"record": "1m", "every": "5m"}, polar="whole_day"
    )
    plans = plan_days(s, station, date(2026, month, 1), 30)
    for plan in plans:
        assert len(plan.slots) == 288
        assert all(slot.polar for slot in plan.slots)
        assert {f.action for f in plan.polar} == {"whole_day"}


def test_svalbard_noon_relative_window_never_falls_back(at, make_schedule):
    station = at("svalbard")
    s = make_schedule(windows=[{"start": "noon-1h", "end": "noon+1h"}])
    for month in (6, 12):
        plans = plan_days(s, station, date(2026, month, 18), 7)
        assert all(len(p.slots) == 1 and p.slots[0].duration == 7200 for p in plans)
        assert all(p.polar == () for p in plans)


def test_svalbard_transition_season_mixes_sun_days_and_fallback_days(at, make_schedule):
    station = at("svalbard")
    s = make_schedule(windows=[{"start": "sunrise", "end": "sunset"}], polar="skip")
    # the midnight sun starts around 19-20 April at 78 N
    plans = plan_days(s, station, date(2026, 4, 1), 40)
    normal = [p for p in plans if p.slots]
    polar = [p for p in plans if p.polar]
    assert normal and polar
    assert max(p.day for p in normal) < min(p.day for p in polar)
    assert all(not p.slots for p in polar)
    longest = max(slot.duration for p in normal for slot in p.slots)
    assert longest > 20 * 3600


def test_slots_between_across_polar_days_is_split_stable(at, make_schedule):
    station = at("svalbard")
    s = make_schedule(
        windows=[{"start": "sunrise", "end": "sunset"}, {"start": "20:00", "end": "02:00"}],
        duty_cycle={"record": "10m", "every": "20m"},
        polar="whole_day",
    )
    a = datetime(2026, 4, 10, tzinfo=UTC)
    b = datetime(2026, 4, 25, 13, 7, tzinfo=UTC)
    c = datetime(2026, 5, 10, tzinfo=UTC)
    assert slots_between(s, station, a, c) == slots_between(s, station, a, b) + slots_between(
        s, station, b, c
    )


@pytest.mark.parametrize(
    ("place", "day", "start", "end"),
    [
        ("new_york", date(2026, 3, 8), "02:00", "03:00"),
        ("new_york", date(2026, 3, 8), "02:15", "02:45"),
        ("oxford", date(2026, 3, 29), "01:00", "02:00"),
    ],
)
def test_window_inside_the_spring_gap_is_empty_not_a_whole_day(
    at, make_schedule, place, day, start, end
):
    # Both edges shift forward to the end of the gap, to one instant. By the wall clock the end
    # is after the start, so the window does not cross midnight: it is empty that day (it was
    # read as crossing midnight and recorded 24 h, or 23.75 h for 02:15-02:45).
    station = at(place)
    s = make_schedule(windows=[{"start": start, "end": end}])
    plans = plan_days(s, station, day - timedelta(days=1), 3)
    assert [p.recorded_seconds for p in plans] == [
        (_wall(end) - _wall(start)).total_seconds(),
        0,
        (_wall(end) - _wall(start)).total_seconds(),
    ]
    assert plans[1].windows == () and plans[1].slots == ()


def _wall(text: str) -> timedelta:
    hours, minutes = text.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes))


def test_a_dusk_just_past_midnight_is_not_polar(at, make_schedule):
    # At A Coruna (43.37 N, 8.40 W, Europe/Madrid) astronomical dusk moves past local midnight
    # in May: astral finds none on the local date 2026-05-19 (the 18th's is at 23:59, the
    # 19th evening's at 00:00:42 on the 20th) and raises. The sun does reach 18 degrees below
    # the horizon that night, so the window is kept and ends at that evening's dusk.
    tz = ZoneInfo("Europe/Madrid")
    station = at("a_coruna")
    s = make_schedule(windows=[{"start": "sunset", "end": "astronomical_dusk"}])
    plans = plan_days(s, station, date(2026, 5, 10), 20)
    for plan in plans:
        assert plan.polar == (), plan.polar
        (slot,) = plan.slots
        start, end = slot.start.astimezone(tz), slot.end.astimezone(tz)
        assert start.date() == plan.day and time(21, 40) < start.time() < time(22, 10)
        assert 1.75 * 3600 < slot.duration < 2.5 * 3600, plan.day  # sunset to astronomical dusk
        assert end.date() in (plan.day, plan.day + timedelta(days=1))
    (may19,) = plans[9].slots
    assert plans[9].day == date(2026, 5, 19)
    end = may19.end.astimezone(tz)
    assert (end.date(), end.strftime("%H:%M")) == (date(2026, 5, 20), "00:00")


def test_a_window_from_a_dusk_past_midnight_belongs_to_that_evening(at, make_schedule):
    # The dusk of a local date is that evening's, even after midnight: a Tuesday-only
    # astronomical_dusk-04:00 window records the night of Tuesday into Wednesday every week
    # (astral's dusk "on" a Tuesday after the drift is Monday evening's, at 00:0x on Tuesday).
    tz = ZoneInfo("Europe/Madrid")
    station = at("a_coruna")
    s = make_schedule(windows=[{"start": "astronomical_dusk", "end": "04:00"}], weekdays=["tue"])
    first = datetime(2026, 5, 1, tzinfo=tz)
    slots = slots_between(s, station, first, first + timedelta(days=42))
    assert len(slots) == 6
    for slot in slots:
        start, end = slot.start.astimezone(tz), slot.end.astimezone(tz)
        assert end.weekday() == 2 and end.time() == time(4)  # Wednesday 04:00
        assert start.date() == end.date() - timedelta(days=1) or start.time() < time(1)
        assert 3 * 3600 < slot.duration < 4.5 * 3600
