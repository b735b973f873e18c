"""The readings job: runs a slow sensor and stores its values as rows, in batches.

``run_readings(ctx, sensor_name)`` is the job of a **slow** readings sensor (a config with a
``period``: :func:`fieldstation.sensors.readings.config.is_slow`; decision record 0073), with
the contract of :func:`~fieldstation.recording.job.run_recorder`: it runs until ``ctx.stop`` is
set (or ``until``), takes its time from ``ctx.clock`` and reports ``ctx.progress``.

Each measurement (one per period; one :class:`~fieldstation.sensors.base.Block` frame) is one
transaction: its values as rows of ``readings`` (one per quantity measured; a NaN, not
measured, gives no row) and one ``readings`` outbox message for
``config.destinations_for("readings")`` (not one message per value), so rows and message are
committed together or not at all. The message body::

    {"sensor": "air", "measured_at": "2026-06-01T00:01:00+00:00", "period": 60.0,
     "values": {"temperature": 21.4, "humidity": null}, "units": {"temperature": "Cel", ...}}

and its id is fixed when the measurement is taken (a batch retried after a refusal is the
same message). When the database refuses the write (a full disk: SQLite's "database or disk is
full", ``OSError``) the batch is kept in memory (at most :data:`MAX_PENDING` periods, the oldest
dropped beyond) and written with the next one that gets through; the sensor keeps measuring.

A sensor with a schedule stores only the measurements taken inside its slots. After a device
error the sensor is reopened after a back-off (as the recorder does: ``DEVICE_BACKOFF``).

Progress reports: ``("open", {"sensor"})`` once the sensor is open; ``("readings", {"rows",
"measured_at", "pending"})`` per stored measurement; ``("measured", {"measured_at"})`` per
measurement outside the schedule (not stored); ``("waiting", {"next_slot", "reason"})``
while the sensor is failed or its input has ended.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import OperationalError

from fieldstation.backoff import Backoff
from fieldstation.job import ConfigurationError, JobContext
from fieldstation.messages import ReadingsBody, to_wire
from fieldstation.recording.job import DEVICE_BACKOFF, RecorderError, SlotFn, schedule_slots
from fieldstation.sensors import DeviceError, Sensor, build_sensor
from fieldstation.sensors.base import StreamDescription
from fieldstation.sensors.readings.config import is_slow, period_of
from fieldstation.store.events import EventBacklog
from fieldstation.store.outbox import enqueue
from fieldstation.store.readings import NewReading, insert_readings

__all__ = ["MAX_PENDING", "Measurement", "ReadingsJob", "run_readings"]

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
"""Measurements kept in memory at most while the database refuses writes (a week of minutes)."""
IDLE_POLL = 3600.0
"""Seconds between checks while the input has ended (without ``stop_when_exhausted``)."""


@dataclass(frozen=True)
class Measurement:
    """One frame of a slow sensor: its time, the value of each field (NaN: not measured) and
    the id of its outbox message."""

    measured_at: datetime
    values: tuple[float, ...]
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class ReadingsJob:
    """One slow sensor's job (build with :func:`run_readings`)."""

    def __init__(
        self,
        ctx: JobContext,
        name: str,
        sensor: Sensor,
        slots: SlotFn | None,
        until: datetime | None,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.sensor = sensor
        self.slots = slots
        self.until = until
        self.clock = ctx.clock
        self.stream: StreamDescription = sensor.describe()
        self.period = period_of(self.stream) or 1.0
        self.pending: deque[Measurement] = deque(maxlen=MAX_PENDING)
        self.dropped = 0
        self.source = ctx.name or f"readings:{name}"
        self.events = EventBacklog(
            ctx.db,
            station_id=ctx.config.station.id,
            destinations=ctx.config.destinations_for("event"),
        )
        self._backoff = Backoff(*DEVICE_BACKOFF)
        self._refused: str | None = None

    def _past_until(self) -> bool:
        return self.until is not None and self.clock.now() >= self.until

    def _wait(self, seconds: float, reason: str | None, next_at: datetime | None) -> None:
        details: dict[str, Any] = {"next_slot": next_at.isoformat() if next_at else None}
        if reason:
            details["reason"] = reason
        self.ctx.progress("waiting", details)
        if self.until is not None:
            seconds = min(seconds, max(0.0, (self.until - self.clock.now()).total_seconds()))
        self.clock.wait(self.ctx.stop, seconds)

    def run(self, stop_when_exhausted: bool = False) -> None:
        """Open, measure, store; reopen after a device error; until stopped (or ``until``).
        Measurements still kept in memory (the database refused them) get one last try."""
        try:
            self._run(stop_when_exhausted)
        finally:
            if self.pending:
                self._flush()
                if self.pending:
                    log.warning(
                        "sensor %s: %d measurement(s) the database refused are lost at stop",
                        self.name,
                        len(self.pending),
                    )

    def _run(self, stop_when_exhausted: bool) -> None:
        stop = self.ctx.stop
        while not stop.is_set() and not self._past_until():
            try:
                self.sensor.open()
            except DeviceError as error:
                self._device_error(error)
                continue
            self.ctx.progress("open", {"sensor": self.name})
            try:
                outcome = self._measure_loop()
            finally:
                self.sensor.close()
            if outcome == "exhausted":
                if stop_when_exhausted:
                    return
                while not stop.is_set() and not self._past_until():
                    self._wait(IDLE_POLL, "input ended", None)
                return
            if outcome == "stopped":
                return

    def _measure_loop(self) -> str:
        """Measure until stopped (``stopped``), the input ends (``exhausted``) or the device
        fails (``device_error``, after the back-off wait)."""
        stop = self.ctx.stop
        while True:
            if stop.is_set() or self._past_until():
                return "stopped"
            due = getattr(self.sensor, "seconds_to_next", None)
            if due is not None:
                # wait for the next measurement here, where a stop is seen at once
                delay = float(due())
                if self.until is not None:
                    left = (self.until - self.clock.now()).total_seconds()
                    if delay >= left:  # measurements are taken before ``until`` only
                        self.clock.wait(stop, max(0.0, left))
                        return "stopped"
                if delay > 0 and self.clock.wait(stop, delay):
                    return "stopped"
            try:
                block = self.sensor.read()
            except DeviceError as error:
                self._device_error(error)
                return "device_error"
            if block is None:
                self._flush()
                return "exhausted"
            self._backoff.reset()
            kept = 0
            for i in range(block.frames):
                at = block.captured_at + timedelta(microseconds=round(i * self.period * 1_000_000))
                if self._in_slot(at):
                    values = tuple(float(v) for v in block.data[i].reshape(-1))
                    self._keep(Measurement(at, values))
                    kept += 1
            self._flush()
            if not kept:  # outside the schedule: measured, not stored; still alive
                self.ctx.progress("measured", {"measured_at": block.captured_at.isoformat()})

    def _keep(self, measurement: Measurement) -> None:
        """Queue a measurement for the next write; beyond :data:`MAX_PENDING` kept ones (the
        database refusing for that long) the oldest is dropped, counted and logged."""
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
            log.warning(
                "sensor %s: %d measurements kept while the database refuses writes; the "
                "oldest (%s) is dropped (%d so far)",
                self.name,
                len(self.pending),
                self.pending[0].measured_at.isoformat(),
                self.dropped,
            )
        self.pending.append(measurement)

    def _in_slot(self, at: datetime) -> bool:
        if self.slots is None:
            return True
        slot = self.slots(at)
        return slot is not None and slot.start <= at < slot.end

    def _flush(self) -> None:
        """Write every pending measurement (rows + one message each) in one transaction;
        keep them when the database refuses (a full disk)."""
        if not self.pending:
            return
        config = self.ctx.config
        fields = self.stream.fields
        units = self.stream.units
        destinations = config.destinations_for("readings")
        rows = 0
        try:
            with self.ctx.db.session() as session:
                for m in self.pending:
                    rows += insert_readings(
                        session,
                        deployment_id=self.ctx.deployment_id,
                        sensor=self.name,
                        readings=[
                            NewReading(q, u, m.measured_at, v)
                            for q, u, v in zip(fields, units, m.values, strict=True)
                        ],
                    )
                    enqueue(
                        session,
                        kind="readings",
                        body=to_wire(
                            ReadingsBody(
                                sensor=self.name,
                                measured_at=m.measured_at,
                                period=self.period,
                                values={
                                    q: (v if math.isfinite(v) else None)
                                    for q, v in zip(fields, m.values, strict=True)
                                },
                                units=dict(zip(fields, units, strict=True)),
                            )
                        ),
                        destinations=destinations,
                        now=self.clock.now(),
                        station_id=config.station.id,
                        message_id=m.message_id,
                    )
        except (OperationalError, OSError) as error:
            first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            if self._refused is None:
                log.warning(
                    "sensor %s: the database refused readings (%s); %d measurement(s) kept "
                    "in memory until it takes writes again",
                    self.name,
                    first,
                    len(self.pending),
                )
            self._refused = first
            self.ctx.progress(
                "waiting",
                {"next_slot": None, "reason": f"database refused readings: {first}"},
            )
            return
        if self._refused is not None:
            log.info("sensor %s: the database takes readings again", self.name)
            self._refused = None
        last = self.pending[-1].measured_at
        count = len(self.pending)
        self.pending.clear()
        self.ctx.progress(
            "readings", {"rows": rows, "measurements": count, "measured_at": last.isoformat()}
        )

    def _device_error(self, error: DeviceError) -> None:
        """Record a ``device_error`` event and wait the back-off before the next open."""
        message = f"sensor {self.name}: {error}"
        log.warning("%s", message)
        self.events.record(
            kind="device_error",
            source=self.source,
            message=message,
            now=self.clock.now(),
            severity="error",
            data={"sensor": self.name},
        )
        retry = self._backoff.next_delay()
        self._wait(retry, f"device error: {error}", self.clock.now() + timedelta(seconds=retry))


def run_readings(
    ctx: JobContext,
    sensor_name: str,
    *,
    until: datetime | None = None,
    stop_when_exhausted: bool = False,
    sensor: Sensor | None = None,
    slots: SlotFn | None = None,
) -> None:
    """Run slow sensor ``sensor_name`` of ``ctx.config`` until ``ctx.stop`` is set (or, with
    ``until``, an aware UTC time, until then), storing each measurement as rows plus one
    ``readings`` message (module docstring).

    ``sensor`` (default: built by its plugin with context ``clock=ctx.clock`` and
    ``home=ctx.home.root``) and ``slots`` (default: the sensor's schedule, None when it has
    none) are injectable for tests. With ``stop_when_exhausted`` the job returns when a replay
    has played every row. Raises :class:`~fieldstation.recording.job.RecorderError` for an
    unknown sensor, :class:`~fieldstation.job.ConfigurationError` when the sensor is not a
    slow readings sensor (it has no ``period``: record it with ``run_recorder``).
    """

    try:
        config = ctx.config.sensor(sensor_name)
    except KeyError:
        names = ", ".join(s.name for s in ctx.config.sensors) or "none"
        raise RecorderError(f"no sensor named {sensor_name!r} (sensors: {names})") from None
    if sensor is None:
        if not is_slow(config):
            raise ConfigurationError(
                f"sensor {sensor_name!r} (kind {config.kind!r}) has no 'period': it is not a "
                "slow readings sensor; it is recorded as a stream (run_recorder)"
            )
        sensor = build_sensor(config, ctx.clock, home=ctx.home.root)
    assert sensor is not None
    if period_of(sensor.describe()) is None:
        raise ConfigurationError(
            f"sensor {sensor_name!r} does not describe a slow readings stream (no period)"
        )
    if slots is None and config.schedule is not None:
        slots = schedule_slots(ctx.config, config)
    ReadingsJob(ctx, sensor_name, sensor, slots, until).run(stop_when_exhausted)
