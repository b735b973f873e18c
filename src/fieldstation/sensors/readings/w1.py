"""The working DS18B20 sensor behind the ``w1`` plugin (see :mod:`fieldstation.sensors.w1`)."""

from __future__ import annotations

import math
from pathlib import Path

from fieldstation.clock import Clock
from fieldstation.sensors.base import DeviceError, config_error
from fieldstation.sensors.readings.periodic import PeriodicSensor
from fieldstation.sensors.w1 import W1Config

__all__ = ["POWER_ON_RESET", "W1Sensor", "parse_w1_slave"]

POWER_ON_RESET = 85000
"""``t=`` value of a DS18B20 that reset before converting (+85 °C): not a measurement."""


def parse_w1_slave(text: str) -> float | None:
    """Temperature (°C) from the text of a ``w1_slave`` file, None when the CRC line does not
    end in ``YES``, the value is the 85 °C power-on value, or the text is malformed."""
    lines = text.strip().splitlines()
    if len(lines) < 2 or not lines[0].strip().endswith("YES"):
        return None
    _, sep, value = lines[1].rpartition("t=")
    if not sep:
        return None
    try:
        millis = int(value.strip())
    except ValueError:
        return None
    if millis == POWER_ON_RESET:
        return None
    return millis / 1000.0


class W1Sensor(PeriodicSensor):
    """Every configured (or found) thermometer once per period: one quantity per device,
    unit ``Cel``. Raises :class:`~fieldstation.sensors.base.SensorConfigurationError` when no
    thermometer is found at construction, :class:`DeviceError` when every one vanished."""

    def __init__(self, config: W1Config, clock: Clock | None = None) -> None:
        super().__init__(config.period, clock)
        self.config = config
        ids = config.devices
        if ids is None:
            ids = sorted(p.name for p in config.root.glob("28-*") if p.is_dir())
        if not ids:
            raise config_error(
                f"sensor {config.name!r}: no DS18B20 (28-*) under root {config.root}; "
                "check the wiring and the w1-gpio overlay, or set 'root'/'devices'"
            )
        self.devices = list(ids)
        self.fields = tuple(config.names.get(d, f"temperature_{d}") for d in self.devices)
        self.units = ("Cel",) * len(self.devices)
        self._health.details["rejected"] = 0

    def options(self) -> dict[str, object]:
        return {"devices": list(self.devices)}

    def _path(self, device: str) -> Path:
        return self.config.root / device / "w1_slave"

    def measure(self) -> list[float] | None:
        values: list[float] = []
        gone = 0
        for device in self.devices:
            try:
                text = self._path(device).read_text(encoding="ascii", errors="replace")
            except OSError:
                gone += 1
                values.append(math.nan)
                continue
            value = parse_w1_slave(text)
            if value is None:
                self._health.details["rejected"] = self._health.details.get("rejected", 0) + 1
                values.append(math.nan)
            else:
                values.append(value)
        if gone == len(self.devices):
            raise DeviceError(f"no thermometer readable under {self.config.root}")
        return values
