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
``device_error``). ``sounddevice`` is imported only when the sensor is built.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.sensors import AudioSensorConfig
from fieldstation.config.units import Seconds
from fieldstation.sensors.base import check_file_format as _check_file_format

__all__ = ["AudioConfig", "plugin"]


class AudioConfig(AudioSensorConfig):
    """A microphone or sound card input."""

    device: str | int | None = Field(
        default=None, description="Device name (substring) or index; omitted: the default input."
    )
    blocksize: int = Field(
        default=0, ge=0, description="Frames per callback; 0 lets PortAudio choose."
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

    @model_validator(mode="after")
    def _check(self) -> AudioConfig:
        _check_file_format(self)
        return self


def _create(config: AudioConfig, **context: Any) -> Any:
    """Build a :class:`fieldstation.sensors.device.AudioSensor` (context: ``clock``).

    The device is opened by ``open()``; errors then raise ``DeviceError``.
    """
    from fieldstation.sensors.device import AudioSensor

    return AudioSensor(config, clock=context.get("clock"))


plugin = Plugin(config_model=AudioConfig, factory=_create, description=__doc__ or "")
