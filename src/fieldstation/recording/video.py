"""Video chunks: H.264 (libx264) in Matroska through FFmpeg (PyAV), salvaged by remuxing every
packet that decodes (decision record 0071).

Each chunk is its own file and its own encoder: frame *i* of the chunk has pts *i* in time base
``1/fps`` (Matroska stores milliseconds), the first frame is an IDR keyframe, and B-frames are
off (``bf = 0``), so decode order is display order and any prefix of the packets decodes to a
prefix of the frames. The :class:`~fieldstation.recording.metadata.ChunkSpec` JSON
(:meth:`~fieldstation.recording.metadata.ChunkSpec.embedded`) is a global Matroska tag
``FIELDSTATION``, written with the header, so a file cut by a crash still says what it is.

Matroska buffers a whole cluster in memory before writing it: clusters are limited to
:data:`CLUSTER_SECONDS` and every packet is flushed to the OS (``flush_packets``), so a SIGKILL
loses at most about a second of frames (plus the encoder's few frames of delay).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldstation.recording.metadata import ChunkSpec, MetadataError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CLUSTER_SECONDS", "FORMAT", "TAG", "VideoFormat", "VideoWriter", "count_frames"]

log = logging.getLogger(__name__)

TAG = "FIELDSTATION"
"""Name of the global Matroska tag holding the chunk's ChunkSpec JSON."""
CLUSTER_SECONDS = 1.0
"""Longest Matroska cluster, seconds: what a SIGKILL can cost at most (with the encoder delay)."""


def _container_options() -> dict[str, str]:
    return {
        "cluster_time_limit": str(int(CLUSTER_SECONDS * 1000)),
        "flush_packets": "1",
    }


class VideoWriter:
    """Encodes one video chunk with PyAV (see :class:`~fieldstation.recording.media.MediaWriter`).

    ``write`` takes frames ``(frames, height, width, 3)`` uint8 RGB (``spec.stream.shape``).
    Raises ``OSError`` or ``av.error.FFmpegError`` (a full disk: ``OSError`` ENOSPC from
    FFmpeg's ``av_write_frame``); leaves no file behind when the file cannot even be created.
    """

    def __init__(self, path: Path, spec: ChunkSpec) -> None:
        import av

        stream = spec.stream
        if stream.media != "video" or len(stream.shape) != 3 or stream.shape[2] != 3:
            raise ValueError(f"not an RGB video stream: {stream}")
        self.path = path
        self.spec = spec
        self.frames = 0
        self.height, self.width = int(stream.shape[0]), int(stream.shape[1])
        options = stream.options
        try:
            self._container: Any = av.open(
                str(path), mode="w", format="matroska", options=_container_options()
            )
            self._container.metadata["title"] = (
                f"{spec.station} {spec.sensor} {spec.started_at.isoformat()}"
            )
            self._container.metadata[TAG] = json.dumps(spec.embedded(), separators=(",", ":"))
            self._stream: Any = self._container.add_stream(
                "libx264",
                rate=spec.rate,
                options={
                    "crf": str(int(options.get("crf", 23))),
                    "preset": str(options.get("preset", "veryfast")),
                    "bf": "0",  # decode order = display order: any packet prefix is a frame prefix
                },
            )
            self._stream.width = self.width
            self._stream.height = self.height
            self._stream.pix_fmt = "yuv420p"
            self._time_base = Fraction(1, spec.rate)
            self._stream.time_base = self._time_base  # the muxer's (ms) replaces it later
        except Exception:
            with contextlib.suppress(Exception):
                self._container.close()
            path.unlink(missing_ok=True)
            raise
        self._av = av

    def write(self, data: np.ndarray) -> None:
        """Encode and mux frames ``(frames, height, width, 3)`` uint8 RGB."""
        if data.ndim != 4 or data.shape[1:] != (self.height, self.width, 3):
            raise ValueError(
                f"frames of shape {data.shape[1:]} do not match the stream's "
                f"{(self.height, self.width, 3)}"
            )
        for image in data:
            frame = self._av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = self.frames
            frame.time_base = self._time_base
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames += 1

    def close(self, end_reason: str) -> None:
        """Flush the encoder and write the Matroska trailer (cues, sizes). The end reason is
        not stored in the file (the header with the tags is written first)."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    def abort(self) -> None:
        """Close without flushing the encoder; never raises."""
        with contextlib.suppress(Exception):
            self._container.close()


def _spec_of(container: Any, path: Path) -> ChunkSpec:
    metadata = {str(k).upper(): v for k, v in dict(container.metadata).items()}
    raw = metadata.get(TAG)
    if raw is None:
        raise MetadataError(f"{path} has no {TAG} tag (not a fieldstation video chunk)")
    try:
        return ChunkSpec.from_embedded(json.loads(raw))
    except json.JSONDecodeError:
        raise MetadataError(f"{path}: its {TAG} tag is not JSON") from None


def count_frames(path: Path) -> int:
    """Video packets (= frames: one access unit per Matroska block) in ``path``, by demuxing
    without decoding. Raises ``av.error.FFmpegError`` or ``IndexError`` (no video stream)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def _good_packets(path: Path, rate: int) -> tuple[Any, list[Any]]:
    """Open ``path`` and return ``(container, packets)``: its video packets from the start up to
    the first one that does not decode, is flagged corrupt or is not where the kept frames end
    (pts ``i / rate`` for packet ``i``); each kept packet decoded into exactly one frame."""
    import av

    container = av.open(str(path))
    good: list[Any] = []
    try:
        stream = container.streams.video[0]
        decoder: Any = av.CodecContext.create(stream.codec_context.name, "r")
        if stream.codec_context.extradata:
            decoder.extradata = stream.codec_context.extradata
        decoder.thread_count = 1  # no frame threading: one packet in, one frame out
        decoder.options = {"err_detect": "explode"}
        base = stream.time_base
        for packet in container.demux(stream):
            if not packet.size:
                continue
            index = len(good)
            if packet.is_corrupt or packet.pts is None or base is None:
                log.info("salvage of %s stops at packet %d (corrupt or untimed)", path, index)
                break
            if round(packet.pts * base * rate) != index:
                log.info("salvage of %s stops at a gap after frame %d", path, index)
                break
            try:
                frames = decoder.decode(packet)
            except (av.error.FFmpegError, ValueError) as error:
                log.info("salvage of %s stops at the damage (frame %d): %s", path, index, error)
                break
            if len(frames) != 1:
                log.info("salvage of %s stops at frame %d: it does not decode", path, index)
                break
            good.append(packet)
    except (av.error.FFmpegError, IndexError, ValueError) as error:
        log.info("salvage of %s stops at the damage: %s", path, error)
    return container, good


@dataclass(frozen=True)
class VideoFormat:
    """The video :class:`~fieldstation.recording.media.MediaFormat`."""

    media: str = "video"

    def open(self, path: Path, spec: ChunkSpec) -> VideoWriter:
        return VideoWriter(path, spec)

    def inspect(self, path: Path) -> tuple[ChunkSpec, str | None, int]:
        """``(spec, None, frames)``: the spec from the ``FIELDSTATION`` tag, frames counted
        exactly (:func:`count_frames`). Raises :class:`MetadataError` when the file has no
        tag or cannot be read."""
        import av

        try:
            with av.open(str(path)) as container:
                spec = _spec_of(container, path)
            frames = count_frames(path)
        except (av.error.FFmpegError, IndexError, OSError) as error:
            raise MetadataError(f"{path} cannot be read: {error}") from None
        return spec, None, frames

    def salvage(self, damaged: Path, spec: ChunkSpec, out: Path, end_reason: str) -> int:
        """Remux every packet of ``damaged`` that decodes (from the first, up to the damage)
        into a clean Matroska file ``out`` carrying ``spec``; returns the frames kept (0: no
        ``out``). Raises ``OSError``/``av.error.FFmpegError`` when ``out`` cannot be written
        (a full disk), leaving no ``out``."""
        import av

        try:
            container, good = _good_packets(damaged, spec.rate)
        except (av.error.FFmpegError, IndexError, OSError, ValueError) as error:
            log.info("salvage of %s: nothing decodable (%s)", damaged, error)
            return 0
        try:
            if not good:
                return 0
            template = container.streams.video[0]
            try:
                with av.open(
                    str(out), mode="w", format="matroska", options=_container_options()
                ) as output:
                    output.metadata["title"] = (
                        f"{spec.station} {spec.sensor} {spec.started_at.isoformat()}"
                    )
                    output.metadata[TAG] = json.dumps(spec.embedded(), separators=(",", ":"))
                    stream = output.add_stream_from_template(template)
                    for packet in good:
                        packet.stream = stream
                        output.mux(packet)
            except BaseException:
                out.unlink(missing_ok=True)
                raise
        finally:
            container.close()
        return len(good)


FORMAT = VideoFormat()
