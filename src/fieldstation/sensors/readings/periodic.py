"""The base of slow sensors: one measurement per period, paced on the injected clock.

A :class:`PeriodicSensor` hands out one frame per :meth:`~PeriodicSensor.read`: measurement *k*
(k = 0, 1, ...) is taken when ``k * period`` seconds have passed on the clock's monotonic time
since :meth:`~PeriodicSensor.open` (at once for k = 0) and stamped ``open time + k * period``
(UTC, microseconds). A quantity that could not be measured this time (a thermometer whose CRC
failed) is NaN; a sensor whose device is gone raises
:class:`~fieldstation.sensors.base.DeviceError`.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np

from fieldstation.clock import Clock, SystemClock
from fieldstation.sensors.base import Block, SensorHealth, StreamDescription
from fieldstation.sensors.readings.config import rate_of_period

__all__ = ["PeriodicSensor", "slow_description"]


def slow_description(
    fields: tuple[str, ...], units: tuple[str, ...], period: float, **options: object
) -> StreamDescription:
    """The :class:`StreamDescription` of a slow readings sensor: one float64 frame of
    ``len(fields)`` quantities per ``period`` seconds (``options["period"]``), rate
    :func:`~fieldstation.sensors.readings.config.rate_of_period`."""
    return StreamDescription(
        media="readings",
        rate=rate_of_period(period),
        shape=(len(fields),),
        dtype="float64",
        format="arrows",
        codec="arrow",
        fields=fields,
        units=units,
        options={"period": float(period), **options},
    )


class PeriodicSensor:
    """Base of slow sensors: subclasses set :attr:`fields`/:attr:`units` in ``__init__`` and
    implement :meth:`measure` (and :meth:`open_device`/:meth:`close_device` when they hold a
    device)."""

    fields: tuple[str, ...] = ()
    units: tuple[str, ...] = ()

    def __init__(self, period: float, clock: Clock | None = None) -> None:
        self.period = float(period)
        self.clock = clock or SystemClock()
        self._k = 0
        self._mono0 = 0.0
        self._anchor = self.clock.now()
        self._open = False
        self._health = SensorHealth()

    # --- to implement ---
    def measure(self) -> list[float] | None:
        """The values of :attr:`fields` now (NaN where one could not be measured), or None
        when the input has ended for good. Raises ``DeviceError``."""
        raise NotImplementedError

    def open_device(self) -> None:
        """Open the device (raise ``DeviceError`` when it is not there)."""

    def close_device(self) -> None:
        """Release the device (never raises)."""

    def options(self) -> dict[str, object]:
        """Extra JSON-ready ``describe()`` options."""
        return {}

    # --- the Sensor protocol ---
    def describe(self) -> StreamDescription:
        """A slow readings stream: ``fields``/``units``, float64, ``options["period"]``."""
        return slow_description(self.fields, self.units, self.period, **self.options())

    def open(self) -> None:
        """Open the device; measurement 0 is due now."""
        self.open_device()
        self._k = 0
        self._mono0 = self.clock.monotonic()
        self._anchor = self.clock.now()
        self._open = True
        self._health = SensorHealth(state="open")

    def measured_at(self, k: int) -> datetime:
        """UTC time of measurement ``k`` since :meth:`open`."""
        return self._anchor + timedelta(microseconds=round(k * self.period * 1_000_000))

    def seconds_to_next(self) -> float:
        """Seconds on the clock until the next measurement is due (0 when due or closed)."""
        if not self._open:
            return 0.0
        return max(0.0, self._mono0 + self._k * self.period - self.clock.monotonic())

    def read(self) -> Block | None:
        """Wait for measurement k (``k * period`` s after open), take it: a :class:`Block` of
        one frame ``(1, len(fields))`` float64, ``start_frame`` k; None when the input ended.
        Raises ``DeviceError`` (the device failed) or ``RuntimeError`` before :meth:`open`."""
        if not self._open:
            raise RuntimeError("read() before open()")
        k = self._k
        delay = self._mono0 + k * self.period - self.clock.monotonic()
        if delay > 0:
            self.clock.sleep(delay)
        try:
            values = self.measure()
        except Exception as error:
            self._health.state = "error"
            self._health.error = str(error)
            raise
        if values is None:
            return None
        self._k = k + 1
        data = np.asarray([values], dtype=np.float64).reshape(1, len(self.fields))
        self._health.frames = self._k
        missing = int(np.count_nonzero(np.isnan(data)))
        if missing:
            self._health.details["missing"] = self._health.details.get("missing", 0) + missing
        return Block(data, k, self.measured_at(k))

    def close(self) -> None:
        """Release the device (idempotent)."""
        if self._open:
            self.close_device()
        self._open = False
        self._health.state = "closed"

    def health(self) -> SensorHealth:
        """State, measurements taken since open, and ``missing`` values (NaN) so far."""
        return self._health


def nan() -> float:
    """A missing value."""
    return math.nan
