"""Audio sensor: a real input device through sounddevice (PortAudio).

The PortAudio callback copies each buffer into a bounded queue (``queue_blocks``); when the queue
is full the buffer is dropped and counted, and input overflows reported by PortAudio are
counted too: both show in ``health()`` and in warnings in the log, never silently. Frames
dropped from the queue leave a jump in the running frame index; an ``input_overflow`` flag
(PortAudio discarded samples, how many and where is unknown) marks the next queued block
``discontinuity`` (with a fixed ``blocksize`` the flagged buffer itself is dropped, as the loss
may lie inside it). The recorder turns either into a session break re-anchored at that block's
capture time (decision record 0023). A device that disappears or stops delivering samples for
``timeout`` seconds raises :class:`~fieldstation.sensors.base.DeviceError` (end reason
``device_error``). ``sounddevice`` is imported only when the sensor is built (at the
recorder's start, before its first slot, so the first slot does not pay for the import).
With ``blocksize = "auto"`` the callback block size is chosen from the sample rate and the
chunk length (a callback every 50-100 ms, :func:`callback_frames`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.sensors import AudioSensorConfig, warmup_field
from fieldstation.config.units import Seconds
from fieldstation.sensors.base import check_file_format as _check_file_format

__all__ = ["CALLBACK_PERIOD", "AudioConfig", "callback_frames", "plugin"]


class AudioConfig(AudioSensorConfig):
    """A microphone or sound card input."""

    device: str | int | None = Field(
        default=None, description="Device name (substring) or index; omitted: the default input."
    )
    blocksize: int | Literal["auto"] = Field(
        default=0,
        description="Frames per PortAudio callback; 0 lets PortAudio choose (often tiny "
        "buffers: several times the CPU at high rates); 'auto': chosen from the sample rate "
        "and chunk length for a callback every 50-100 ms (callback_frames; decision 0121).",
    )
    queue_blocks: int = Field(
        default=256,
        ge=2,
        description="Bound of the callback queue, in callback buffers; a full queue drops "
        "(and counts) buffers instead of eating memory.",
    )
    timeout: Seconds = Field(
        default=2.0,
        gt=0,
        description="No samples for this long means the device is dead (end reason "
        "device_error), seconds.",
    )
    latency: float | str = Field(
        default="high", description="PortAudio input latency: 'low', 'high' or seconds."
    )
    warmup: Seconds = warmup_field(2.0)

    @model_validator(mode="after")
    def _check(self) -> AudioConfig:
        _check_file_format(self)
        if isinstance(self.blocksize, int) and self.blocksize < 0:
            raise ValueError("blocksize must be 0 (PortAudio chooses), 'auto' or a frame count")
        return self


CALLBACK_PERIOD = (0.05, 0.1)
"""Seconds between PortAudio callbacks the automatic block size aims at (shortest, longest):
long enough that the per-callback work (a copy, a queue put, a wake of the recorder) costs
little, short enough that the queue and the slot-start latency stay small (issue 22)."""


def callback_frames(rate: int, chunk: float) -> int:
    """Frames per PortAudio callback for a stream of ``rate`` Hz cut into ``chunk``-second
    files: the largest block of 50-100 ms (:data:`CALLBACK_PERIOD`) that divides the frames of
    a chunk, so every chunk holds a whole number of callbacks; 100 ms of frames when none
    divides it. E.g. 384 kHz, 60 s chunks: 38,400 frames (a callback every 100 ms)."""
    shortest = max(1, round(rate * CALLBACK_PERIOD[0]))
    longest = max(shortest, round(rate * CALLBACK_PERIOD[1]))
    frames = round(rate * chunk)
    for block in range(longest, shortest - 1, -1):
        if frames % block == 0:
            return block
    return longest


def _create(config: AudioConfig, **context: Any) -> Any:
    """Build a :class:`fieldstation.sensors.device.AudioSensor` (context: ``clock``).

    The device is opened by ``open()``; errors then raise ``DeviceError``.
    """
    from fieldstation.sensors.device import AudioSensor

    return AudioSensor(config, clock=context.get("clock"))


plugin = Plugin(config_model=AudioConfig, factory=_create, description=__doc__ or "")
