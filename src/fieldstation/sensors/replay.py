"""Replay sensor: real audio files played as if live.

Files (and the audio files inside folders, sorted by name) are played in order as one
continuous stream, paced on the injected clock at ``speed`` × real time, optionally looping.
Nothing is resampled (decision record 0021): when ``sample_rate`` (or ``channels``) is omitted it
is taken from the first file, and every file must then match it; a file that does not match is
an error at start-up naming the file, the rates and what to do, unless ``mismatched = "skip"``
(then it is left out, with a warning in the log and its name in ``health()``); so is a file
that cannot be read (not a regular file, no read permission, no audio format libsndfile knows,
a damaged header) and a file found damaged while it plays. A file with no frames is always
left out (a loop over nothing would spin). A path in ``files`` that does not exist is always an
error. These errors are configuration errors (:func:`~fieldstation.sensors.base.config_error`):
the recorder job stops with the reason instead of being restarted (decision record 0016).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.sensors import BYTES_PER_SAMPLE, AudioSensorConfig
from fieldstation.config.units import Seconds
from fieldstation.sensors.base import SensorConfigError
from fieldstation.sensors.base import check_file_format as _check_file_format

__all__ = ["AUDIO_SUFFIXES", "ReplayConfig", "expand_files", "file_problem", "plugin", "preflight"]

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

    def bytes_per_second(self) -> float | None:
        """Raw PCM bytes per second at the rate and channels the files really have when the
        config omits them (the first readable file's header, as the sensor does); None when
        no file can be read."""
        given = self.model_fields_set
        if "sample_rate" in given and "channels" in given:
            return super().bytes_per_second()
        import soundfile as sf

        try:
            files = expand_files(list(self.files))
        except SensorConfigError:
            return None
        for path in files:
            if file_problem(path) is not None:
                continue
            try:
                info = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError):
                continue
            rate = self.sample_rate if "sample_rate" in given else int(info.samplerate)
            channels = self.channels if "channels" in given else int(info.channels)
            return float(rate * channels * BYTES_PER_SAMPLE[self.sample_format])
        return None


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be replayed before even decoding it, or None: not a regular file
    (a FIFO, a device, a socket: opening one could block for ever) or not readable by this
    process. Never opens the file."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        return f"cannot be examined: {error.strerror or error}"
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        return f"is {kind}, not an audio file"
    if not os.access(path, os.R_OK):
        return "is not readable by this user (check its permissions)"
    return None


def expand_files(paths: list[Path]) -> list[Path]:
    """Files of ``paths`` in order, folders replaced by their audio files sorted by name.

    Entries that are not regular files (a FIFO) or not readable are kept: the caller decides
    (:func:`file_problem`). Raises :class:`SensorConfigError` naming the key of a path that does
    not exist, a folder that cannot be listed, or a folder with no audio file.
    """
    out: list[Path] = []
    for index, path in enumerate(paths):
        key = f"files[{index}]"
        path = path.expanduser()
        if path.is_dir():
            try:
                entries = list(path.iterdir())
            except OSError as error:
                raise SensorConfigError(
                    f"{key}: replay folder {path} cannot be listed: {error.strerror or error}"
                ) from None
            found = sorted(
                p
                for p in entries
                if p.suffix.lower() in AUDIO_SUFFIXES and not p.is_dir() and p.exists()
            )
            if not found:
                raise SensorConfigError(f"{key}: replay folder {path} holds no audio file")
            out.extend(found)
        elif os.path.lexists(path) and path.exists():
            out.append(path)
        else:
            raise SensorConfigError(f"{key}: replay file {path} does not exist; fix 'files'")
    return out


def preflight(config: ReplayConfig) -> list[str]:
    """What would stop this sensor on this machine, checked cheaply (headers only): paths that
    do not exist, entries that are not regular readable files, files whose header does not
    decode, files with no frames (each an error under ``mismatched = "error"``; under ``skip``
    only when no file is left)."""
    import soundfile as sf

    try:
        files = expand_files(config.files)
    except SensorConfigError as error:
        return [str(error)]
    problems: list[str] = []
    usable = 0
    for path in files:
        problem = file_problem(path)
        if problem is None:
            try:
                info = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError) as error:
                problem = f"does not decode: {error}"
            else:
                if info.frames == 0:
                    continue  # left out at run time too, with a warning
        if problem is None:
            usable += 1
        elif config.mismatched == "error":
            problems.append(
                f"replay file {path} {problem}; fix it, or set mismatched = 'skip' to leave "
                "such files out"
            )
    if usable == 0 and not problems:
        problems.append("no replay file holds audio that can be played")
    return problems


def _create(config: ReplayConfig, **context: Any) -> Any:
    """Build a :class:`fieldstation.sensors.player.ReplaySensor` (context: ``clock``).

    Raises :class:`SensorConfigError` for missing files or mismatched sample rates/channels.
    """
    from fieldstation.sensors.player import ReplaySensor

    return ReplaySensor(config, clock=context.get("clock"))


plugin = Plugin(
    config_model=ReplayConfig, factory=_create, description=__doc__ or "", preflight=preflight
)
