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
    ``n_fft // 2 + 1`` frequency bins (bin *k* at ``k * rate / n_fft`` Hz) of the last
    ``n_fft`` frames of ``samples`` (frames,) or (frames, channels; their mean), Hann-windowed,
    zero-padded when shorter.

    Scaled so that a full-scale sine centred on a bin reads 0 dB in that bin (magnitude
    ``2 * |X_k| / sum(window)``); bins never read below :data:`FLOOR_DB`. Returns float32."""
    if n_fft < 2:
        raise ValueError(f"n_fft must be at least 2, not {n_fft}")
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim > 1:
        x = x.reshape(len(x), -1).mean(axis=1) if len(x) else np.zeros(0)
    x = x[-n_fft:]
    window = np.hanning(n_fft + 1)[:n_fft]  # periodic Hann
    frame = np.zeros(n_fft)
    frame[n_fft - len(x) :] = x
    magnitude = np.abs(np.fft.rfft(frame * window)) * (2.0 / window.sum())
    return _db(magnitude).astype(np.float32)
