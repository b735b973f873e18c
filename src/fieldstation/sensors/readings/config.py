"""Config bases of readings sensors (cheap to import: pydantic only).

A readings sensor is **slow** when its config has a ``period`` (seconds, at least 1): it is run
by :func:`fieldstation.recording.rows.run_readings`, which stores each period's values as rows
of the ``readings`` table and sends one ``readings`` message per period. Otherwise it is
**fast** (an IMU at 100-1000 Hz): a stream of chunk files written by
:func:`fieldstation.recording.job.run_recorder`. The sensor's ``describe()`` says the same
(``options["period"]`` is present exactly for slow sensors: :func:`period_of`). Decision
record 0073.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from fieldstation.config.sensors import SensorConfig
from fieldstation.config.units import Seconds

if TYPE_CHECKING:
    from fieldstation.sensors.base import StreamDescription

__all__ = [
    "MIN_PERIOD",
    "ReadingsSensorConfig",
    "SlowSensorConfig",
    "is_slow",
    "period_of",
    "rate_of_period",
]

MIN_PERIOD = 1.0
"""Shortest period of a slow sensor, seconds: faster sensors are streams (chunk files)."""


ROW_BYTES = 200
"""Estimated bytes one stored value of a slow sensor takes in the station database: the
``readings`` row (text timestamp in SQLite, sensor, quantity and unit names, the value) and its
three indexes; a round figure for the schedule preview, not a measurement of a given file."""


class ReadingsSensorConfig(SensorConfig):
    """Fields every readings sensor has (``media`` = ``readings``)."""

    media: ClassVar[str] = "readings"

    def quantity_count(self) -> int | None:
        """How many quantities (columns) a measurement has, when the config alone says."""
        return None

    def bytes_per_second(self) -> float | None:
        """Slow sensors: :data:`ROW_BYTES` per value per period; streams: 4 bytes (float32)
        per quantity per sample in Arrow files. None when the quantity count is unknown."""
        count = self.quantity_count()
        if count is None:
            return None
        period = getattr(self, "period", None)
        if period is not None:
            return count * ROW_BYTES / float(period)
        rate = getattr(self, "rate", None)
        return None if rate is None else float(count * 4 * rate)

    def storage_label(self) -> str:
        return "database rows (estimate)" if is_slow(self) else "Arrow float32"


class SlowSensorConfig(ReadingsSensorConfig):
    """A readings sensor sampled once per ``period`` (values stored as rows)."""

    period: Seconds = Field(
        default=60.0,
        ge=MIN_PERIOD,
        le=86400,
        description="Seconds between two measurements (at least 1 s; e.g. '30s', '5m').",
    )


def rate_of_period(period: float) -> int:
    """The ``rate`` (Hz) a slow sensor's ``describe()`` gives: the smallest integer >= 1
    that is at least ``1 / period`` (always 1 for a period of a second or more)."""
    return max(1, math.ceil(1.0 / period))


def period_of(stream: StreamDescription) -> float | None:
    """The period (seconds) of a slow readings stream, None for a fast one (or other media)."""
    if stream.media != "readings":
        return None
    period: Any = stream.options.get("period")
    return None if period is None else float(period)


def is_slow(config: SensorConfig) -> bool:
    """True when ``config`` is a slow readings sensor (run by ``run_readings``, not by the
    recorder): a readings config with a ``period``."""
    return config.media == "readings" and getattr(config, "period", None) is not None
