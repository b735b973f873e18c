"""The file player behind the ``replay`` sensor plugin (imports numpy and soundfile)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from fieldstation.clock import Clock, SystemClock
from fieldstation.sensors.base import (
    DTYPES,
    Block,
    SensorConfigError,
    SensorHealth,
    StreamDescription,
    audio_description,
    check_flac_rate,
    config_error,
)
from fieldstation.sensors.pacing import Pacer
from fieldstation.sensors.replay import ReplayConfig, expand_files, file_problem

__all__ = ["ReplaySensor"]

log = logging.getLogger(__name__)

MAX_WAIT = 0.5
"""Longest real time (s) one :meth:`ReplaySensor.read` waits for its frames: a stop is
answered within it whatever ``speed`` and ``block`` are."""


class ReplaySensor:
    """Plays ``config.files`` as one continuous stream (see :mod:`fieldstation.sensors.replay`).

    Built from the files' headers: ``sample_rate`` (Hz) and ``channels`` from the config or the
    first file, ``dtype`` from ``config.sample_format``. Raises a configuration error
    (:func:`~fieldstation.sensors.base.config_error`: a :class:`SensorConfigError` the
    supervisor does not retry) when a path does not exist, or a file is not a regular readable
    file, cannot be decoded, or does not match the stream (unless ``mismatched = "skip"``, and
    then when no file is left). Files with no frames are always left out, with a warning.
    """

    def __init__(self, config: ReplayConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        try:
            self.files = expand_files(config.files)
        except SensorConfigError as error:
            raise config_error(f"replay sensor {config.name!r}: {error}") from None
        self.skipped: list[str] = []
        readable = []
        for path in self.files:
            problem = file_problem(path)
            info = None
            if problem is None:
                try:
                    info = sf.info(str(path))
                except (sf.LibsndfileError, RuntimeError) as error:
                    problem = f"cannot be read: {error}"
            if info is not None and info.frames == 0:
                log.warning(
                    "replay sensor %s: skipping %s: it holds no audio frames", config.name, path
                )
                self.skipped.append(str(path))
                continue
            if info is not None:
                readable.append((path, info))
                continue
            if config.mismatched != "skip":
                raise config_error(
                    f"replay file {path} {problem}; remove it, or set "
                    "mismatched = 'skip' to leave such files out"
                )
            log.warning("replay sensor %s: skipping %s: it %s", config.name, path, problem)
            self.skipped.append(str(path))
        if not readable:
            raise config_error(
                f"no replay file of sensor {config.name!r} can be read and holds audio; "
                f"skipped: {', '.join(self.skipped)}"
            )
        first = readable[0][1]
        given = config.model_fields_set
        self.sample_rate = config.sample_rate if "sample_rate" in given else first.samplerate
        self.channels = config.channels if "channels" in given else first.channels
        if config.format == "flac":
            try:
                check_flac_rate(self.sample_rate, f"replay file {readable[0][0]} is at")
            except ValueError as error:
                raise config_error(f"replay sensor {config.name!r}: {error}") from None
        kept = []
        for path, info in readable:
            problem = None
            if info.samplerate != self.sample_rate:
                problem = (
                    f"replay file {path} is at {info.samplerate} Hz but the sensor streams at "
                    f"{self.sample_rate} Hz; files are not resampled: give each sample rate its "
                    f"own replay sensor, set mismatched = 'skip', or convert the file (e.g. "
                    f"sox in.wav -r {self.sample_rate} out.wav)"
                )
            elif info.channels != self.channels:
                problem = (
                    f"replay file {path} has {info.channels} channel(s), the sensor "
                    f"{self.channels}; give it its own replay sensor or omit 'channels'"
                )
            if problem is None:
                kept.append(path)
            elif config.mismatched == "skip":
                log.warning(
                    "replay sensor %s: skipping %s (%d Hz, %d channel(s); the sensor streams "
                    "%d Hz, %d channel(s))",
                    config.name,
                    path,
                    info.samplerate,
                    info.channels,
                    self.sample_rate,
                    self.channels,
                )
                self.skipped.append(str(path))
            else:
                raise config_error(problem)
        if not kept:
            raise config_error(
                f"no replay file of sensor {config.name!r} is at {self.sample_rate} Hz with "
                f"{self.channels} channel(s); skipped: {', '.join(self.skipped)}"
            )
        self.files = kept
        self.dtype = DTYPES[config.sample_format]
        # A read waits until its block has "happened" at `speed`; at a slow speed a whole block
        # could take minutes, during which a stop (SIGTERM) goes unanswered: blocks shrink so
        # that one read never waits more than MAX_WAIT seconds of real time.
        prompt = max(1, int(MAX_WAIT * config.speed * self.sample_rate))
        self._block = min(max(1, round(config.block * self.sample_rate)), prompt)
        self._pacer = Pacer(self.clock, self.sample_rate, config.speed)
        self._index = 0
        self._file: sf.SoundFile | None = None
        self._frame = 0
        self._state = "closed"
        self._ended = False
        self._pass_frames = 0
        """Frames read since the first file was (re)opened: a loop pass with none ends."""

    def _next_file(self) -> bool:
        """Open the next playable file (the first again when looping); False when none is left.

        A file that no longer opens is dropped (:meth:`_drop`). Raises a configuration error
        when a whole loop over the files gave no frame (nothing to play, ever).
        """
        if self._file is not None:
            self._file.close()
            self._file = None
        while True:
            if self._index >= len(self.files):
                if not self.config.loop:
                    return False
                if self._pass_frames == 0 or not self.files:  # a pass gave nothing: never will
                    raise config_error(
                        f"replay sensor {self.config.name!r}: no file has audio left to play; "
                        f"skipped: {', '.join(self.skipped)}"
                    )
                self._index = 0
                self._pass_frames = 0
            path = self.files[self._index]
            try:
                self._file = sf.SoundFile(str(path))
            except (sf.LibsndfileError, RuntimeError, OSError) as error:
                self._drop(path, error, at_frame=0)
                continue
            self._index += 1
            return True

    def _drop(self, path: Path, error: Exception, at_frame: int) -> None:
        """Leave ``path`` out from now on (``mismatched = "skip"``), with a warning naming it;
        else raise a configuration error naming it."""
        where = f"after {at_frame} frame(s)" if at_frame else "when opened"
        if self.config.mismatched != "skip":
            raise config_error(
                f"replay file {path} cannot be decoded ({where}): {error}; repair or remove "
                "it, or set mismatched = 'skip' to leave such files out"
            ) from None
        log.warning(
            "replay sensor %s: skipping %s: cannot be decoded (%s): %s",
            self.config.name,
            path,
            where,
            error,
        )
        self.skipped.append(str(path))
        position = self.files.index(path)
        del self.files[position]
        if position < self._index:
            self._index -= 1

    def open(self) -> None:
        """Start again at frame 0 of the first file; stream time 0 = now on the clock.
        Raises ``soundfile.LibsndfileError`` when the first file can no longer be opened."""
        self.close()
        self._index = 0
        self._frame = 0
        self._pass_frames = 0
        self._ended = False
        if not self._next_file():
            self._ended = True
        self._pacer.start()
        self._state = "open"

    def read(self) -> Block | None:
        """The next ``block`` seconds of the stream as a :class:`Block` (``(frames, channels)``
        of ``dtype``), continuing across files without a gap.

        Shorter at the very end, and when ``block / speed`` exceeds :data:`MAX_WAIT` (then
        ``MAX_WAIT * speed`` seconds, so that a read never waits longer). Waits until those
        frames have "happened" at ``speed`` x real time; capture time = open time + frame /
        ``sample_rate``. None once the last file has played (never when looping). A file found
        damaged while it plays is left out under ``mismatched = "skip"`` (a warning names it;
        the frames of the failed read are lost, the next file follows), else it raises a
        configuration error naming it, as it does when a loop finds nothing left to play.
        Raises ``RuntimeError`` before :meth:`open`.
        """
        if self._state != "open":
            raise RuntimeError("read() before open()")
        parts: list[np.ndarray] = []
        need = self._block
        while need > 0 and not self._ended and self._file is not None:
            current = Path(self._file.name)
            try:
                position = self._file.tell()
                data = self._file.read(need, dtype=self.dtype, always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as error:
                self._file.close()
                self._file = None
                self._drop(current, error, at_frame=position)
                if not self._next_file():
                    self._ended = True
                continue
            if len(data):
                parts.append(data)
                need -= len(data)
                self._pass_frames += len(data)
            if need > 0 and not self._next_file():
                self._ended = True
        if not parts:
            return None
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        start = self._frame
        self._pacer.wait_until(start + len(block))
        self._frame = start + len(block)
        return Block(block, start, self._pacer.captured_at(start))

    def close(self) -> None:
        """Close the current file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._state = "closed"

    def describe(self) -> StreamDescription:
        """An audio stream at ``sample_rate`` Hz, ``channels`` wide, chunks in ``config.format``."""
        return audio_description(
            self.sample_rate, self.channels, self.config.sample_format, self.config.format
        )

    def health(self) -> SensorHealth:
        """State (``open`` or ``closed``), frames delivered since :meth:`open`, and in
        ``details``: the index of the next file (``file_index``), whether the input has ended,
        and the files left out as mismatched (``skipped``)."""
        details: dict[str, Any] = {
            "file_index": self._index,
            "ended": self._ended,
            "skipped": list(self.skipped),
        }
        return SensorHealth(state=self._state, frames=self._frame, details=details)
