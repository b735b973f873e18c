"""One chunk writer per media: what turns a stream of frames into committed, recoverable files.

The recorder (:mod:`fieldstation.recording.job`) only cuts a stream into chunks, commits them and
recovers them; everything that depends on the media lives behind :class:`MediaFormat`
(decision record 0070):

- ``audio`` (:mod:`fieldstation.recording.audio`): FLAC or WAV through soundfile, provenance in
  Vorbis comments or GUANO, salvage by decoding with FFmpeg (PyAV);
- ``video`` (:mod:`fieldstation.recording.video`): H.264 in Matroska through FFmpeg (PyAV);
- ``readings`` (:mod:`fieldstation.recording.readings`): Arrow IPC stream files (pyarrow), one
  record batch per write, so a file cut by a crash is readable up to its last whole batch.

A media module is imported only when a chunk of that media is written or recovered, so an
audio-only station never loads FFmpeg's video side or pyarrow.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from fieldstation.recording.metadata import ChunkSpec

__all__ = [
    "FORMATS",
    "LIBRARIES",
    "SUFFIXES",
    "MediaFormat",
    "MediaWriter",
    "format_of_path",
    "media_format",
    "prepare",
    "write_salvaged",
]

FORMATS: dict[str, str] = {
    "audio": "fieldstation.recording.audio:FORMAT",
    "video": "fieldstation.recording.video:FORMAT",
    "readings": "fieldstation.recording.readings:FORMAT",
}
"""Where each media's :class:`MediaFormat` lives (``module:attribute``)."""

SUFFIXES: dict[str, str] = {
    ".flac": "audio",
    ".wav": "audio",
    ".mkv": "video",
    ".arrows": "readings",
}
"""Media of chunk files by extension (lower case), for recovery's walk of ``spool/`` and
``data/``: a file with another extension is not a chunk."""


class MediaWriter(Protocol):
    """Writes the frames of one chunk into one file (opened by :meth:`MediaFormat.open`)."""

    frames: int
    """Frames written so far."""

    def write(self, data: np.ndarray) -> None:
        """Append frames: an array ``(frames, *stream.shape)`` of ``stream.dtype``. Raises
        ``OSError`` (or the library's error) when the file cannot be written (a full disk)."""
        ...

    def close(self, end_reason: str) -> None:
        """Complete the file (trailer, footer, index, end reason where the container can hold
        it) and flush it to the OS; the caller fsyncs. Raises as :meth:`write` does."""
        ...

    def abort(self) -> None:
        """Release the file without completing it (left for recovery or deleted by the
        caller). Never raises."""
        ...


class MediaFormat(Protocol):
    """How one media is written, inspected and salvaged."""

    media: str

    def open(self, path: Path, spec: ChunkSpec) -> MediaWriter:
        """Create the chunk file ``path`` for ``spec`` (its stream and provenance embedded in
        the file). Raises ``OSError`` or the library's error; leaves no file behind then."""
        ...

    def inspect(self, path: Path) -> tuple[ChunkSpec, str | None, int]:
        """``(spec, end_reason, frames)`` of a chunk file from the metadata embedded in it
        (``end_reason`` None when the container does not record it). Raises
        :class:`~fieldstation.recording.metadata.MetadataError` when the file has none or
        cannot be read."""
        ...

    def salvage(self, damaged: Path, spec: ChunkSpec, out: Path, end_reason: str) -> int:
        """Write every frame of ``damaged`` that decodes, from its start up to the first damage
        (nothing after a gap: it would not continue the chunk's start), as a clean chunk of
        ``spec`` closed with ``end_reason`` at ``out``; returns the number of frames written.
        0 means nothing was decodable and ``out`` does not exist. Raises ``OSError`` (or the
        library's error) when ``out`` cannot be written (a full disk), leaving no ``out``
        behind."""
        ...


def write_salvaged(writer: MediaWriter, out: Path, data: np.ndarray, end_reason: str) -> int:
    """Write the salvaged frames ``data`` through ``writer`` (just opened at ``out``) and close
    it with ``end_reason``; returns the frames written. On any failure (a full disk) the
    writer is aborted, ``out`` removed and the error raised: the damaged original stays."""
    try:
        writer.write(data)
        writer.close(end_reason)
    except BaseException:
        writer.abort()
        out.unlink(missing_ok=True)
        raise
    return writer.frames


LIBRARIES: dict[str, tuple[str, ...]] = {
    "audio": ("soundfile",),
    "video": ("av", "av.subtitles.stream"),  # PyAV loads its subtitles on the first open
    "readings": ("pyarrow", "pyarrow.ipc"),
}
"""What each media's writer imports on first use (heavy: pyarrow takes most of a second on a
small board)."""


def prepare(media: str) -> MediaFormat:
    """Import ``media``'s format and the libraries its writer needs, now: the recorder calls
    it before it opens its sensor, so the first chunk does not stall a live stream while
    they load (an IMU's FIFO holds 0.4 s; a camera queue a second), and calls the format's
    optional ``prepare()`` for what loads on first use (pyarrow's bridges). Returns the format;
    raises ``ValueError`` for an unknown media."""
    fmt = media_format(media)
    for name in LIBRARIES.get(media, ()):
        importlib.import_module(name)
    warm_up = getattr(fmt, "prepare", None)  # optional: what a first write would load
    if warm_up is not None:
        warm_up()
    return fmt


@cache
def media_format(media: str) -> MediaFormat:
    """The :class:`MediaFormat` of ``media`` (imported on first use).

    Raises ``ValueError`` for an unknown media."""
    try:
        target = FORMATS[media]
    except KeyError:
        raise ValueError(
            f"no chunk writer for media {media!r} (known: {', '.join(FORMATS)})"
        ) from None
    module, _, attribute = target.partition(":")
    fmt: MediaFormat = getattr(importlib.import_module(module), attribute)
    return fmt


def format_of_path(path: Path) -> MediaFormat | None:
    """The :class:`MediaFormat` of a chunk file by its extension, or None when it is not one."""
    media = SUFFIXES.get(path.suffix.lower())
    return None if media is None else media_format(media)
