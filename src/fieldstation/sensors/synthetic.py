"""Synthetic audio sensor: deterministic chirps, a tone or noise at any rate (needs no hardware).

The stream is a pure function of ``(config, frame index)``, so any block size gives the same
samples, and tests can predict it:

- **noise floor**: white Gaussian noise at ``noise_dbfs`` RMS (dB re full scale), generated from
  ``seed`` and repeating every :data:`NOISE_PERIOD` frames (so generation costs nothing per hour);
- **chirps** (default): on that floor, chirp *k* (k = 0, 1, ...) starts at frame
  ``k * P + P // 2`` with ``P = round(chirp_interval * sample_rate)`` (see :func:`chirp_onsets`),
  lasts ``chirp_duration`` seconds, sweeps linearly from ``0.5 * frequency`` to
  ``1.5 * frequency``, is Hann-windowed and peaks at ``level_dbfs``;
- **tone**: a sine at ``frequency`` and ``level_dbfs`` peak, on the floor;
- **noise**: Gaussian noise at ``level_dbfs`` RMS only.

Blocks are paced in real time on the injected clock (``speed`` × real time); on a virtual
clock they come at CPU speed.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.sensors import AudioSensorConfig, warmup_field
from fieldstation.config.units import Hertz, Seconds
from fieldstation.sensors.base import check_file_format as _check_file_format

__all__ = ["NOISE_PERIOD", "SyntheticConfig", "chirp_onsets", "plugin"]

NOISE_PERIOD = 1 << 20
"""Frames after which the noise floor repeats (about 22 s at 48 kHz)."""


class SyntheticConfig(AudioSensorConfig):
    """A generated signal at any sample rate; needs no hardware."""

    signal: Literal["chirps", "tone", "noise"] = Field(
        default="chirps", description="chirps: tonal sweeps on a quiet noise floor; tone; noise."
    )
    frequency: Hertz = Field(default=4000, description="Tone frequency / chirp centre, Hz.")
    seed: int = Field(default=0, description="Random seed (the stream is deterministic).")
    chirp_interval: Seconds = Field(
        default=1.0, gt=0, description="Seconds from one chirp onset to the next."
    )
    chirp_duration: Seconds = Field(default=0.05, gt=0, description="Length of a chirp, seconds.")
    level_dbfs: float = Field(
        default=-6.0, le=0, description="Peak level of chirps/tone (RMS for noise), dBFS."
    )
    noise_dbfs: float = Field(
        default=-60.0, le=0, description="RMS level of the noise floor under chirps/tone, dBFS."
    )
    speed: float = Field(default=1.0, gt=0, description="1 = real time; 10 = ten times faster.")
    block: Seconds = Field(
        default=0.1, gt=0, le=10, description="Length of each block handed out, seconds."
    )
    warmup: Seconds = warmup_field(0.0)

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        _check_file_format(self)
        if self.chirp_duration > self.chirp_interval:
            raise ValueError("chirp_duration is longer than chirp_interval")
        top = 1.5 * self.frequency if self.signal == "chirps" else self.frequency
        if self.signal != "noise" and top >= self.sample_rate / 2:
            raise ValueError(
                f"{self.signal} reach {top:g} Hz, at or above the Nyquist frequency "
                f"({self.sample_rate / 2:g} Hz): lower 'frequency' or raise 'sample_rate'"
            )
        return self


def chirp_onsets(config: SyntheticConfig, start: int, stop: int) -> list[int]:
    """Onset frames of the chirps starting in frames ``[start, stop)`` of the stream.

    Onset of chirp k = ``k * P + P // 2``, ``P = round(chirp_interval * sample_rate)``.
    """
    period = round(config.chirp_interval * config.sample_rate)
    first = max(0, math.ceil((start - period // 2) / period))
    onsets = []
    k = first
    while (onset := k * period + period // 2) < stop:
        if onset >= start:
            onsets.append(onset)
        k += 1
    return onsets


def _create(config: SyntheticConfig, **context: Any) -> Any:
    """Build a :class:`fieldstation.sensors.generator.SyntheticSensor` (context: ``clock``)."""
    from fieldstation.sensors.generator import SyntheticSensor

    return SyntheticSensor(config, clock=context.get("clock"))


plugin = Plugin(config_model=SyntheticConfig, factory=_create, description=__doc__ or "")
