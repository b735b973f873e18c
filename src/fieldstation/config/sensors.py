"""Config bases for sensor plugins.

A sensor entry in the station file is validated by its plugin's config model, which subclasses
:class:`SensorConfig` (or :class:`AudioSensorConfig` for audio sources) and adds its own fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, Field

from fieldstation.config.base import Name, StrictModel
from fieldstation.config.units import Bytes, Hertz, Seconds

__all__ = ["AudioSensorConfig", "SampleFormat", "SensorConfig", "BYTES_PER_SAMPLE"]

SampleFormat = Literal["int16", "int24", "int32", "float32"]
BYTES_PER_SAMPLE: dict[str, int] = {"int16": 2, "int24": 3, "int32": 4, "float32": 4}


class SensorConfig(StrictModel):
    """Fields every sensor has, whatever its plugin."""

    name: Name = Field(description="Unique sensor name; used in file names, topics and job names.")
    kind: str = Field(description="Sensor plugin (entry point in group fieldstation.sensors).")
    enabled: bool = Field(default=True, description="A disabled sensor is validated but not run.")
    schedule: str | None = Field(
        default=None,
        description="Name of a schedule in [schedules]; omitted means record continuously.",
    )
    chunk: Seconds = Field(
        default=60.0, gt=0, le=86400, description="Length of each recorded file (chunk), seconds."
    )
    min_free: Bytes = Field(
        default=ByteSize(200_000_000),
        description="No chunk starts while the disk holding the station home has less free space.",
    )
    keep_partial: bool = Field(
        default=True,
        description="On a stop during a chunk, keep the partial chunk (end reason 'stopped') "
        "instead of discarding it.",
    )

    def bytes_per_second(self) -> float | None:
        """Uncompressed data rate in bytes per second, or None when the sensor cannot say."""
        return None


class AudioSensorConfig(SensorConfig):
    """Fields shared by audio sources (real device, replayed files, synthetic)."""

    sample_rate: Hertz = Field(default=48000, description="Sample rate, Hz (e.g. '48kHz').")
    channels: int = Field(default=1, ge=1, le=64, description="Number of channels.")
    sample_format: SampleFormat = Field(default="int16", description="Sample format of the stream.")
    format: Literal["flac", "wav"] = Field(
        default="flac", description="File format of chunks: flac (lossless, smaller) or wav."
    )

    def bytes_per_second(self) -> float | None:
        return float(self.sample_rate * self.channels * BYTES_PER_SAMPLE[self.sample_format])
