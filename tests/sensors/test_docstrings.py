"""Every sensor backend documents its protocol methods (STYLE.md: shapes, units, errors)."""

from __future__ import annotations

import pytest

from fieldstation.recording.job import Recorder
from fieldstation.sensors.device import AudioSensor
from fieldstation.sensors.generator import SyntheticSensor
from fieldstation.sensors.player import ReplaySensor


@pytest.mark.parametrize("cls", [AudioSensor, ReplaySensor, SyntheticSensor])
def test_sensor_methods_have_docstrings(cls: type) -> None:
    undocumented = [n for n in ("open", "read", "close", "health") if not getattr(cls, n).__doc__]
    assert not undocumented, f"{cls.__name__}: no docstring on {undocumented}"
    assert cls.__doc__ and "sample_rate" in cls.__doc__  # the stream's attributes
    assert "Raises" in (cls.read.__doc__ or "")


def test_the_audio_callback_is_documented() -> None:
    doc = AudioSensor._callback.__doc__ or ""
    assert "(frames, channels)" in doc and "input_overflow" in doc


def test_the_recorder_loop_is_documented() -> None:
    doc = Recorder.run.__doc__ or ""
    assert "ctx.stop" in doc and "Raises" in doc
