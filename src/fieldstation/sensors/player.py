"""The file player behind the ``replay`` sensor plugin (imports numpy and soundfile)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import soundfile as sf

from fieldstation.clock import Clock, SystemClock
from fieldstation.sensors.base import DTYPES, Block, SensorConfigError, SensorHealth
from fieldstation.sensors.pacing import Pacer
from fieldstation.sensors.replay import ReplayConfig, expand_files

__all__ = ["ReplaySensor"]

log = logging.getLogger(__name__)


class ReplaySensor:
    """Plays ``config.files`` as one continuous stream (see :mod:`fieldstation.sensors.replay`).

    Built from the files' headers: ``sample_rate`` (Hz) and ``channels`` from the config or the
    first file, ``dtype`` from ``config.sample_format``. Raises :class:`SensorConfigError` when a
    file cannot be read, or does not match the stream (unless ``mismatched = "skip"``, and then
    when no file is left).
    """

    def __init__(self, config: ReplayConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.files = expand_files(config.files)
        self.skipped: list[str] = []
        readable = []
        for path in self.files:
            try:
                readable.append((path, sf.info(str(path))))
            except (sf.LibsndfileError, RuntimeError) as error:
                if config.mismatched != "skip":
                    raise SensorConfigError(
                        f"replay file {path} cannot be read: {error}; remove it, or set "
                        "mismatched = 'skip' to leave such files out"
                    ) from None
                log.warning("replay sensor %s: skipping %s: %s", config.name, path, error)
                self.skipped.append(str(path))
        if not readable:
            raise SensorConfigError(
                f"no replay file of sensor {config.name!r} can be read; skipped: "
                f"{', '.join(self.skipped)}"
            )
        first = readable[0][1]
        given = config.model_fields_set
        self.sample_rate = config.sample_rate if "sample_rate" in given else first.samplerate
        self.channels = config.channels if "channels" in given else first.channels
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
                raise SensorConfigError(problem)
        if not kept:
            raise SensorConfigError(
                f"no replay file of sensor {config.name!r} is at {self.sample_rate} Hz with "
                f"{self.channels} channel(s); skipped: {', '.join(self.skipped)}"
            )
        self.files = kept
        self.dtype = DTYPES[config.sample_format]
        self._block = max(1, round(config.block * self.sample_rate))
        self._pacer = Pacer(self.clock, self.sample_rate, config.speed)
        self._index = 0
        self._file: sf.SoundFile | None = None
        self._frame = 0
        self._state = "closed"
        self._ended = False

    def _next_file(self) -> bool:
        """Open the next file (the first again when looping); False when none is left."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._index >= len(self.files):
            if not self.config.loop:
                return False
            self._index = 0
        self._file = sf.SoundFile(str(self.files[self._index]))
        self._index += 1
        return True

    def open(self) -> None:
        """Start again at frame 0 of the first file; stream time 0 = now on the clock.
        Raises ``soundfile.LibsndfileError`` when the first file can no longer be opened."""
        self.close()
        self._index = 0
        self._frame = 0
        self._ended = False
        if not self._next_file():
            self._ended = True
        self._pacer.start()
        self._state = "open"

    def read(self) -> Block | None:
        """The next ``block`` seconds of the stream as a :class:`Block` (``(frames, channels)``
        of ``dtype``; shorter only at the very end), continuing across files without a gap;
        waits until those frames have "happened" at ``speed`` × real time; capture time =
        open time + frame / ``sample_rate``. None once the last file has played (never when
        looping). Raises ``RuntimeError`` before :meth:`open`, ``soundfile.LibsndfileError``
        when a file cannot be decoded."""
        if self._state != "open":
            raise RuntimeError("read() before open()")
        parts: list[np.ndarray] = []
        need = self._block
        while need > 0 and not self._ended and self._file is not None:
            data = self._file.read(need, dtype=self.dtype, always_2d=True)
            if len(data):
                parts.append(data)
                need -= len(data)
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
