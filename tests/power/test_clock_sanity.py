"""Clock sanity on virtual time: a clock behind the database's newest row makes recording wait;
a step of +2 h or -2 h in the middle of a session cuts it (end reason ``clock_step``, an
event), no schedule slot is recorded twice or skipped, and no timestamp goes backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.config.power import ClockConfig
from fieldstation.power.clock import (
    RELEASE_DATE,
    ClockGuard,
    adjtimex_synced,
    newest_timestamp,
    system_synced,
    timedatectl_synced,
)
from fieldstation.recording.job import ContinuousSlot, run_recorder
from fieldstation.sensors import Block, SensorHealth
from fieldstation.sensors.generator import SyntheticSensor
from fieldstation.store import Database
from fieldstation.store.events import record_event
from fieldstation.store.models import Event, Recording

T0 = datetime(2026, 6, 1, tzinfo=UTC)  # the ``clock`` fixture's start


def rows(db: Database) -> list[Recording]:
    with db.session() as session:
        return list(session.scalars(select(Recording).order_by(Recording.id)))


def events(db: Database, *kinds: str) -> list[Event]:
    with db.session() as session:
        query = select(Event).order_by(Event.id)
        if kinds:
            query = query.where(Event.kind.in_(kinds))
        return list(session.scalars(query))


def aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def assert_never_backwards(db: Database) -> None:
    """Recording starts, recording creation times and event times, in the order written,
    never go back."""
    recorded = rows(db)
    for column in ("started_at", "created_at"):
        times = [aware(getattr(r, column)) for r in recorded]
        assert times == sorted(times), (column, times)
    ends = [aware(r.started_at) + timedelta(seconds=r.duration) for r in recorded]
    starts = [aware(r.started_at) for r in recorded]
    assert all(s >= e for e, s in zip(ends, starts[1:], strict=False)), "overlapping recordings"
    times = [aware(e.created_at) for e in events(db)]
    assert times == sorted(times), times


def slots_every(first: datetime, record: float, every: float) -> Any:
    """Slots of ``record`` seconds every ``every`` seconds from ``first``."""

    def slots(now: datetime) -> ContinuousSlot:
        k = max(0, int((now - first).total_seconds() // every))
        while True:
            start = first + timedelta(seconds=k * every)
            end = start + timedelta(seconds=record)
            if end > now:
                return ContinuousSlot(start, end)
            k += 1

    return slots


class StepAt:
    """A sensor that steps the wall clock by ``seconds`` before handing out block ``at``
    (so the step falls in the middle of a chunk of a session)."""

    def __init__(self, inner: SyntheticSensor, clock: VirtualClock, at: int, seconds: float):
        self.inner, self.clock, self.at, self.seconds = inner, clock, at, seconds
        self.describe = inner.describe
        self.reads = 0
        self.stepped_at: datetime | None = None

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Block | None:
        if self.reads == self.at:
            self.clock.step(self.seconds)
            self.stepped_at = self.clock.now()
        self.reads += 1
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()

    def health(self) -> SensorHealth:
        return self.inner.health()


# --- the guard --------------------------------------------------------------------------------


def test_guard_detects_steps_both_ways_and_keeps_its_floor(clock: VirtualClock) -> None:
    guard = ClockGuard(ClockConfig(), clock, sync=lambda: None)
    assert guard.check() is None and guard.untrusted() is None
    clock.advance(3600)  # time passing is not a step
    assert guard.check() is None
    clock.step(1.0)  # below step_threshold (2 s): NTP slewing, not a step
    assert guard.check() is None
    clock.step(7200)
    step = guard.check()
    assert step is not None and step.seconds == pytest.approx(7200)
    high = clock.now()
    clock.advance(5)
    guard.check()
    clock.step(-7200)
    step = guard.check()
    assert step is not None and step.seconds == pytest.approx(-7200)
    reason = guard.untrusted()
    assert reason is not None and "before" in reason
    assert guard.stamp() >= high  # rows written meanwhile keep the newest time
    clock.advance(7200)
    guard.check()
    assert guard.untrusted() is None and guard.steps == 2


def test_guard_floor_is_the_release_date_or_not_before(clock: VirtualClock) -> None:
    assert ClockGuard(ClockConfig(), VirtualClock(datetime(1970, 1, 1, tzinfo=UTC))).untrusted()
    assert RELEASE_DATE < T0
    later = ClockConfig(not_before=T0 + timedelta(days=1))
    assert ClockGuard(later, clock).untrusted() is not None


def test_require_sync_waits_for_ntp(clock: VirtualClock) -> None:
    answers = [False, True]
    guard = ClockGuard(ClockConfig(require_sync=True), clock, sync=lambda: answers[0])
    assert "not synchronised" in (guard.untrusted() or "")
    answers[0] = True
    assert guard.untrusted() is not None  # the answer is cached for a minute
    clock.advance(60)
    assert guard.untrusted() is None and guard.status()["synced"] is True


def test_ntp_overrides_a_floor_left_by_a_clock_that_ran_ahead(clock: VirtualClock) -> None:
    """An RTC read wrong put rows in the future; NTP then set the clock right: with
    ``require_sync`` the station trusts NTP instead of waiting years for the floor."""
    ahead = clock.now() + timedelta(days=365 * 36)
    guard = ClockGuard(ClockConfig(require_sync=True), clock, floor=ahead, sync=lambda: True)
    assert guard.untrusted() is None and guard.floor == clock.now()
    unsure = ClockGuard(ClockConfig(require_sync=True), clock, floor=ahead, sync=lambda: None)
    assert "before" in (unsure.untrusted() or "")  # no NTP answer: the floor holds
    plain = ClockGuard(ClockConfig(), clock, floor=ahead, sync=lambda: True)
    assert plain.untrusted() is not None  # without require_sync the floor alone decides


def test_sync_probes_answer_on_this_machine() -> None:
    """The real probes: a bool on Linux (adjtimex always answers), None where unknown."""
    assert adjtimex_synced() in (True, False)
    assert timedatectl_synced() in (True, False, None)
    assert system_synced() in (True, False)


def test_newest_timestamp_of_the_database(db: Database) -> None:
    assert newest_timestamp(db) is None
    with db.session() as session:
        record_event(
            session,
            kind="x",
            source="t",
            message="m",
            now=T0 + timedelta(hours=3),
            station_id="s",
            destinations=[],
        )
    assert newest_timestamp(db) == T0 + timedelta(hours=3)


# --- the recorder -----------------------------------------------------------------------------


def test_clock_behind_the_newest_row_makes_recording_wait(  # type: ignore[no-untyped-def]
    station, recorder_ctx, db, clock
):
    """The database holds an event 1 h ahead of the clock (the station ran before with a
    right clock, then booted without RTC): the recorder waits, says why, records an event,
    and starts recording once the clock is past that row."""
    ahead = T0 + timedelta(hours=1)
    with db.session() as session:
        record_event(
            session,
            kind="note",
            source="test",
            message="written by the last run",
            now=ahead,
            station_id="test",
            destinations=[],
        )
    config = station()
    ctx, progress = recorder_ctx(config)
    end = T0 + timedelta(hours=2)
    run_recorder(ctx, "syn", slots=lambda now: ContinuousSlot(T0, end), until=end)
    recorded = rows(db)
    assert recorded and aware(recorded[0].started_at) >= ahead
    assert aware(recorded[0].started_at) - ahead <= timedelta(seconds=11)  # clock.poll
    waits = [d.get("reason", "") for d in progress.of("waiting")]
    assert waits and all("clock not trusted" in w for w in waits[:10])
    untrusted = events(db, "clock_untrusted")
    assert len(untrusted) == 1 and aware(untrusted[0].created_at) >= ahead
    assert sum(r.duration for r in recorded) == pytest.approx(3600, abs=12)
    assert_never_backwards(db)


def test_mark_mode_records_with_clock_unsynced(  # type: ignore[no-untyped-def]
    station, recorder_ctx, clock, db
):
    config = station(clock={"unsynced": "mark", "not_before": "2026-06-01T00:20:00Z"})
    ctx, progress = recorder_ctx(config)
    end = T0 + timedelta(minutes=30)
    run_recorder(ctx, "syn", slots=lambda now: ContinuousSlot(T0, end), until=end)
    recorded = rows(db)
    assert aware(recorded[0].started_at) == T0  # recorded at once, marked
    assert all(r.extra.get("clock_unsynced") is True for r in recorded)
    assert len(events(db, "clock_untrusted")) == 1


@pytest.mark.parametrize("step", [7200.0, -7200.0])
def test_a_clock_step_mid_session_cuts_it_no_slot_twice_none_skipped(  # type: ignore[no-untyped-def]
    station, recorder_ctx, db, clock, step
):
    """Slots of 10 min every 30 min; the clock steps by ``step`` in the middle of the second
    chunk of the first slot. The session is cut (``clock_step``), the step is an event, no
    second of a slot is recorded twice, every slot starting after the step (once the clock is
    past the floor) is recorded in full, and no timestamp goes backwards."""
    config = station()
    ctx, progress = recorder_ctx(config)
    sensor = StepAt(SyntheticSensor(config.sensor("syn"), clock), clock, at=420, seconds=step)
    slots = slots_every(T0, 600, 1800)
    end = T0 + timedelta(hours=8)
    run_recorder(ctx, "syn", slots=slots, sensor=sensor, until=end)
    assert sensor.stepped_at is not None
    recorded = rows(db)
    reasons = [r.end_reason for r in recorded]
    assert reasons[:2] == ["complete", "clock_step"], reasons
    cut = recorded[1]
    # blocks 300..420 (1 s each, 1 kHz): the block handed out just after the step was
    # captured before the recorder saw it, and is kept; the cut comes before the next read
    assert cut.frames == 121_000
    steps = events(db, "clock_step")
    assert len(steps) == 1 and steps[0].data["step_s"] == pytest.approx(step)
    # no slot recorded twice: each recording lies in one slot, each slot has one session
    by_slot: dict[datetime, set[str]] = {}
    for r in recorded:
        start = aware(r.started_at)
        slot = slots(start)
        assert slot.start <= start and start + timedelta(seconds=r.duration) <= slot.end
        by_slot.setdefault(slot.start, set()).add(r.session_id)
    for start in by_slot:  # no second of a slot recorded twice (overlaps: see below)
        total = sum(r.duration for r in recorded if slots(aware(r.started_at)).start == start)
        assert total <= 600 + 1e-6, (start, total)
    # the slot cut by the step is the only one opened twice: after +2 h it is over; after
    # -2 h its tail is recorded once the clock is past the cut (the same seconds never twice)
    opened = [d["start"] for d in progress.of("slot")]
    twice = {s for s in opened if opened.count(s) > 1}
    assert twice <= ({T0.isoformat()} if step < 0 else set()), opened
    # none skipped: every slot that starts after the clock is trusted again, and ends by
    # ``end``, is recorded in full
    trusted_from = max(sensor.stepped_at, aware(cut.started_at) + timedelta(seconds=cut.duration))
    expected = []
    k = slots(trusted_from)
    while k.end <= end:
        if k.start >= trusted_from:
            expected.append(k.start)
        k = slots(k.end)
    assert expected, "the test must leave slots after the step"
    for start in expected:
        assert start in by_slot, (start, sorted(by_slot))
        total = sum(r.duration for r in recorded if slots(aware(r.started_at)).start == start)
        assert total == pytest.approx(600)
    if step < 0:  # waited until the clock was past what was already written
        waits = [d.get("reason", "") for d in progress.of("waiting")]
        assert any("clock not trusted" in w for w in waits)
        after = [r for r in recorded[2:]]
        assert all(aware(r.started_at) >= aware(cut.started_at) for r in after)
    assert_never_backwards(db)


class SteppingClock(VirtualClock):
    """A virtual clock whose wall time steps by ``seconds`` when monotonic time reaches
    ``at`` (in the middle of whatever wait spans it), as NTP would."""

    def __init__(self, start: datetime, at: float, seconds: float) -> None:
        super().__init__(start)
        self.at, self.seconds, self.done = at, seconds, False

    def advance(self, seconds: float) -> None:
        mono = self.monotonic()
        if not self.done and mono < self.at <= mono + seconds:
            self.done = True
            super().advance(self.at - mono)
            self.step(self.seconds)
            super().advance(seconds - (self.at - mono))
            return
        super().advance(seconds)


def test_a_step_forward_during_a_long_wait_does_not_skip_the_next_slot(  # type: ignore[no-untyped-def]
    station, recorder_ctx, db
):
    """One 10-minute slot a day at 06:00. At 00:10 the recorder waits 5 h 50 min for it; 1 h
    into that wait (01:10) NTP steps the clock by +4 h 45 min, to 05:55. A plain wait would
    sleep its remaining 4 h 50 min and wake at 10:45, past the slot (skipped); the gate wakes
    within ``clock.poll``, sees the step and records the slot in full."""
    start = T0 + timedelta(minutes=10)
    clock = SteppingClock(start, at=3600.0, seconds=5 * 3600 - 15 * 60)
    config = station()
    ctx, progress = recorder_ctx(config)
    ctx.clock = clock
    slots = slots_every(T0 + timedelta(hours=6), 600, 86400)
    end = T0 + timedelta(hours=12)
    run_recorder(
        ctx, "syn", slots=slots, sensor=SyntheticSensor(config.sensor("syn"), clock), until=end
    )
    assert clock.done
    recorded = rows(db)
    assert recorded, progress.reports[-5:]
    first = aware(recorded[0].started_at)
    # stepped at 01:10 + 4 h 45 min = 05:55; the slot starts 06:00 and is recorded in full
    assert first == T0 + timedelta(hours=6)
    assert sum(r.duration for r in recorded) == pytest.approx(600)
    assert len(events(db, "clock_step")) == 1
    assert_never_backwards(db)
