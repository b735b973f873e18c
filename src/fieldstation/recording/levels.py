"""Input levels and spectrogram columns of live blocks (pure numpy).

Convention (stated because meters differ by 3 dB): levels are in **dBFS re the full-scale
amplitude**: ``20 * log10(x / 1.0)`` of samples scaled so that full scale is ±1.0. The peak of
a full-scale sine is therefore 0 dBFS and its RMS ``1/sqrt(2)``, i.e. **−3.01 dBFS**. AES17
(AES standard method for digital audio engineering, measurement of digital audio equipment;
its definition of "decibels, full scale") instead references RMS to a full-scale *sine*, so
that sine reads 0 dB FS RMS; we do not add that +3.01 dB, as most DAW meters (and the
synthetic sensor's ``level_dbfs``/``noise_dbfs``) do not. Silence
reads :data:`FLOOR_DB`, never ``-inf`` (JSON cannot hold it).

Integer samples are scaled to ±1.0 by their type's full scale (``int16``: 32768; ``int32``,
which also carries left-justified 24-bit samples: 2**31), as soundfile does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FLOOR_DB",
    "Levels",
    "SpectrogramScroll",
    "full_scale",
    "levels",
    "spectrogram_column",
    "to_float",
]

FLOOR_DB = -120.0
"""Level reported for silence (and the lowest any level or spectrogram bin reads), in dB."""


def full_scale(dtype: np.dtype | str) -> float:
    """The full-scale amplitude of samples of ``dtype``: 1.0 for floats, ``2**(bits-1)`` for
    signed integers. Raises ``TypeError`` for other types (unsigned, bool, object)."""
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return 1.0
    if kind.kind == "i":
        return float(2 ** (8 * kind.itemsize - 1))
    raise TypeError(f"no full scale for samples of type {kind}: use signed integers or floats")


def to_float(data: np.ndarray) -> np.ndarray:
    """``data`` (frames, channels) or (frames,) as float32 scaled to ±1.0 full scale, 2-D."""
    scaled = np.asarray(data, dtype=np.float32)
    scale = full_scale(data.dtype)
    if scale != 1.0:
        scaled = scaled * np.float32(1.0 / scale)
    return scaled if scaled.ndim == 2 else scaled.reshape(len(scaled), -1)


def _db(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.maximum(20.0 * np.log10(values), FLOOR_DB)


@dataclass(frozen=True)
class Levels:
    """Peak and RMS level of each channel of a block, in dBFS (module docstring)."""

    peak: tuple[float, ...]
    """Per channel: ``20*log10(max |x|)``; 0 dBFS at full scale."""
    rms: tuple[float, ...]
    """Per channel: ``20*log10(sqrt(mean(x**2)))``; a full-scale sine reads −3.01 dBFS."""

    def as_dict(self) -> dict[str, list[float]]:
        """JSON-ready, rounded to 0.1 dB."""
        return {"peak": [round(v, 1) for v in self.peak], "rms": [round(v, 1) for v in self.rms]}


def levels(samples: np.ndarray) -> Levels:
    """Peak and RMS dBFS of each channel of ``samples`` (frames, channels), floats scaled to
    ±1.0 (:func:`to_float`); an empty block reads :data:`FLOOR_DB`."""
    x = np.asarray(samples, dtype=np.float64)
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    if len(x) == 0:
        floor = (FLOOR_DB,) * x.shape[1]
        return Levels(floor, floor)
    peak = _db(np.max(np.abs(x), axis=0))
    rms = _db(np.sqrt(np.mean(np.square(x), axis=0)))
    return Levels(tuple(float(v) for v in peak), tuple(float(v) for v in rms))


def spectrogram_column(samples: np.ndarray, n_fft: int = 512) -> np.ndarray:
    """One column of a scrolling spectrogram: the magnitude in dB re full scale of each of the
    ``n_fft // 2 + 1`` frequency bins (bin *k* at ``k * rate / n_fft`` Hz) of ``samples``
    (frames,) or (frames, channels; their mean).

    Welch's method: the power of ``ceil(frames / n_fft)`` Hann-windowed segments of ``n_fft``
    frames spread evenly over all of ``samples`` (so every frame counts) is averaged; fewer
    than ``n_fft`` frames are centred in one zero-padded segment. Scaled so that a full-scale
    sine centred on a bin reads 0 dB in that bin (magnitude ``2 * |X_k| / sum(window)``);
    bins never read below :data:`FLOOR_DB`. Returns float32. Raises ``ValueError`` for
    ``n_fft < 2``."""
    if n_fft < 2:
        raise ValueError(f"n_fft must be at least 2, not {n_fft}")
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim > 1:
        x = x.reshape(len(x), -1).mean(axis=1) if len(x) else np.zeros(0)
    window = np.hanning(n_fft + 1)[:n_fft]  # periodic Hann
    if len(x) < n_fft:
        segments = np.zeros((1, n_fft))
        offset = (n_fft - len(x)) // 2
        segments[0, offset : offset + len(x)] = x
    else:
        count = -(-len(x) // n_fft)
        starts = np.linspace(0, len(x) - n_fft, count).round().astype(int)
        segments = np.stack([x[s : s + n_fft] for s in starts])
    spectra = np.abs(np.fft.rfft(segments * window, axis=1)) * (2.0 / window.sum())
    magnitude = np.sqrt(np.mean(np.square(spectra), axis=0))
    return _db(magnitude).astype(np.float32)


class SpectrogramScroll:
    """Cuts a stream of blocks into spectrogram columns at a steady pace: one column per
    ``hop = max(n_fft, round(rate / columns_per_second))`` frames (:func:`spectrogram_column`
    of those frames), whatever the block sizes; frames short of a hop wait for the next block.

    ``feed(samples)`` (frames,) or (frames, channels) returns the columns completed, oldest
    first (a list of float32 arrays of ``n_fft // 2 + 1`` dB); ``reset()`` forgets what waits
    (a gap in the stream)."""

    def __init__(self, rate: int, n_fft: int = 512, columns_per_second: float = 32.0) -> None:
        self.n_fft = n_fft
        self.hop = max(n_fft, round(rate / columns_per_second))
        self._waiting = np.zeros(0)

    def reset(self) -> None:
        """Drop the frames short of a hop."""
        self._waiting = np.zeros(0)

    def feed(self, samples: np.ndarray) -> list[np.ndarray]:
        """The columns completed by ``samples`` (module and class docstrings)."""
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim > 1:
            x = x.reshape(len(x), -1).mean(axis=1) if len(x) else np.zeros(0)
        joined = np.concatenate([self._waiting, x])
        whole = len(joined) // self.hop
        columns = [
            spectrogram_column(joined[k * self.hop : (k + 1) * self.hop], self.n_fft)
            for k in range(whole)
        ]
        self._waiting = joined[whole * self.hop :]
        return columns
