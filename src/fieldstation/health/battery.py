"""Battery monitor: a TI INA219 current/voltage sensor over I2C (``smbus2``, optional extra).

Register map and scales from the INA219 datasheet (TI SBOS448G, section 8.6): register 0x01 is
the shunt voltage (signed 16 bit, LSB 10 µV), register 0x02 the bus voltage (bits 15..3, LSB
4 mV). Current is computed from the shunt voltage and the configured shunt resistance (Ohm's
law), so no calibration register is needed. Absent hardware (no ``smbus2``, no ``/dev/i2c-N``,
no answer at the address) gives ``None`` and is retried after ``retry_interval`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from fieldstation.clock import Clock
from fieldstation.config.health import BatteryConfig

__all__ = ["BatteryReading", "I2CBus", "Ina219Battery", "percent_from_curve"]

log = logging.getLogger(__name__)

REG_SHUNT_VOLTAGE = 0x01
REG_BUS_VOLTAGE = 0x02
SHUNT_LSB_V = 10e-6
BUS_LSB_V = 4e-3


class I2CBus(Protocol):
    """The part of ``smbus2.SMBus`` used here."""

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BatteryReading:
    """One reading: volts, amperes (positive = discharging through the shunt), watts, percent."""

    voltage: float
    current: float
    power: float
    percent: float | None

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def percent_from_curve(voltage: float, curve: Sequence[tuple[float, float]]) -> float | None:
    """State of charge (0..100) by linear interpolation in ``curve`` ((volts, percent) points).

    Clamped to the first/last point outside the curve; None for an empty curve.
    """
    points = sorted(curve)
    if not points:
        return None
    if voltage <= points[0][0]:
        return points[0][1]
    for (v0, p0), (v1, p1) in zip(points, points[1:], strict=False):
        if voltage <= v1:
            return p0 + (p1 - p0) * (voltage - v0) / (v1 - v0) if v1 > v0 else p1
    return points[-1][1]


def _open_smbus(bus: int) -> I2CBus:
    import smbus2  # optional extra 'battery'; imported only when a battery is configured

    bus_object: I2CBus = smbus2.SMBus(bus)
    return bus_object


class Ina219Battery:
    """Reads an INA219; ``read()`` returns a :class:`BatteryReading` or None (absent/failing).

    ``open_bus(bus_number)`` is injectable for tests (default: ``smbus2.SMBus``).
    """

    def __init__(
        self,
        config: BatteryConfig,
        clock: Clock,
        *,
        open_bus: Callable[[int], I2CBus] = _open_smbus,
        retry_interval: float | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._open_bus = open_bus
        self._bus: I2CBus | None = None
        self._retry_at: float | None = None
        self.retry_interval = config.retry_interval if retry_interval is None else retry_interval
        self.last_error: str | None = None
        self._lock = threading.Lock()  # the web page's request threads read it at once

    def read(self) -> BatteryReading | None:
        """One reading, or None when disabled, absent, or waiting to retry after a failure.
        Thread-safe: one bus transaction at a time, one bus handle."""
        with self._lock:
            return self._read()

    def _read(self) -> BatteryReading | None:
        if not self.config.enabled:
            return None
        if self._retry_at is not None and self.clock.monotonic() < self._retry_at:
            return None
        try:
            if self._bus is None:
                self._bus = self._open_bus(self.config.bus)
            shunt = self._word(REG_SHUNT_VOLTAGE, signed=True) * SHUNT_LSB_V
            bus_v = (self._word(REG_BUS_VOLTAGE, signed=False) >> 3) * BUS_LSB_V
        except (ImportError, OSError) as error:
            self._fail(error)
            return None
        self._retry_at = None
        self.last_error = None
        current = shunt / self.config.shunt_ohms
        voltage = bus_v + shunt  # supply side of the shunt (high-side sensing)
        return BatteryReading(
            voltage=voltage,
            current=current,
            power=voltage * current,
            percent=percent_from_curve(voltage, self.config.curve),
        )

    def read_dict(self) -> dict[str, Any] | None:
        """:meth:`read` as a JSON-ready dict (for heartbeats)."""
        reading = self.read()
        return None if reading is None else reading.as_dict()

    def _word(self, register: int, *, signed: bool) -> int:
        assert self._bus is not None
        high, low = self._bus.read_i2c_block_data(self.config.address, register, 2)
        value = (high << 8) | low  # the INA219 sends the most significant byte first
        if signed and value & 0x8000:
            value -= 1 << 16
        return value

    def _fail(self, error: BaseException) -> None:
        if self.last_error is None:
            log.warning(
                "battery monitor unavailable (%s); retrying every %.0f s",
                error,
                self.retry_interval,
            )
        self.last_error = f"{type(error).__name__}: {error}"
        self._retry_at = self.clock.monotonic() + self.retry_interval
        if self._bus is not None:
            with contextlib.suppress(OSError):
                self._bus.close()
            self._bus = None
