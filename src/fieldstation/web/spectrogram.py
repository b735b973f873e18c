"""Spectrogram images of recordings: numpy STFT, dB scale, viridis, PNG through Pillow.

No matplotlib, no scipy: the web job imports only numpy, soundfile and Pillow for this (a test
checks ``sys.modules``), so a Raspberry Pi renders a 60 s, 48 kHz chunk in well under a second
(``bench/web.py`` measures it).

The image (:func:`spectrogram_rgb`): ``height`` rows of frequency, highest at the top (row 0 is
the Nyquist end, row ``height - 1`` holds 0 Hz), ``width`` columns of time. Each column is the
maximum power of the STFT frames that fall in it (a short call stays visible however long the
recording), each row the maximum of the FFT bins it covers. Power is in dB relative to a
full-scale sine (0 dBFS), drawn over ``dynamic_range`` dB below the loudest pixel.

Rendered PNGs are cached under ``cache/spectrograms/`` in the station home
(:class:`SpectrogramCache`, least recently used removed beyond ``web.spectrogram_cache``
bytes; decision record 0092).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fieldstation.web.colormap import VIRIDIS

__all__ = [
    "SpectrogramCache",
    "SpectrogramError",
    "colour_table",
    "file_png",
    "png_bytes",
    "row_of",
    "spectrogram_db",
    "spectrogram_levels",
    "spectrogram_rgb",
]

N_FFT = 1024
"""Samples per STFT frame (21 ms at 48 kHz; 47 Hz per bin)."""

HOP = N_FFT // 2
"""Samples between frames (50 % overlap of the Hann windows)."""

FRAMES_PER_BATCH = 512
"""STFT frames computed at once: bounds the memory of a long recording (512 x 1024 floats)."""


class SpectrogramError(RuntimeError):
    """A recording cannot be drawn: its file is gone or cannot be decoded as audio."""


@cache
def colour_table() -> npt.NDArray[np.uint8]:
    """The viridis map as a ``(256, 3)`` uint8 table (index 0: darkest)."""
    table = np.asarray(VIRIDIS, dtype=np.float64)
    return np.clip(np.rint(table * 255.0), 0, 255).astype(np.uint8)


def row_of(frequency: float, rate: int, height: int, n_fft: int = N_FFT) -> int:
    """The image row (0 at the top) that shows ``frequency`` Hz of a ``rate`` Hz recording
    drawn ``height`` rows high."""
    bins = n_fft // 2
    per_row = bins / height
    bin_index = min(int(round(frequency * n_fft / rate)), bins - 1)
    return height - 1 - int(bin_index // per_row)


def spectrogram_db(
    samples: npt.NDArray[np.floating], rate: int, width: int, height: int
) -> npt.NDArray[np.float32]:
    """Power in dBFS as a ``(height, width)`` float32 array (row 0: highest frequencies).

    ``samples``: mono ``(n,)`` or ``(n, channels)`` (mixed to mono), floats in [-1, 1].
    ``rate``: Hz. ``height`` must divide ``N_FFT / 2`` (512): 512, 256, 128, ...
    Columns are pooled from the frames by maximum; a recording shorter than one frame is
    zero-padded. Raises ``ValueError`` for a bad size.
    """
    bins = N_FFT // 2
    if width < 1 or height < 1 or bins % height:
        raise ValueError(f"height must divide {bins} and width be positive ({width}x{height})")
    mono = np.asarray(samples, dtype=np.float32)
    if mono.ndim == 2:
        mono = mono.mean(axis=1, dtype=np.float32)
    if mono.size < N_FFT:
        mono = np.pad(mono, (0, N_FFT - mono.size))
    n_frames = 1 + (mono.size - N_FFT) // HOP
    window = np.hanning(N_FFT).astype(np.float32)
    scale = (2.0 / window.sum()) ** 2  # a full-scale sine's peak bin -> power 1 (0 dB)
    # column of each frame; several frames per column (max-pooled), or one frame spread out
    column = (np.arange(n_frames) * width) // n_frames
    power = np.zeros((bins, width), dtype=np.float32)
    strides = (mono.strides[0] * HOP, mono.strides[0])
    for first in range(0, n_frames, FRAMES_PER_BATCH):
        count = min(FRAMES_PER_BATCH, n_frames - first)
        frames = np.lib.stride_tricks.as_strided(
            mono[first * HOP :], shape=(count, N_FFT), strides=strides, writeable=False
        )
        spectrum = np.fft.rfft(frames * window, axis=1)[:, :bins]
        frame_power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32) * scale
        columns = column[first : first + count]  # sorted: group the frames by column
        starts = np.flatnonzero(np.r_[True, columns[1:] != columns[:-1]])
        grouped = np.maximum.reduceat(frame_power, starts, axis=0)
        targets = columns[starts]
        power[:, targets] = np.maximum(power[:, targets], grouped.T)
    if n_frames < width:  # fewer frames than columns: fill each column from its frame
        filled = np.minimum((np.arange(width) * n_frames) // width, n_frames - 1)
        power = power[:, (filled * width) // n_frames]
    pooled = power.reshape(height, bins // height, width).max(axis=1)
    db = 10.0 * np.log10(np.maximum(pooled, 1e-12))
    return np.ascontiguousarray(db[::-1]).astype(np.float32)


def spectrogram_levels(
    samples: npt.NDArray[np.floating],
    rate: int,
    width: int = 1000,
    height: int = 256,
    dynamic_range: float = 80.0,
) -> npt.NDArray[np.uint8]:
    """Colour-map indices ``(height, width)`` uint8: 255 at the loudest pixel, 0 at
    ``dynamic_range`` dB below it or quieter."""
    db = spectrogram_db(samples, rate, width, height)
    top = float(db.max())
    level = np.clip((db - (top - dynamic_range)) / dynamic_range, 0.0, 1.0)
    return np.rint(level * 255.0).astype(np.uint8)


def spectrogram_rgb(
    samples: npt.NDArray[np.floating],
    rate: int,
    width: int = 1000,
    height: int = 256,
    dynamic_range: float = 80.0,
) -> npt.NDArray[np.uint8]:
    """The spectrogram as an RGB image ``(height, width, 3)`` uint8 (see the module doc)."""
    return colour_table()[spectrogram_levels(samples, rate, width, height, dynamic_range)]


def png_bytes(levels: npt.NDArray[np.uint8]) -> bytes:
    """``levels`` (``(h, w)`` colour-map indices, :func:`spectrogram_levels`) as a PNG with
    the viridis palette (one byte a pixel: a third of RGB's data to compress), by Pillow."""
    from PIL import Image

    height, width = levels.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(levels).tobytes())
    image.putpalette(colour_table().reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def file_png(
    path: Path,
    *,
    start: float | None = None,
    end: float | None = None,
    width: int = 1000,
    height: int = 256,
) -> bytes:
    """The spectrogram PNG of the audio file ``path`` (WAV, FLAC; seconds ``start``..``end``
    when given). Raises :class:`SpectrogramError` when it cannot be read. One render at a
    time (:data:`RENDERS`): a chunk is read whole (60 s at 384 kHz: about 90 MB as float32),
    and browsing many uncached recordings at once must not take a small station's memory."""
    with RENDERS:
        return _file_png(path, start=start, end=end, width=width, height=height)


RENDERS = threading.Lock()
"""Held while :func:`file_png` reads and renders a file."""


def _file_png(
    path: Path, *, start: float | None, end: float | None, width: int, height: int
) -> bytes:
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as audio:
            rate = audio.samplerate
            first = 0 if start is None else max(0, int(start * rate))
            last = audio.frames if end is None else min(audio.frames, int(end * rate))
            audio.seek(min(first, audio.frames))
            samples = audio.read(max(0, last - first), dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as error:  # soundfile.LibsndfileError is a RuntimeError
        raise SpectrogramError(f"cannot read {path.name}: {error}") from error
    return png_bytes(spectrogram_levels(samples, rate, width=width, height=height))


class SpectrogramCache:
    """Rendered PNGs under ``root`` (``cache/spectrograms/``), at most ``max_bytes`` in all.

    :meth:`get` returns the cached file of ``key`` or renders it (atomic write: temporary
    file, rename); a hit refreshes the file's mtime, and after each render the least recently
    used files beyond ``max_bytes`` are deleted. ``key`` is a file name (``rec-12-ab34.png``).
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str, render: Callable[[], bytes]) -> Path:
        """The PNG of ``key``, rendered by ``render()`` on a miss (its errors propagate)."""
        path = self.path(key)
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)
            return path
        data = render()
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".png", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.trim()
        return path

    def discard(self, prefix: str) -> None:
        """Delete the cached files whose names start with ``prefix`` (a deleted recording)."""
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                if entry.name.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

    def trim(self) -> int:
        """Delete the least recently used files beyond ``max_bytes``; returns how many."""
        try:
            entries = [
                (e.stat().st_mtime, e.stat().st_size, e.path)
                for e in os.scandir(self.root)
                if e.is_file() and not e.name.startswith(".")
            ]
        except FileNotFoundError:
            return 0
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
            total -= size
        return removed
