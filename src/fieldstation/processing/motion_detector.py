"""The work of the ``motion`` model: decode with PyAV, find motion with OpenCV, write a thumbnail.

Imported only when a motion processor runs (it imports ``av``, ``cv2`` and numpy); the plugin
and the algorithm's description are in :mod:`fieldstation.processing.motion`.

Decoding is PyAV's (FFmpeg, already a dependency for salvage), not ``cv2.VideoCapture``: PyAV
gives each frame's presentation time, and FFmpeg's scaler turns a 1280x720 frame into the small
grey analysis frame in one step, without first converting the whole frame to BGR.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldstation.processing.model import (
    Detection,
    ModelOutput,
    RecordingInput,
    UndecodableAudioError,
)

if TYPE_CHECKING:
    import numpy as np

    from fieldstation.processing.motion import MotionConfig

__all__ = ["FrameMotion", "detect", "events", "frame_motion"]

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)``: left, top, right, bottom edges (exclusive), pixels."""


@dataclass(frozen=True)
class FrameMotion:
    """Motion seen in one frame: ``index`` (0 = first frame of the file) and ``time``
    (seconds from the first frame) of the frame, ``since``: time of the frame it was compared
    with (``lag`` earlier), so the motion happened in ``(since, time]``; ``fraction`` (moving
    share of the frame, 0..1) and ``boxes`` (pixels of the analysis frame)."""

    index: int
    time: float
    since: float
    fraction: float
    boxes: list[Box] = field(default_factory=list)

    def ended_by(self, frame_time: float) -> float:
        """When the motion seen here had ended at the latest: one frame after the frame that
        follows ``since`` (a later position change would make the next frame differ too)."""
        return self.since + 2 * frame_time


def frame_motion(
    previous: np.ndarray, current: np.ndarray, config: MotionConfig
) -> tuple[float, list[Box]]:
    """The moving share (0..1) and the boxes of moving regions between two blurred grey
    frames of the same shape (``uint8``, ``(height, width)``); ``(0.0, [])`` when nothing moved
    or the frame changed as a whole (more than ``max_area``)."""
    import cv2
    import numpy as np

    diff = cv2.absdiff(previous, current)
    _, mask = cv2.threshold(diff, config.threshold, 255, cv2.THRESH_BINARY)
    kernel = np.ones((3, 3), np.uint8)
    mask = cv2.dilate(mask, kernel, iterations=2)  # joins the edges of one moving object
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    height, width = mask.shape
    smallest = config.min_area * width * height
    kept = []
    boxes: list[Box] = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if w * h >= smallest:
            kept.append(contour)
            boxes.append((x, y, x + w, y + h))
    if not kept:
        return 0.0, []
    region = np.zeros_like(mask)
    cv2.drawContours(region, kept, -1, 255, thickness=cv2.FILLED)
    fraction = cv2.countNonZero(region) / float(width * height)
    if fraction > config.max_area:
        return 0.0, []
    return fraction, boxes


def event_span(group: list[FrameMotion], frame_time: float) -> tuple[float, float]:
    """``(start, end)`` of an event, seconds: the time of its first moving frame, and one
    frame after the last frame in which it moved (see :meth:`FrameMotion.ended_by`), at least
    one frame after the start."""
    start = group[0].time
    return start, max(start + frame_time, group[-1].ended_by(frame_time))


def events(
    moving: list[FrameMotion], frame_time: float, config: MotionConfig
) -> list[list[FrameMotion]]:
    """Group moving frames (in time order) into events: a still stretch longer than ``gap``
    seconds splits them; events shorter than ``min_duration`` (:func:`event_span`) are
    dropped."""
    groups: list[list[FrameMotion]] = []
    for frame in moving:
        if groups and frame.time - event_span(groups[-1], frame_time)[1] <= config.gap + 1e-9:
            groups[-1].append(frame)
        else:
            groups.append([frame])
    spans = [(g, event_span(g, frame_time)) for g in groups]
    return [g for g, (start, end) in spans if end - start >= config.min_duration - 1e-9]


def _union(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _scaled(box: Box, sx: float, sy: float, width: int, height: int) -> list[int]:
    return [
        max(0, int(box[0] * sx)),
        max(0, int(box[1] * sy)),
        min(width, int(round(box[2] * sx))),
        min(height, int(round(box[3] * sy))),
    ]


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def detect(recording: RecordingInput, config: MotionConfig, thumbnail: Path) -> ModelOutput:
    """Motion events in the video file ``recording.path`` and its thumbnail written at
    ``thumbnail`` (see :mod:`fieldstation.processing.motion`).

    Times are seconds from the file's first frame. Raises ``FileNotFoundError``,
    :class:`UndecodableAudioError` when the file has no decodable video stream, ``OSError``
    when the thumbnail cannot be written. A file whose end cannot be decoded, or that ends
    more than half a second before ``recording.duration`` (cut by a crash), is analysed up to
    the damage; ``extra["decode_error"]`` says so.
    """
    import av
    import cv2

    path = Path(recording.path)
    if not path.exists():
        raise FileNotFoundError(f"video file {path} does not exist")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise UndecodableAudioError(f"cannot decode {path}: {error}") from error
    with container:
        if not container.streams.video:
            raise UndecodableAudioError(f"cannot decode {path}: it has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # frame threads hold ~10 MiB more frames for no gain here
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise UndecodableAudioError(f"cannot decode {path}: video stream has no frame size")
        rate = float(recording.rate or stream.average_rate or 25)
        frame_time = 1.0 / rate
        aw = min(config.width, width)
        ah = _even(height * aw / width)
        expected = recording.duration * rate if recording.duration > 0 else (stream.frames or 0)
        middle_index = int(expected // 2)

        lag = max(1, round(config.lag * rate))
        recent: deque[tuple[float, np.ndarray]] = deque(maxlen=lag)  # (time, grey) of the last
        first_time: float | None = None
        moving: list[FrameMotion] = []
        best: tuple[float, Any, list[Box]] = (0.0, None, [])
        middle: Any = None
        last: Any = None
        decode_error: str | None = None
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):  # noqa: B007
                if frame.time is not None and first_time is None:
                    first_time = frame.time
                when = (
                    frame.time - first_time
                    if frame.time is not None and first_time is not None
                    else index * frame_time
                )
                small = frame.reformat(width=aw, height=ah, format="gray").to_ndarray()
                grey = cv2.GaussianBlur(small, (5, 5), 0)
                if recent:
                    since, previous = recent[0]  # lag frames back (fewer at the start)
                    fraction, boxes = frame_motion(previous, grey, config)
                    if boxes:
                        moving.append(
                            FrameMotion(index, round(when, 6), round(since, 6), fraction, boxes)
                        )
                        if fraction > best[0]:
                            best = (fraction, frame, boxes)
                recent.append((when, grey))
                if index == middle_index:
                    middle = frame
                last = frame
        except av.FFmpegError as error:
            if last is None:
                raise UndecodableAudioError(f"cannot decode {path}: {error}") from error
            decode_error = f"decoding stopped after frame {index}: {error}"
            log.warning("%s: %s", path, decode_error)
        if last is None:
            raise UndecodableAudioError(f"cannot decode {path}: no video frame decodes")

    sx, sy = width / aw, height / ah
    detections = []
    for group in events(moving, frame_time, config):
        peak = max(group, key=lambda f: f.fraction)
        span = group[-1].index - group[0].index + 1
        start, end = event_span(group, frame_time)
        detections.append(
            Detection(
                label=config.label,
                score=round(min(1.0, len(group) / span), 4),
                start=start,
                end=round(end, 6),
                extra={
                    "box": _scaled(
                        _union([b for f in group for b in f.boxes]), sx, sy, width, height
                    ),
                    "peak_fraction": round(peak.fraction, 4),
                    "peak_time": peak.time,
                },
            )
        )
    fraction, shown, boxes = best
    if shown is None:
        shown, boxes = (middle if middle is not None else last), []
    _write_thumbnail(shown, [_scaled(b, sx, sy, width, height) for b in boxes], config, thumbnail)
    extra: dict[str, Any] = {
        "thumbnail": str(thumbnail),
        "frames": index + 1,
        "moving_frames": len(moving),
    }
    if expected and index + 1 < expected - rate / 2:  # half a second short: cut, not rounding
        decode_error = decode_error or (
            f"the file ends after {index + 1} frames, {round(expected)} expected (cut short?)"
        )
        log.warning("%s: %s", path, decode_error)
    if decode_error is not None:
        extra["decode_error"] = decode_error
    return ModelOutput(detections=detections, extra=extra)


def _write_thumbnail(frame: Any, boxes: list[list[int]], config: MotionConfig, out: Path) -> None:
    """Write ``frame`` (a PyAV video frame) as a JPEG ``thumbnail_width`` wide at ``out``,
    with ``boxes`` (pixels of the frame) drawn; atomically (a reader never sees half a file)."""
    import cv2

    tw = min(config.thumbnail_width, frame.width)
    th = _even(frame.height * tw / frame.width)
    image = frame.reformat(width=tw, height=th, format="bgr24").to_ndarray()
    sx, sy = tw / frame.width, th / frame.height
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(
            image,
            (int(x0 * sx), int(y0 * sy)),
            (int(x1 * sx) - 1, int(y1 * sy) - 1),
            (0, 0, 255),
            2,
        )
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, config.thumbnail_quality])
    if not ok:
        raise OSError(f"cannot encode the thumbnail {out} as JPEG")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(encoded.tobytes())
            os.fchmod(handle.fileno(), 0o644)  # mkstemp makes it 0600; a web page reads it
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
