"""Line-based serial instruments and NMEA GPS receivers through pyserial (kind ``serial``).

``protocol = "keyvalue"``: each line is ``KEY=value`` pairs separated by commas
(``T=21.4,RH=55.2``); ``keys`` are the keys kept, stored as ``quantities`` (default: the keys)
in ``units``. A key missing from a line is a missing value (no row).

``protocol = "nmea"``: a GPS receiver; each GGA sentence with a fix (quality > 0, checksum
valid: pynmea2) is one measurement of ``latitude`` and ``longitude`` (deg, WGS84, north and
east positive) and ``elevation`` (m above mean sea level). The latest one is the station's
position (:func:`fieldstation.store.readings.latest_position`).

A slow sensor: every complete record is one measurement, stamped with the station clock when
its line arrives; ``every = n`` keeps every n-th record (a 1 Hz GPS with ``every = 60`` gives
one fix a minute). ``period`` is the seconds between two kept records (at least 1 s): it tells
consumers the series' spacing and bounds the wait: no kept record for ``timeout`` seconds
(default ``3 * period``, at least 10 s) is a device error (the recorder reopens the port).
Malformed lines and bad checksums are skipped and counted in the sensor's health.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.units import Seconds
from fieldstation.sensors.readings.config import SlowSensorConfig

__all__ = ["NMEA_FIELDS", "NMEA_UNITS", "SerialConfig", "plugin"]

NMEA_FIELDS = ("latitude", "longitude", "elevation")
NMEA_UNITS = ("deg", "deg", "m")


class SerialConfig(SlowSensorConfig):
    """A line-based instrument or a GPS on a serial port."""

    media: ClassVar[str] = "readings"

    port: str = Field(description="Serial device, e.g. '/dev/ttyUSB0' or '/dev/serial0'.")
    baudrate: int = Field(default=9600, gt=0, description="Line speed, bit/s.")
    protocol: Literal["keyvalue", "nmea"] = Field(
        description="keyvalue ('T=21.4,RH=55.2' lines) or nmea (a GPS)."
    )
    keys: list[str] = Field(default_factory=list, description="keyvalue: keys to keep.")
    quantities: list[str] | None = Field(
        default=None, description="keyvalue: quantity name per key; default the keys."
    )
    units: list[str] = Field(default_factory=list, description="keyvalue: unit per key.")
    every: int = Field(default=1, ge=1, description="Keep every n-th complete record.")
    timeout: Seconds | None = Field(
        default=None, gt=0, description="Seconds without a record before a device error."
    )

    @model_validator(mode="after")
    def _check(self) -> SerialConfig:
        if self.protocol == "keyvalue":
            if not self.keys:
                raise ValueError("keys: a keyvalue instrument needs the keys to keep, e.g. ['T']")
            if len(self.units) != len(self.keys):
                raise ValueError(
                    f"units: {len(self.units)} unit(s) for {len(self.keys)} key(s); give one "
                    "unit per key"
                )
            if self.quantities is not None and len(self.quantities) != len(self.keys):
                raise ValueError("quantities: give one quantity name per key (or omit it)")
        elif self.keys or self.units or self.quantities:
            raise ValueError(
                "keys/units/quantities are for protocol = 'keyvalue'; a GPS (nmea) gives "
                "latitude, longitude and elevation"
            )
        return self

    def wait_limit(self) -> float:
        """Seconds without a kept record before a device error."""
        return self.timeout if self.timeout is not None else max(10.0, 3 * self.period)


def _create(config: SerialConfig, **context: Any) -> Any:
    """Build a :class:`fieldstation.sensors.readings.serialline.SerialSensor` (context:
    ``clock``)."""
    from fieldstation.sensors.readings.serialline import SerialSensor

    return SerialSensor(config, clock=context.get("clock"))


def _preflight(config: SerialConfig) -> list[str]:
    import os

    if not os.path.exists(config.port):
        return [f"port: {config.port} does not exist; plug the instrument in or fix 'port'"]
    return []


plugin = Plugin(
    config_model=SerialConfig, factory=_create, description=__doc__ or "", preflight=_preflight
)
