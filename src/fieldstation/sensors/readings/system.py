"""The working sensor behind the ``system`` plugin (see :mod:`fieldstation.sensors.system`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil

from fieldstation.clock import Clock
from fieldstation.sensors.base import DeviceError
from fieldstation.sensors.readings.periodic import PeriodicSensor

__all__ = ["CPU_SENSORS", "SystemSensor", "cpu_temperature"]

CPU_SENSORS = ("cpu_thermal", "coretemp", "k10temp", "zenpower", "soc_thermal", "acpitz")
"""psutil temperature sensor names tried in order (Raspberry Pi, Intel, AMD, other SoCs)."""


def cpu_temperature() -> float | None:
    """The CPU temperature (°C) from psutil, None when this machine exposes none."""
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    try:
        found = read()
    except (OSError, RuntimeError):
        return None
    for name in CPU_SENSORS:
        for entry in found.get(name, []):
            if entry.current is not None:
                return float(entry.current)
    return None


class SystemSensor(PeriodicSensor):
    """This machine's CPU temperature (if any), load, memory and the disk of ``path``."""

    def __init__(self, period: float, path: Path, clock: Clock | None = None) -> None:
        super().__init__(period, clock)
        self.path = path
        self._has_temperature = cpu_temperature() is not None
        fields = ["load_1m", "memory_used", "disk_free", "disk_used"]
        units = ["1", "%", "By", "%"]
        if self._has_temperature:
            fields.insert(0, "cpu_temperature")
            units.insert(0, "Cel")
        self.fields = tuple(fields)
        self.units = tuple(units)

    def options(self) -> dict[str, object]:
        return {"path": str(self.path)}

    def measure(self) -> list[float] | None:
        try:
            disk = shutil.disk_usage(self.path)
        except OSError as error:
            raise DeviceError(f"disk of {self.path} cannot be read: {error}") from error
        values = [
            os.getloadavg()[0] / (os.cpu_count() or 1),
            float(psutil.virtual_memory().percent),
            float(disk.free),
            100.0 * disk.used / disk.total if disk.total else float("nan"),
        ]
        if self._has_temperature:
            temperature = cpu_temperature()
            values.insert(0, float("nan") if temperature is None else temperature)
        return values
