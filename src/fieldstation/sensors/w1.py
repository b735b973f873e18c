"""DS18B20 1-Wire thermometers read through the Linux w1 driver (``w1_therm``).

Each thermometer is ``<root>/28-<serial>/w1_slave`` (``root`` default
``/sys/bus/w1/devices``; tests point it at a folder of fake files). The driver's two lines::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

A reading counts only when the first line ends in ``YES`` (the scratchpad CRC matched) and the
value (``t=``, thousandths of °C) is not 85000, the power-on reset value a DS18B20 returns when
it lost power before converting (datasheet 19-7487, "power-on reset value of the temperature
register is +85°C"). A rejected reading is missing (NaN: no row) and counted in the sensor's
health. Slow sensor: one reading of every thermometer per ``period``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from fieldstation.config.plugins import Plugin
from fieldstation.sensors.readings.config import SlowSensorConfig

__all__ = ["W1Config", "plugin"]


class W1Config(SlowSensorConfig):
    """DS18B20 thermometers on the 1-Wire bus."""

    media: ClassVar[str] = "readings"

    root: Path = Field(default=Path("/sys/bus/w1/devices"), description="Folder of the w1 devices.")
    devices: list[str] | None = Field(
        default=None,
        description="Thermometer ids ('28-0316a2795bff'); omitted means every 28-* found.",
    )
    names: dict[str, str] = Field(
        default_factory=dict,
        description="Quantity name per id (e.g. {'28-0316a2795bff' = 'soil_10cm'}); "
        "default 'temperature_<id>'.",
    )


def _create(config: W1Config, **context: Any) -> Any:
    """Build a :class:`fieldstation.sensors.readings.w1.W1Sensor` (context: ``clock``)."""
    from fieldstation.sensors.readings.w1 import W1Sensor

    return W1Sensor(config, clock=context.get("clock"))


def _preflight(config: W1Config) -> list[str]:
    if not config.root.is_dir():
        return [
            f"root: {config.root} does not exist; load the w1-gpio and w1-therm modules "
            "(dtoverlay=w1-gpio) or set 'root'"
        ]
    missing = [d for d in config.devices or [] if not (config.root / d / "w1_slave").exists()]
    return [f"devices: {d} is not under {config.root}" for d in missing]


plugin = Plugin(
    config_model=W1Config, factory=_create, description=__doc__ or "", preflight=_preflight
)
