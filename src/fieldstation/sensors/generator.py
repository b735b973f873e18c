"""The synthetic signal generator behind the ``synthetic`` sensor plugin (imports numpy)."""

from __future__ import annotations

import numpy as np

from fieldstation.clock import Clock, SystemClock
from fieldstation.sensors.base import (
    DTYPES,
    Block,
    SensorHealth,
    StreamDescription,
    audio_description,
)
from fieldstation.sensors.pacing import Pacer
from fieldstation.sensors.synthetic import NOISE_PERIOD, SyntheticConfig, chirp_onsets

__all__ = ["SyntheticSensor", "to_dtype"]


def to_dtype(x: np.ndarray, sample_format: str) -> np.ndarray:
    """Float samples in [-1, 1] to the block dtype of ``sample_format``."""
    if sample_format == "float32":
        return x.astype(np.float32)
    scale = {"int16": 32767.0, "int24": 8388607.0, "int32": 2147483647.0}[sample_format]
    out = np.clip(np.rint(x * scale), -scale - 1, scale).astype(DTYPES[sample_format])
    if sample_format == "int24":
        out <<= 8
    return out


class SyntheticSensor:
    """The synthetic sensor (the exact signal: :mod:`fieldstation.sensors.synthetic`).

    ``sample_rate`` (Hz), ``channels`` and ``dtype`` (numpy dtype of ``config.sample_format``)
    come from the config; blocks are ``block`` seconds long, paced on ``clock`` (default the
    system clock) at ``speed`` × real time.
    """

    def __init__(self, config: SyntheticConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.sample_rate = config.sample_rate
        self.channels = config.channels
        self.dtype = DTYPES[config.sample_format]
        self._block = max(1, round(config.block * self.sample_rate))
        self._pacer = Pacer(self.clock, self.sample_rate, config.speed)
        self._frame = 0
        self._open = False
        self._noise: np.ndarray | None = None
        self._noise_out: np.ndarray = np.zeros((0, self.channels))
        self._period = round(config.chirp_interval * self.sample_rate)
        n = max(1, round(config.chirp_duration * self.sample_rate))
        t = np.arange(n) / self.sample_rate
        f0, f1, dur = 0.5 * config.frequency, 1.5 * config.frequency, n / self.sample_rate
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * dur))
        amp = 10 ** (config.level_dbfs / 20)
        self._chirp = (amp * np.hanning(n) * np.sin(phase)).astype(np.float32)

    def _noise_floor(self) -> tuple[np.ndarray, np.ndarray]:
        """The periodic noise floor as float32 and in the block dtype (computed once)."""
        if self._noise is None:
            rng = np.random.default_rng(self.config.seed)
            db = self.config.level_dbfs if self.config.signal == "noise" else self.config.noise_dbfs
            rms = 10 ** (db / 20)
            shape = (NOISE_PERIOD, self.channels)
            self._noise = (rng.standard_normal(shape, dtype=np.float32) * rms).astype(np.float32)
            self._noise_out = to_dtype(self._noise, self.config.sample_format)
        return self._noise, self._noise_out

    @staticmethod
    def _periodic(source: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` of ``source`` repeated every :data:`NOISE_PERIOD` frames."""
        idx = start % NOISE_PERIOD
        if idx + stop - start <= NOISE_PERIOD:
            return source[idx : idx + stop - start].copy()
        return np.take(source, np.arange(start, stop) % NOISE_PERIOD, axis=0)

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` of the stream, shape ``(frames, channels)``, block dtype.

        Conversion to the sample format is element-wise, so the noise floor is converted once
        and only the frames under a chirp are recomputed.
        """
        noise, noise_out = self._noise_floor()
        fmt = self.config.sample_format
        if self.config.signal == "tone":
            x = self._periodic(noise, start, stop)
            t = np.arange(start, stop, dtype=np.float64) / self.sample_rate
            amp = 10 ** (self.config.level_dbfs / 20)
            x += (amp * np.sin(2 * np.pi * self.config.frequency * t)).astype(np.float32)[:, None]
            return to_dtype(x, fmt)
        out = self._periodic(noise_out, start, stop)
        if self.config.signal == "chirps":
            length = len(self._chirp)
            for onset in chirp_onsets(self.config, max(0, start - length + 1), stop):
                a, b = max(start, onset), min(stop, onset + length)
                if a < b:
                    x = self._periodic(noise, a, b) + self._chirp[a - onset : b - onset, None]
                    out[a - start : b - start] = to_dtype(x, fmt)
        return out

    def open(self) -> None:
        """Start the stream at frame 0, stream time 0 = now on the clock (never raises)."""
        self._frame = 0
        self._pacer.start()
        self._open = True

    def read(self) -> Block | None:
        """The next ``block`` seconds as a :class:`Block` (``(frames, channels)`` of ``dtype``,
        frames :meth:`samples` of the running index), once they have "happened" at ``speed`` ×
        real time; capture time = open time + frame / ``sample_rate``. Never None (the signal
        does not end). Raises ``RuntimeError`` before :meth:`open`."""
        if not self._open:
            raise RuntimeError("read() before open()")
        start, stop = self._frame, self._frame + self._block
        self._pacer.wait_until(stop)
        self._frame = stop
        return Block(self.samples(start, stop), start, self._pacer.captured_at(start))

    def close(self) -> None:
        """Stop the stream (idempotent)."""
        self._open = False

    def describe(self) -> StreamDescription:
        """An audio stream at ``sample_rate`` Hz, ``channels`` wide, chunks in ``config.format``."""
        return audio_description(
            self.sample_rate, self.channels, self.config.sample_format, self.config.format
        )

    def health(self) -> SensorHealth:
        """State (``open`` or ``closed``) and frames delivered since :meth:`open`."""
        return SensorHealth(state="open" if self._open else "closed", frames=self._frame)
