"""Audio chunks: FLAC or WAV through soundfile, salvaged by decoding with FFmpeg (PyAV).

Provenance is embedded in the file (:mod:`fieldstation.recording.metadata`): Vorbis comments
for FLAC, set before the first samples as libsndfile requires, and a GUANO chunk appended to a
WAV once it is closed (so a WAV also records its end reason).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldstation.recording.media import write_salvaged
from fieldstation.recording.metadata import ChunkSpec, MetadataError, append_guano, read_embedded

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FORMAT", "AudioFormat", "AudioWriter", "salvage_frames"]

log = logging.getLogger(__name__)


class AudioWriter:
    """Writes one audio chunk with soundfile (a :class:`~.media.MediaWriter`).

    Raises ``OSError`` or ``soundfile.LibsndfileError`` (on a full disk libsndfile says only
    "System error": :func:`~fieldstation.recording.disk.is_disk_full` tells)."""

    def __init__(self, path: Path, spec: ChunkSpec) -> None:
        import soundfile as sf

        self.path = path
        self.spec = spec
        self.frames = 0
        try:
            self._file = sf.SoundFile(
                str(path),
                "w",
                samplerate=spec.sample_rate,
                channels=spec.channels,
                subtype=spec.subtype,
                format=spec.format.upper(),
            )
        except Exception:
            path.unlink(missing_ok=True)
            raise
        if spec.format == "flac":
            # Vorbis comments must be set before the first samples (libsndfile).
            self._file.title = f"{spec.station} {spec.sensor} {spec.started_at.isoformat()}"
            self._file.artist = spec.station
            self._file.date = spec.started_at.isoformat()
            self._file.software = f"fieldstation {spec.version}"
            self._file.comment = json.dumps(spec.embedded(), separators=(",", ":"))

    def write(self, data: np.ndarray) -> None:
        """Append frames ``(frames, channels)`` of the stream's dtype."""
        self._file.write(data)
        self.frames += len(data)

    def close(self, end_reason: str) -> None:
        """Close the file; a WAV gets its GUANO chunk (with the end reason)."""
        self._file.close()
        if self.spec.format == "wav":
            append_guano(self.path, self.spec, self.frames, end_reason)

    def abort(self) -> None:
        """Close without finishing; never raises."""
        with contextlib.suppress(Exception):
            self._file.close()


def salvage_frames(path: Path, dtype: str) -> Any:
    """Decode ``path`` with FFmpeg (PyAV) up to the first frame it cannot decode; returns every
    sample decoded before it as an array ``(frames, channels)`` of ``dtype`` (possibly empty).

    FLAC frames are checked against their CRC (``err_detect=crccheck``), so a damaged frame
    ends the salvage instead of giving wrong samples; nothing after the damage is kept (it
    would no longer be contiguous with the chunk's start): decoding stops at the first error,
    and at the first frame whose timestamp is not where the kept samples end (FFmpeg's parser
    skips a damaged frame and decodes on). Decoded samples are FFmpeg's own
    (``s16``, left-justified ``s32`` for 24-bit, ``flt``), equal to what soundfile reads from
    an intact file. Raises nothing for a damaged file (an unreadable one gives an empty array).
    """
    import av
    import numpy as np

    want = np.dtype(dtype)
    parts: list[Any] = []
    channels = 1
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            channels = stream.codec_context.channels or 1
            stream.codec_context.options = {"err_detect": "crccheck"}
            rate = stream.codec_context.sample_rate
            base = stream.time_base
            timed = True  # frames carry their position (pts) until told otherwise
            position = 0
            try:
                for frame in container.decode(stream):
                    if position == 0 and frame.pts is None:
                        timed = False  # a format without timestamps: counted frames only
                    if timed and (
                        frame.pts is None
                        or base is None
                        or round(frame.pts * base * rate) != position
                    ):
                        # FFmpeg skipped a damaged frame and went on: the rest would not be
                        # contiguous with what was kept
                        log.info("salvage of %s stops at a gap after frame %d", path, position)
                        break
                    position += frame.samples
                    samples = frame.to_ndarray()
                    if frame.format.is_planar:
                        samples = samples.T
                    samples = samples.reshape(-1, channels)
                    if samples.dtype != want:
                        log.warning(
                            "salvage of %s: FFmpeg decodes %s, not %s; kept what came before",
                            path,
                            samples.dtype,
                            want,
                        )
                        break
                    parts.append(samples)
            except (av.error.FFmpegError, ValueError) as error:
                log.info("salvage of %s stops at the damage: %s", path, error)
    except (av.error.FFmpegError, IndexError, OSError, ValueError) as error:
        log.info("salvage of %s: nothing decodable (%s)", path, error)
    if not parts:
        return np.zeros((0, channels), dtype=want)
    return np.ascontiguousarray(np.concatenate(parts))


@dataclass(frozen=True)
class AudioFormat:
    """The audio :class:`~fieldstation.recording.media.MediaFormat`."""

    media: str = "audio"

    def open(self, path: Path, spec: ChunkSpec) -> AudioWriter:
        return AudioWriter(path, spec)

    def inspect(self, path: Path) -> tuple[ChunkSpec, str | None, int]:
        import soundfile as sf

        spec, end_reason = read_embedded(path)
        try:
            frames = int(sf.info(str(path)).frames)
        except (sf.LibsndfileError, RuntimeError) as error:
            raise MetadataError(f"{path} cannot be read: {error}") from None
        return spec, end_reason, frames

    def salvage(self, damaged: Path, spec: ChunkSpec, out: Path, end_reason: str) -> int:
        data = salvage_frames(damaged, spec.stream.dtype)
        if len(data) == 0:
            return 0
        return write_salvaged(AudioWriter(out, spec), out, data, end_reason)


FORMAT = AudioFormat()
