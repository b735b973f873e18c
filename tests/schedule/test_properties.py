"""Property-based tests (hypothesis) of slots over random schedules, places and ranges.

The window oracle is independent of the merging code: it takes the raw intervals each local
date's windows resolve to (``WindowResolver.day``) and checks coverage directly.
"""

from __future__ import annotations

import bisect
import os
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any

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
