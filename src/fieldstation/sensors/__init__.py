"""Sensors: the :class:`Sensor` protocol and the built-in backends (synthetic, replay, audio).

Build the sensor of a station-file entry with :func:`build_sensor`. Backend modules import their
heavy libraries (numpy, soundfile, sounddevice) only when a sensor is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fieldstation.clock import Clock
from fieldstation.config.plugins import load_plugin
from fieldstation.config.sensors import SensorConfig
from fieldstation.sensors.base import (
    Block,
    DeviceError,
    Sensor,
    SensorConfigError,
    SensorError,
    SensorHealth,
)

__all__ = [
    "Block",
    "DeviceError",
    "Sensor",
    "SensorConfigError",
    "SensorError",
    "SensorHealth",
    "build_sensor",
]


def build_sensor(config: SensorConfig, clock: Clock, home: Path | None = None) -> Sensor:
    """The working sensor of ``config`` (its plugin's factory), pacing itself on ``clock``;
    ``home``: the station home folder, for sensors that measure it (``system``'s disk).

    Raises :class:`SensorConfigError` when the config cannot work (e.g. replay files at another
    sample rate) and ``TypeError`` when the plugin does not build a :class:`Sensor`.
    """
    context: dict[str, Any] = {"clock": clock}
    if home is not None:
        context["home"] = home
    sensor: Any = load_plugin("sensors", config.kind).factory(config, **context)
    if not isinstance(sensor, Sensor):
        raise TypeError(f"sensor plugin {config.kind!r} did not build a Sensor")
    return sensor
