"""Worked examples: Beemon windows, acoupi clock alignment, merging, filters, next_slot."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from fieldstation.schedule import next_slot, plan_days, slots_between

LONDON = ZoneInfo("Europe/London")


def local(day: date, hh: int, mm: int = 0, ss: int = 0, tz: ZoneInfo = LONDON) -> datetime:
    return datetime.combine(day, time(hh, mm, ss), tzinfo=tz)


def local_times(slots, tz=LONDON, fmt="%H:%M:%S"):
    return [s.start.astimezone(tz).strftime(fmt) for s in slots]


def test_beemon_window_gives_144_slots_per_day_from_0800_to_1955(oxford, make_schedule):
    beemon = make_schedule(
        windows=[{"start": "08:00", "end": "20:00"}],
        duty_cycle={"record": "60s", "every": "300s", "align": "window"},
    )
    # a week that includes the spring DST change (29 March 2026 in the UK)
    for plan in plan_days(beemon, oxford, date(2026, 3, 26), 7):
        starts = local_times(plan.slots, fmt="%H:%M")
        assert len(plan.slots) == 144, plan.day
        assert starts[0] == "08:00" and starts[1] == "08:05" and starts[-1] == "19:55"
        assert all(slot.duration == 60 for slot in plan.slots)
        assert plan.recorded_seconds == 144 * 60


def test_window_aligned_start_must_fit_whole_record(oxford, make_schedule):
    s = make_schedule(
        windows=[{"start": "08:00", "end": "08:12"}],
        duty_cycle={"record": "5m", "sleep": "0s"},
    )
    day = date(2026, 6, 1)
    slots = slots_between(s, oxford, local(day, 0), local(day, 23))
    assert local_times(slots, fmt="%H:%M") == ["08:00", "08:05"]  # 08:10 + 5m does not fit
    assert slots[0].continues and not slots[1].continues


def test_window_aligned_last_start_is_kept_when_it_ends_exactly_at_the_window_end(
    oxford, make_schedule
):
    # Beemon: "the last start inclusive when it still fits": a slot may end at the window end
    day = date(2026, 6, 1)
    back_to_back = make_schedule(
        windows=[{"start": "08:00", "end": "08:10"}],
        duty_cycle={"record": "5m", "sleep": "0s"},
    )
    slots = slots_between(back_to_back, oxford, local(day, 0), local(day, 23))
    assert local_times(slots, fmt="%H:%M") == ["08:00", "08:05"]
    assert slots[-1].end == local(day, 8, 10)
    beemon = make_schedule(
        windows=[{"start": "08:00", "end": "08:11"}],
        duty_cycle={"record": "60s", "every": "300s", "align": "window"},
    )
    slots = slots_between(beemon, oxford, local(day, 0), local(day, 23))
    assert local_times(slots, fmt="%H:%M") == ["08:00", "08:05", "08:10"]
    assert slots[-1].end == local(day, 8, 11) and slots[-1].duration == 60


def test_acoupi_every_10s_offset_5s_starts_at_05_15_25(oxford, make_schedule):
    s = make_schedule(duty_cycle={"record": "3s", "every": "10s", "offset": "5s", "align": "clock"})
    day = date(2026, 6, 1)
    slots = slots_between(s, oxford, local(day, 9), local(day, 9, 1))
    assert local_times(slots) == [f"09:00:{sec:02d}" for sec in (5, 15, 25, 35, 45, 55)]
    assert all(slot.duration == 3 for slot in slots)


def test_clock_aligned_every_10m_offset_5s_and_window_edges(oxford, make_schedule):
    s = make_schedule(
        windows=[{"start": "08:02", "end": "09:00:03"}],
        duty_cycle={"record": "60s", "every": "10m", "offset": "5s", "align": "clock"},
    )
    day = date(2026, 7, 1)
    slots = slots_between(s, oxford, local(day, 0), local(day, 23, 59))
    # 08:00:05 starts before the window: skipped, not clipped; 09:00:05 is after the end
    assert local_times(slots) == ["08:10:05", "08:20:05", "08:30:05", "08:40:05", "08:50:05"]
    cut = make_schedule(
        windows=[{"start": "08:00", "end": "08:30:30"}],
        duty_cycle={"record": "60s", "every": "10m", "offset": "5s", "align": "clock"},
    )
    last = slots_between(cut, oxford, local(day, 0), local(day, 23, 59))[-1]
    assert local_times([last]) == ["08:30:05"]
    assert last.duration == 25  # cut at the window end


def test_window_crossing_midnight_is_one_slot(oxford, make_schedule):
    s = make_schedule(windows=[{"start": "22:00", "end": "04:00"}])
    day = date(2026, 5, 4)
    slots = slots_between(s, oxford, local(day, 12), local(day + timedelta(days=1), 12))
    assert len(slots) == 1
    assert slots[0].start == local(day, 22) and slots[0].end == local(day + timedelta(days=1), 4)
    assert slots[0].day == day


def test_overlapping_and_touching_windows_merge(oxford, make_schedule):
    s = make_schedule(
        windows=[
            {"start": "06:00", "end": "08:00"},
            {"start": "07:30", "end": "09:00"},
            {"start": "09:00", "end": "10:00"},
            {"start": "12:00", "end": "24:00"},
        ]
    )
    day = date(2026, 5, 4)
    plan = plan_days(s, oxford, day, 1)[0]
    assert [(a.astimezone(LONDON).time(), b.astimezone(LONDON)) for a, b in plan.windows] == [
        (time(6), local(day, 10)),
        (time(12), local(day + timedelta(days=1), 0)),
    ]
    assert plan.recorded_seconds == 16 * 3600


def test_continuous_schedule_cut_at_local_midnight_and_continues(oxford, make_schedule):
    always = make_schedule()
    now = datetime(2026, 6, 1, 12, 34, 56, tzinfo=UTC)
    slot = next_slot(always, oxford, now)
    assert slot is not None
    assert slot.start == now and slot.end == local(date(2026, 6, 2), 0)
    assert slot.continues
    following = next_slot(always, oxford, slot.end)
    assert following is not None and following.start == slot.end
    assert following.end == local(date(2026, 6, 3), 0)


def test_filters_weekdays_dates_and_every_nth_day(oxford, make_schedule):
    s = make_schedule(
        windows=[{"start": "10:00", "end": "11:00"}],
        weekdays=["mon", "wed", "fri", "sat"],
        first_date="2026-06-01",  # a Monday
        last_date="2026-06-20",
        every_nth_day=2,
    )
    plans = plan_days(s, oxford, date(2026, 5, 30), 25)
    recorded = [p.day for p in plans if p.slots]
    expected = [
        date(2026, 6, 1) + timedelta(days=n)
        for n in range(0, 20, 2)
        if (date(2026, 6, 1) + timedelta(days=n)).weekday() in (0, 2, 4, 5)
    ]
    assert recorded == expected
    assert all(not p.active for p in plans if p.day not in expected)


def test_every_nth_day_without_first_date_counts_from_1970(oxford, make_schedule):
    s = make_schedule(windows=[{"start": "10:00", "end": "11:00"}], every_nth_day=3)
    plans = plan_days(s, oxford, date(2026, 6, 1), 9)
    days = [p.day for p in plans if p.slots]
    assert len(days) == 3
    assert all((d - date(1970, 1, 1)).days % 3 == 0 for d in days)


def test_next_slot_inside_a_slot_is_clipped_and_between_slots_is_next(oxford, make_schedule):
    s = make_schedule(
        windows=[{"start": "08:00", "end": "20:00"}],
        duty_cycle={"record": "60s", "every": "300s"},
    )
    day = date(2026, 6, 1)
    inside = next_slot(s, oxford, local(day, 8, 5, 30))
    assert inside is not None
    assert inside.start == local(day, 8, 5, 30) and inside.end == local(day, 8, 6)
    between = next_slot(s, oxford, local(day, 8, 6))
    assert between is not None and between.start == local(day, 8, 10)
    evening = next_slot(s, oxford, local(day, 20, 30))
    assert evening is not None and evening.start == local(day + timedelta(days=1), 8)


def test_next_slot_none_after_last_date_and_later_start_before_first(oxford, make_schedule):
    s = make_schedule(
        windows=[{"start": "10:00", "end": "11:00"}],
        first_date="2026-09-01",
        last_date="2026-09-02",
    )
    before = next_slot(s, oxford, datetime(2026, 6, 1, tzinfo=UTC))
    assert before is not None and before.start == local(date(2026, 9, 1), 10)
    assert next_slot(s, oxford, local(date(2026, 9, 2), 11)) is None


def test_naive_datetimes_are_rejected(oxford, make_schedule):
    with pytest.raises(ValueError, match="naive"):
        slots_between(make_schedule(), oxford, datetime(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="naive"):
        next_slot(make_schedule(), oxford, datetime(2026, 1, 1))


def test_sun_relative_window_follows_astral(oxford, make_schedule):
    from astral import Observer
    from astral.sun import sunrise, sunset

    s = make_schedule(windows=[{"start": "sunrise-30m", "end": "sunset+1h"}])
    day = date(2026, 4, 15)
    slot = slots_between(s, oxford, local(day, 0), local(day, 23))[0]
    observer = Observer(51.752, -1.2577, 60.0)
    rise, set_ = sunrise(observer, day, tzinfo=LONDON), sunset(observer, day, tzinfo=LONDON)
    assert abs((slot.start - (rise - timedelta(minutes=30))).total_seconds()) <= 0.5
    assert abs((slot.end - (set_ + timedelta(hours=1))).total_seconds()) <= 0.5
    night = make_schedule(windows=[{"start": "sunset", "end": "sunrise"}])
    overnight = slots_between(night, oxford, local(day, 0), local(day, 23, 59))[-1]
    next_rise = sunrise(observer, day + timedelta(days=1), tzinfo=LONDON)
    assert abs((overnight.end - next_rise).total_seconds()) <= 0.5  # ends on the next morning
