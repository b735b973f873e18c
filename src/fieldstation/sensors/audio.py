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
With ``blocksize = "auto"`` (the default) the callback block size is chosen from the sample
rate and the chunk length (a callback every 50-100 ms, at most :data:`MAX_CALLBACK_BYTES`:
:func:`callback_frames`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.sensors import AudioSensorConfig, warmup_field
from fieldstation.config.units import Seconds
from fieldstation.sensors.base import check_file_format as _check_file_format

__all__ = ["CALLBACK_PERIOD", "MAX_CALLBACK_BYTES", "AudioConfig", "callback_frames", "plugin"]


class AudioConfig(AudioSensorConfig):
    """A microphone or sound card input."""

    device: str | int | None = Field(
        default=None, description="Device name (substring) or index; omitted: the default input."
    )
    blocksize: int | Literal["auto"] = Field(
        default="auto",
        description="Frames per PortAudio callback. 'auto' (the default): chosen from the "
        "sample rate and chunk length for a callback every 50-100 ms, at most 60 KiB "
        "(callback_frames; decisions 0121, 0150); 0 lets PortAudio choose (often tiny "
        "buffers: about six times the CPU at 384 kHz, but always the host's own period).",
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
MAX_CALLBACK_BYTES = 61_440
"""Largest automatic block, bytes (frames x channels x sample bytes). A block larger than the
host API's largest period is assembled by PortAudio from smaller host buffers, and the ADC
time it reports is then a later host buffer's: through PulseAudio's ALSA plugin, 384 kHz int16
blocks of 38,400 frames (76,800 bytes) were stamped 14.9 ms late in every run of the click
test (38,400 - 32,768 frames: a 64 KiB host period), and with 32,768 frames (65,536 bytes)
the reported lag ran in a sawtooth that never settled; 30,720 frames (61,440 bytes) and every
smaller block tried were within 0.3 ms (docs/performance.md, Recording). Such an offset is
constant, so no settling rule can see it: the size must avoid it."""


def callback_frames(rate: int, chunk: float, frame_bytes: int = 2) -> int:
    """Frames per PortAudio callback for a stream of ``rate`` Hz cut into ``chunk``-second
    files, whose frames are ``frame_bytes`` bytes (channels x sample bytes): the largest
    block of 50-100 ms (:data:`CALLBACK_PERIOD`) and at most :data:`MAX_CALLBACK_BYTES` that
    divides the frames of a chunk, so every chunk holds a whole number of callbacks; the
    longest allowed block when none divides it. E.g. 48 kHz: 4,800 frames (100 ms); 384 kHz
    mono int16, 60 s chunks: 30,720 frames (80 ms; 100 ms would be over the byte limit)."""
    longest = max(1, min(round(rate * CALLBACK_PERIOD[1]), MAX_CALLBACK_BYTES // frame_bytes))
    shortest = max(1, min(round(rate * CALLBACK_PERIOD[0]), longest))
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
