"""Suspenders on virtual time: a replayed battery curve and a heat curve pause recording below
the cut-off (above the limit) and resume it past the resume level, without flapping; the
events, the end reasons, the waiting reasons and the status say so."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.config.power import SuspenderConfig
from fieldstation.power.core import SuspenderCore
from fieldstation.power.gate import RecorderGate
from fieldstation.power.job import Sampler, Suspenders
from fieldstation.power.replay import ReplayBattery, read_curve, synthetic_day
from fieldstation.power.state import SuspensionFile, state_path
from fieldstation.recording.job import ContinuousSlot, run_recorder
from fieldstation.store import Database
from fieldstation.store.events import EventBacklog
from fieldstation.store.models import Event, Recording


def rows(db: Database) -> list[Recording]:
    """The recording rows, by id."""
    with db.session() as session:
        return list(session.scalars(select(Recording).order_by(Recording.id)))


def events(db: Database, *kinds: str) -> list[Event]:
    """The event rows (of ``kinds`` when given), by id."""
    with db.session() as session:
        query = select(Event).order_by(Event.id)
        if kinds:
            query = query.where(Event.kind.in_(kinds))
        return list(session.scalars(query))


SPEED = 12
"""The synthetic day is played 12 times faster: 24 h in 2 h of (virtual) time."""

BATTERY = {
    "name": "battery-low",
    "source": "battery_voltage",
    "below": 11.9,
    "resume": 12.4,
    "jobs": ["recorder:*"],
    "min_suspended": "2m",
    "min_running": "1m",
    "interval": "5s",
}


def fast_day() -> list[tuple[float, float, float]]:
    return [(t / SPEED, v, a) for t, v, a in synthetic_day()]


def crossings(values: list[float], level: float) -> int:
    """How often a plain threshold at ``level`` would switch on ``values``."""
    below = [v < level for v in values]
    return sum(1 for a, b in zip(below, below[1:], strict=False) if a != b)


# --- the pure core ----------------------------------------------------------------------------


def test_the_synthetic_curve_would_make_a_plain_threshold_flap() -> None:
    """The test curve is a hard case: its ripple crosses 11.9 V many times on the way down."""
    volts = [v for _, v, _ in synthetic_day()]
    assert crossings(volts, 11.9) >= 10
    assert min(volts) < 11.6 and max(volts) > 13.1


def test_core_hysteresis_and_minimum_times() -> None:
    config = SuspenderConfig.model_validate(BATTERY)
    core = SuspenderCore(config)
    t = iter(range(0, 100_000, 5))
    assert core.observe(12.0, next(t)) is None  # above the cut-off
    first = core.observe(11.8, next(t))  # at start-up no minimum applies
    assert first is not None and first.state == "suspended" and first.threshold == 11.9
    assert core.reason() is not None and "battery_voltage 11.8V went below 11.9V" in core.reason()
    # between cut-off and resume level: nothing (hysteresis)
    assert all(core.observe(v, next(t)) is None for v in (12.0, 12.3, 11.95, 12.39))
    # at the resume level, but paused for less than min_suspended (120 s): nothing yet
    now = first.at + 60
    assert core.observe(12.5, now) is None
    back = core.observe(12.5, first.at + 120)
    assert back is not None and back.state == "running" and back.threshold == 12.4
    # low again at once: min_running (60 s) holds it
    assert core.observe(11.0, back.at + 30) is None
    again = core.observe(11.0, back.at + 60)
    assert again is not None and again.state == "suspended"
    assert core.observe(None, again.at + 1000) is None  # unknown: the state is kept
    assert core.state == "suspended"


def test_core_hold_ignores_a_short_sag() -> None:
    config = SuspenderConfig.model_validate({**BATTERY, "hold": "30s"})
    core = SuspenderCore(config)
    assert core.observe(11.5, 0) is None
    assert core.observe(11.5, 20) is None
    assert core.observe(12.0, 25) is None  # the sag ended before 30 s
    assert core.observe(11.5, 40) is None
    transition = core.observe(11.5, 70)
    assert transition is not None and transition.state == "suspended"


def test_above_threshold_mirror() -> None:
    config = SuspenderConfig.model_validate(
        {
            "name": "hot",
            "source": "cpu_temperature",
            "above": 75,
            "resume": 65,
            "jobs": ["processor:*"],
        }
    )
    core = SuspenderCore(config)
    assert core.observe(74.9, 0) is None
    hot = core.observe(80.0, 1)
    assert hot is not None and hot.state == "suspended"
    assert core.observe(70.0, 10_000) is None
    cool = core.observe(65.0, 10_001)
    assert cool is not None and cool.state == "running"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"resume": 11.5}, "must be above below"),
        ({"above": 13.0}, "exactly one of 'below' and 'above'"),
        ({"jobs": ["camera"]}, "'recorder:<sensor>'"),
        ({"jobs": []}, "at least 1 item"),
        ({"source": "reading"}, "needs 'sensor' and 'quantity'"),
        ({"sensor": "x", "quantity": "v"}, "only for source = 'reading'"),
    ],
)
def test_config_errors_say_what_to_fix(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SuspenderConfig.model_validate({**BATTERY, **change})


def test_replay_battery_reads_a_csv_curve(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "curve.csv"
    path.write_text("# a test curve\nseconds,volts,amperes\n0,12.0,0.5\n100,11.0,0.5\n")
    battery = ReplayBattery(read_curve(path), clock)
    clock.advance(50)
    reading = battery.read()
    assert reading.voltage == pytest.approx(11.5) and reading.current == pytest.approx(0.5)
    assert reading.percent == 0.0  # below 11.8 V on the default lead-acid curve
    clock.advance(1000)
    assert battery.read().voltage == pytest.approx(11.0)


# --- the station's job: events, state file, status --------------------------------------------


def test_suspenders_job_on_the_replayed_day(station, home, db, clock) -> None:  # type: ignore[no-untyped-def]
    """A whole (fast) day stepped every 5 s: one suspension while discharging, one resume
    while charging, both events, the state file and the status follow."""
    config = station(suspenders=[BATTERY])
    battery = ReplayBattery(fast_day(), clock)
    power = Suspenders(config, clock, home, db=db, sampler=Sampler(config, clock, battery=battery))
    seen: list[float] = []
    transitions = []
    file = SuspensionFile(state_path(home))
    while clock.monotonic() < 24 * 3600 / SPEED:
        transitions += power.step()
        seen.append(battery.read().voltage)
        held = file.reason("recorder:syn")
        assert (held is not None) == (power.cores[0].state == "suspended")
        clock.advance(power.interval)
    assert crossings(seen, 11.9) >= 10  # a plain threshold would have flapped
    assert [t.state for t in transitions] == ["suspended", "running"]
    down, up = transitions
    assert down.value < 11.9 and up.value >= 12.4
    # discharging crosses 11.9 V around hour 3 of the day (12.6 - 0.1 V/h ripple): fast day
    assert 2.5 * 3600 / SPEED < down.at < 8 * 3600 / SPEED
    assert 14 * 3600 / SPEED < up.at < 20 * 3600 / SPEED  # while charging
    found = events(db, "suspended", "resumed")
    assert [(e.kind, e.severity, e.source) for e in found] == [
        ("suspended", "warning", "suspender:battery-low"),
        ("resumed", "info", "suspender:battery-low"),
    ]
    assert found[0].data["jobs"] == ["recorder:syn"] and found[0].data["value"] < 11.9
    status = power.status()
    assert status["held"] == {} and status["suspenders"][0]["state"] == "running"


def test_a_heartbeat_with_suspenders_is_a_valid_message(station, home, db, clock) -> None:  # type: ignore[no-untyped-def]
    """The heartbeat's ``power`` (a suspender holding a recorder) is in the message schema:
    a hub does not dead-letter the heartbeats of a station with ``[[suspenders]]``."""
    from fieldstation.health.heartbeat import Heartbeat
    from fieldstation.messages import HeartbeatBody

    config = station(suspenders=[BATTERY])
    battery = ReplayBattery(fast_day(), clock)
    power = Suspenders(config, clock, home, db=db, sampler=Sampler(config, clock, battery=battery))
    while not power.status()["held"]:
        power.step()
        clock.advance(power.interval)
    body = Heartbeat(config, db, clock, home, power=power.status).build()
    assert body["power"]["held"]["recorder:syn"]["reason"]
    assert HeartbeatBody.model_validate(body).power == body["power"]


# --- the recorder: paused with end reason ``suspended``, resumed --------------------------------


class SteppedSuspensions:
    """The ``power`` thread job interleaved with the recorder on one virtual clock: before
    each look at the state file, the suspenders step once per ``interval`` that passed (the
    thread would have), then the recorder reads the file as in production."""

    def __init__(self, power: Suspenders, file: SuspensionFile, clock: VirtualClock) -> None:
        self.power, self.file, self.clock = power, file, clock
        self.due: float | None = None

    def reason(self, job: str) -> str | None:
        now = self.clock.monotonic()
        if self.due is None or now >= self.due:
            self.power.step()
            self.due = now + self.power.interval
        return self.file.reason(job)


def record_day(  # type: ignore[no-untyped-def]
    config, recorder_ctx, home, db, clock, sampler_args: dict[str, Any]
) -> tuple[Any, Suspenders, datetime, datetime]:
    ctx, progress = recorder_ctx(config)
    power = Suspenders(config, clock, home, db=db, sampler=Sampler(config, clock, **sampler_args))
    backlog = EventBacklog(db, station_id=config.station.id, destinations=[])
    gate = RecorderGate.of(ctx, "syn", backlog)
    gate.suspensions = SteppedSuspensions(power, SuspensionFile(state_path(home)), clock)
    start = clock.now()
    end = start + timedelta(seconds=24 * 3600 / SPEED)
    run_recorder(
        ctx,
        "syn",
        slots=lambda now: ContinuousSlot(start, end) if now < end else None,
        until=end,
        gate=gate,
    )
    return progress, power, start, end


def check_pause(db, progress, kind_value: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    """One pause: the chunk cut ``suspended`` at the suspension, nothing recorded while
    paused (waiting reports say why), recording again within a poll of the resume."""
    found = events(db, "suspended", "resumed")
    assert [e.kind for e in found] == ["suspended", "resumed"], [e.message for e in found]
    paused_at, resumed_at = found[0].created_at, found[1].created_at
    recorded = rows(db)
    cut = [r for r in recorded if r.end_reason == "suspended"]
    assert len(cut) == 1, [(r.started_at, r.end_reason) for r in recorded]
    cut_end = cut[0].started_at + timedelta(seconds=cut[0].duration)
    assert timedelta(0) <= cut_end - paused_at <= timedelta(seconds=3)
    after = [r for r in recorded if r.started_at > cut[0].started_at]
    assert after and after[0].started_at >= resumed_at
    assert after[0].started_at - resumed_at <= timedelta(seconds=11)  # clock.poll = 10 s
    assert all(r.end_reason in ("complete", "window_end") for r in recorded if r not in cut)
    assert [r.chunk_index for r in after][:1] == [0]  # a new session after the pause
    waits = [d.get("reason", "") for d in progress.of("waiting")]
    assert any(w.startswith(kind_value[0]) and kind_value[1] in w for w in waits), waits[-3:]
    # the stream before and after covers the day but the paused span
    total = sum(r.duration for r in recorded)
    assert total == pytest.approx(
        24 * 3600 / SPEED - (resumed_at - paused_at).total_seconds(), abs=15
    )


def test_battery_curve_pauses_recording_below_cutoff_and_resumes(  # type: ignore[no-untyped-def]
    station, recorder_ctx, home, db, clock
):
    config = station(suspenders=[BATTERY])
    battery = ReplayBattery(fast_day(), clock)
    progress, power, _, _ = record_day(config, recorder_ctx, home, db, clock, {"battery": battery})
    check_pause(db, progress, ("suspended by battery-low", "battery_voltage"))
    found = events(db, "suspended", "resumed")
    assert found[0].data["value"] < 11.9 <= 12.4 <= found[1].data["value"]


def heat(seconds: float) -> float:
    """A documented synthetic CPU temperature: 45 C at night rising to 85 C at the middle of
    the (fast) day and back, with a ±3 C wobble of a 40 s period (a fan, a load)."""
    day = 24 * 3600 / SPEED
    base = 45 + 40 * math.sin(math.pi * min(max(seconds / day, 0.0), 1.0))
    return base + 3 * math.sin(2 * math.pi * seconds / 40)


def test_temperature_pauses_recording_above_limit_and_resumes(  # type: ignore[no-untyped-def]
    station, recorder_ctx, home, db, clock
):
    hot = {
        "name": "too-hot",
        "source": "cpu_temperature",
        "above": 75,
        "resume": 65,
        "jobs": ["recorder:syn"],
        "min_suspended": "2m",
        "min_running": "1m",
        "interval": "5s",
    }
    config = station(suspenders=[hot])
    origin = clock.monotonic()
    samples: list[float] = []

    def temperature() -> float:
        value = heat(clock.monotonic() - origin)
        samples.append(value)
        return value

    progress, *_ = record_day(config, recorder_ctx, home, db, clock, {"temperature": temperature})
    assert crossings([-v for v in samples], -75) >= 4  # the wobble crosses 75 C repeatedly
    check_pause(db, progress, ("suspended by too-hot", "cpu_temperature"))
    found = events(db, "suspended", "resumed")
    assert found[0].data["value"] > 75 and found[1].data["value"] <= 65


def test_a_reading_source_outputs_and_stale_values(station, home, db, clock) -> None:  # type: ignore[no-untyped-def]
    """A ``reading`` suspender on a readings sensor's latest value holds an output; a value
    older than ``stale_after`` is unknown and changes nothing; slow readings sensors are
    never held (the battery's own readings must go on)."""
    from fieldstation.store.deployments import start_deployment
    from fieldstation.store.readings import NewReading, insert_readings

    ups = {
        "name": "ups-low",
        "source": "reading",
        "sensor": "ups",
        "quantity": "voltage",
        "below": 11.9,
        "resume": 12.4,
        "jobs": ["output:*", "recorder:*"],
        "min_suspended": "0s",
        "min_running": "0s",
        "stale_after": "5m",
    }
    slow = {"name": "ups", "kind": "system", "period": "1m"}
    config = station(suspenders=[ups])
    config = config.model_copy(
        update={"sensors": [*config.sensors, *station(sensors=[slow]).sensors]}
    )
    with db.session() as session:
        deployment = start_deployment(
            session, station_id="s", config_hash="h", config={}, version="t", now=clock.now()
        )
        deployment_id = deployment.id

    def volts(value: float) -> None:
        with db.session() as session:
            insert_readings(
                session,
                deployment_id=deployment_id,
                sensor="ups",
                readings=[NewReading("voltage", "V", clock.now(), value)],
            )

    power = Suspenders(config, clock, home, db=db, sampler=Sampler(config, clock, db=db))
    assert power.jobs_of(config.suspenders[0]) == ["recorder:syn", "output:local"]
    assert power.step() == [] and power.allows("local")  # no reading yet: unknown
    volts(11.5)
    assert [t.state for t in power.step()] == ["suspended"]
    assert not power.allows("local") and set(power.status()["held"]) == {
        "recorder:syn",
        "output:local",
    }
    volts(12.6)
    clock.advance(301)  # the good value is too old now: unknown, still suspended
    assert power.step() == [] and not power.allows("local")
    volts(12.6)
    assert [t.state for t in power.step()] == ["running"] and power.allows("local")


def test_a_restarted_power_job_writes_the_pauses_in_force_again(station, home, clock) -> None:  # type: ignore[no-untyped-def]
    """The job clears the state file when it ends (a crash too); when the supervisor starts
    it again, its first step writes the pauses still in force (no transition needed)."""
    import threading

    config = station(suspenders=[BATTERY])
    file = SuspensionFile(state_path(home))

    class TwoSteps(Sampler):
        """Battery at 11 V; the job is stopped at its second step, after noting what the
        state file said then (written by the first step)."""

        def __init__(self) -> None:
            super().__init__(config, clock)
            self.stop, self.calls, self.seen = threading.Event(), 0, "unset"

        def sample(self, suspenders: Any) -> dict[str, float | None]:
            self.calls += 1
            if self.calls == 2:
                self.seen = file.reason("recorder:syn") or ""
                self.stop.set()
            return {"battery-low": 11.0}

    first = TwoSteps()
    power = Suspenders(config, clock, home, sampler=first)
    power.run(first.stop)
    assert "suspended by battery-low" in first.seen
    assert file.reason("recorder:syn") is None  # released when the job ended
    again = TwoSteps()
    power.sampler = again
    power.run(again.stop)  # restarted: the core is still suspended, no transition
    assert "suspended by battery-low" in again.seen
