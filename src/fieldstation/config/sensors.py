"""Config bases for sensor plugins.

A sensor entry in the station file is validated by its plugin's config model, which subclasses
:class:`SensorConfig` (or :class:`AudioSensorConfig` for audio sources) and adds its own fields.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ByteSize, Field, field_validator

from fieldstation.config.base import Name, StrictModel
from fieldstation.config.units import Bytes, Hertz, Seconds, parse_duration, parse_frequency

__all__ = [
    "BYTES_PER_SAMPLE",
    "FLAC_MAX_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
    "MIN_CHUNK",
    "AudioSensorConfig",
    "SampleFormat",
    "SensorConfig",
    "WARMUP_LIMIT",
    "warmup_field",
    "warmup_of",
]

SampleFormat = Literal["int16", "int24", "int32", "float32"]
BYTES_PER_SAMPLE: dict[str, int] = {"int16": 2, "int24": 3, "int32": 4, "float32": 4}

MIN_CHUNK = 0.05
"""Shortest chunk, seconds (decision record 0015). Every chunk costs a file, an fsync of the
file and of its folders, a database row and an outbox message; on an SD card an fsync takes
from a few to tens of milliseconds, so at 50 ms (20 chunks a second per sensor) committing
already takes about as long as recording. A shorter chunk ("1ms") cannot be committed in real
time."""

MAX_SAMPLE_RATE = 2_000_000
"""Highest sample rate of an audio sensor, Hz (decision record 0015): the fastest field audio
converters (ultrasonic bat recorders) sample at 1 MHz at most; above 2 MHz a value is a typo
("48MHz"), and beyond 2^31 - 1 libsndfile cannot even store it."""

FLAC_MAX_SAMPLE_RATE = 655_350
"""Highest sample rate FLAC chunks can have, Hz: libsndfile (1.2) refuses to write FLAC above
``FLAC__MAX_SAMPLE_RATE`` = 655350 Hz ("flac does not support this sample rate"), the largest
rate a FLAC frame header can code (in units of 10 Hz, 16 bits)."""


WARMUP_LIMIT = 60.0
"""Longest ``warmup`` accepted, seconds."""


def warmup_field(default: float) -> Any:
    """The ``warmup`` key of a live sensor's config (a pydantic ``Field``), ``default`` seconds:
    how long before each slot starts the sensor is opened; frames captured before the slot
    starts are dropped, so the recording starts at the slot start to the frame
    (:mod:`fieldstation.recording.job`; issue 22)."""
    return Field(
        default=default,
        ge=0,
        le=WARMUP_LIMIT,
        description="Seconds before each slot that the sensor is opened, so that the recording "
        "starts at the slot start to the frame however long the device takes to deliver "
        "(frames captured earlier are dropped); between slots closer than this it stays open. "
        "0: opened when the slot starts.",
    )


def warmup_of(sensor: SensorConfig) -> float:
    """Seconds before each slot that ``sensor`` is opened: its ``warmup`` (:func:`warmup_field`)
    when its plugin's config has one (live sensors), else 0 (replays, readings, cameras)."""
    return float(getattr(sensor, "warmup", 0.0))


class SensorConfig(StrictModel):
    """Fields every sensor has, whatever its plugin.

    ``media`` (a class attribute, not a station-file key) is what the plugin's sensor records:
    ``audio``, ``video`` or ``readings``; it decides which processors may analyse its
    recordings. A plugin config that does not set it records audio."""

    media: ClassVar[str] = "audio"

    name: Name = Field(description="Unique sensor name; used in file names, topics and job names.")
    kind: str = Field(description="Sensor plugin (entry point in group fieldstation.sensors).")
    enabled: bool = Field(default=True, description="A disabled sensor is validated but not run.")
    schedule: str | None = Field(
        default=None,
        description="Name of a schedule in [schedules]; omitted means record continuously.",
    )
    chunk: Seconds = Field(
        default=60.0,
        ge=MIN_CHUNK,
        le=86400,
        description="Length of each recorded file (chunk), seconds (50 ms to 1 day).",
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

    @field_validator("chunk", mode="before")
    @classmethod
    def _sane_chunk(cls, value: object) -> object:
        try:
            seconds = parse_duration(value)
        except ValueError:
            return value  # the type's own message
        if 0 < seconds < MIN_CHUNK:
            raise ValueError(
                f"a chunk of {seconds:g} s is too short: each chunk is a file, fsyncs, a "
                f"database row and a message; use at least {MIN_CHUNK:g} s (e.g. '1s', '60s')"
            )
        return value

    def bytes_per_second(self) -> float | None:
        """Bytes per second of what the sensor stores while recording (audio: uncompressed
        PCM; video: an H.264 estimate; readings: rows or Arrow columns; what
        :meth:`storage_label` names), or None when the sensor cannot say."""
        return None

    def storage_label(self) -> str:
        """What :meth:`bytes_per_second` measures, for the schedule preview (e.g. ``raw PCM``,
        ``H.264 (estimate)``)."""
        return "data"


class AudioSensorConfig(SensorConfig):
    """Fields shared by audio sources (real device, replayed files, synthetic)."""

    sample_rate: Hertz = Field(
        default=48000,
        le=MAX_SAMPLE_RATE,
        description="Sample rate, Hz (e.g. '48kHz'); at most 2 MHz, and 655350 Hz for FLAC.",
    )
    channels: int = Field(default=1, ge=1, le=64, description="Number of channels.")
    sample_format: SampleFormat = Field(default="int16", description="Sample format of the stream.")
    format: Literal["flac", "wav"] = Field(
        default="flac", description="File format of chunks: flac (lossless, smaller) or wav."
    )

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _sane_rate(cls, value: object) -> object:
        try:
            hz = parse_frequency(value)
        except ValueError:
            return value  # the type's own message
        if hz > MAX_SAMPLE_RATE:
            raise ValueError(
                f"a sample rate of {hz} Hz is beyond any audio converter (at most "
                f"{MAX_SAMPLE_RATE} Hz); did you mean kHz (e.g. '48kHz')?"
            )
        return value

    def bytes_per_second(self) -> float | None:
        return float(self.sample_rate * self.channels * BYTES_PER_SAMPLE[self.sample_format])

    def storage_label(self) -> str:
        return "raw PCM"
