"""Replay sensor: real audio files played as if live.

Files (and the audio files inside folders, sorted by name) are played in order as one
continuous stream, paced on the injected clock at ``speed`` × real time, optionally looping.
Nothing is resampled (decision record 0021): when ``sample_rate`` (or ``channels``) is omitted it
is taken from the first file, and every file must then match it; a file that does not match is
an error at start-up naming the file, the rates and what to do, unless ``mismatched = "skip"``
(then it is left out, with a warning in the log and its name in ``health()``); so is a file
that cannot be read (no audio format libsndfile knows, a damaged header).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.sensors import AudioSensorConfig
from fieldstation.config.units import Seconds
from fieldstation.sensors.base import SensorConfigError
from fieldstation.sensors.base import check_file_format as _check_file_format

__all__ = ["AUDIO_SUFFIXES", "ReplayConfig", "expand_files", "plugin"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff", ".w64", ".caf")
"""File name endings (case-insensitive) picked up inside folders."""


class ReplayConfig(AudioSensorConfig):
    """Files or folders of audio files played in order, real-time paced or faster.

    ``sample_rate`` and ``channels`` omitted: taken from the first file; given: every file must
    have them (no resampling).
    """

    files: list[Path] = Field(min_length=1, description="Audio files or folders (sorted).")
    speed: float = Field(default=1.0, gt=0, description="1 = real time; 0 < speed; 10 = 10x.")
    loop: bool = Field(default=False, description="Start again after the last file.")
    block: Seconds = Field(
        default=0.1, gt=0, le=10, description="Length of each block handed out, seconds."
    )
    mismatched: Literal["error", "skip"] = Field(
        default="error",
        description="A file that cannot be read, or whose sample rate or channels differ from "
        "the sensor's: 'error' refuses to start; 'skip' leaves it out (logged and listed in "
        "health()).",
    )

    @model_validator(mode="after")
    def _check(self) -> ReplayConfig:
        _check_file_format(self)
        return self


def expand_files(paths: list[Path]) -> list[Path]:
    """Files of ``paths`` in order, folders replaced by their audio files sorted by name.

    Raises :class:`SensorConfigError` naming a path that does not exist or a folder with no
    audio file.
    """
    out: list[Path] = []
    for path in paths:
        path = path.expanduser()
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
            )
            if not found:
                raise SensorConfigError(f"replay folder {path} holds no audio file")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise SensorConfigError(f"replay file {path} does not exist; fix 'files'")
    return out


def _create(config: ReplayConfig, **context: Any) -> Any:
    """Build a :class:`fieldstation.sensors.player.ReplaySensor` (context: ``clock``).

    Raises :class:`SensorConfigError` for missing files or mismatched sample rates/channels.
    """
    from fieldstation.sensors.player import ReplaySensor

    return ReplaySensor(config, clock=context.get("clock"))


plugin = Plugin(config_model=ReplayConfig, factory=_create, description=__doc__ or "")
