"""Video sensor: a camera (V4L2 device, RTSP or HTTP stream), a video file replayed as if live,
or FFmpeg's synthetic ``lavfi`` sources, captured by the ``ffmpeg`` binary (decision record 0071).

``source`` says what is captured:

- ``/dev/videoN``: a V4L2 camera (live);
- ``rtsp://...``, ``rtsps://...``, ``http://...``, ``https://...``: a network camera (live);
- ``lavfi:<graph>``: an FFmpeg source filter graph, e.g. ``lavfi:testsrc2=size=1280x720:rate=25``,
  the synthetic camera (not live: paced on the injected clock);
- any other text: a video file replayed as if live (not live; ``loop`` plays it again and again).

Whatever the source, frames come out ``width`` x ``height`` RGB (blocks of shape
``(frames, height, width, 3)``, uint8) at a constant ``fps``: FFmpeg duplicates or drops frames
to hold the rate (counted in ``health()``). Chunks are H.264 (libx264, ``crf``, ``preset``) in
Matroska (:mod:`fieldstation.recording.video`).

This module holds only the config and the plugin (cheap to import); the working sensor is
:class:`fieldstation.sensors.camera.VideoSensor`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.sensors import SensorConfig
from fieldstation.config.units import Seconds

__all__ = [
    "BITS_PER_PIXEL_CRF23",
    "MAX_QUEUE_BYTES",
    "PRESETS",
    "SourceKind",
    "VideoConfig",
    "bits_per_pixel",
    "plugin",
    "preflight",
    "source_kind",
]

SourceKind = Literal["device", "network", "lavfi", "file"]

PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
"""libx264's presets, fastest first (less CPU per frame, bigger files)."""

BITS_PER_PIXEL_CRF23 = 0.07
"""Bits per pixel per frame of H.264 at ``crf`` 23 for a mostly still outdoor scene: the
"Kush gauge" (bit rate = pixels x fps x motion factor x 0.07, motion factor 1 for low motion),
a rule of thumb for H.264 bit rates (Kush Amerasinghe, Adobe, "H.264 for the rest of us").
Busy scenes (wind in leaves, rain) take 2 to 4 times more."""


MAX_QUEUE_BYTES = 1 << 30
"""Most memory the frame queue of one video sensor may hold, bytes (1 GiB: 388 frames of
720p, 43 of 4K)."""


def bits_per_pixel(crf: int) -> float:
    """Estimated H.264 bits per pixel per frame at ``crf``: :data:`BITS_PER_PIXEL_CRF23`
    halved for every 6 crf above 23 and doubled for every 6 below (x264's rule, quoted in
    FFmpeg's H.264 encoding guide: "a change of ±6 should result in about half/double the
    file size")."""
    return BITS_PER_PIXEL_CRF23 * 2.0 ** ((23 - crf) / 6)


def source_kind(source: str) -> SourceKind:
    """What ``source`` is: ``device`` (``/dev/...``), ``network`` (rtsp, rtsps, http, https
    URL), ``lavfi`` (``lavfi:<graph>``) or ``file`` (anything else: a path)."""
    lowered = source.lower()
    if lowered.startswith("lavfi:"):
        return "lavfi"
    if lowered.startswith(("rtsp://", "rtsps://", "http://", "https://")):
        return "network"
    if source.startswith("/dev/"):
        return "device"
    return "file"


def is_live(source: str) -> bool:
    """True for sources that run on their own time (devices, network cameras)."""
    return source_kind(source) in ("device", "network")


class VideoConfig(SensorConfig):
    """A camera, a replayed video file or a synthetic video source, recorded as H.264 chunks."""

    media: ClassVar[str] = "video"

    source: str = Field(
        min_length=1,
        description="/dev/videoN (V4L2 camera), rtsp:// or http(s):// camera URL, "
        "lavfi:<graph> (synthetic, e.g. lavfi:testsrc2=size=1280x720:rate=25) or a video file "
        "(replayed as if live).",
    )
    width: int = Field(default=1280, ge=16, le=7680, description="Frame width, pixels (even).")
    height: int = Field(default=720, ge=16, le=4320, description="Frame height, pixels (even).")
    fps: int = Field(
        default=25,
        ge=1,
        le=120,
        description="Frames per second, Hz (whole number; constant: FFmpeg duplicates or drops "
        "frames to hold it).",
    )
    crf: int = Field(
        default=23,
        ge=0,
        le=51,
        description="libx264 constant rate factor: 0 lossless, 23 default, +6 about halves "
        "the size.",
    )
    preset: str = Field(
        default="veryfast",
        description=f"libx264 preset, one of {', '.join(PRESETS)} (faster: less CPU, bigger "
        "files).",
    )
    format: Literal["mkv"] = Field(default="mkv", description="Container of chunks: mkv.")
    loop: bool = Field(default=False, description="File sources: start again at the end.")
    queue_frames: int = Field(
        default=25,
        ge=1,
        le=1000,
        description="Frames held between capture and recording (each width x height x 3 "
        "bytes: 2.8 MB at 720p); a live source drops (and counts) frames when it is full "
        "(the recorder then starts a new session).",
    )
    timeout: Seconds = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Live sources: seconds without a frame before the camera counts as gone.",
    )
    input_options: list[str] = Field(
        default_factory=list,
        description="Extra ffmpeg input options placed before -i, e.g. ['-input_format', "
        "'mjpeg'] for a V4L2 camera.",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown libx264 preset {value!r}; use one of {', '.join(PRESETS)}")
        return value

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(
                f"{value} is odd: H.264 (4:2:0) needs an even number of pixels; "
                f"use {value - 1} or {value + 1}"
            )
        return value

    @field_validator("source")
    @classmethod
    def _sane_source(cls, value: str) -> str:
        kind = source_kind(value)
        if kind == "lavfi" and not value[len("lavfi:") :].strip():
            raise ValueError(
                "lavfi: needs a filter graph, e.g. 'lavfi:testsrc2=size=1280x720:rate=25'"
            )
        if kind == "file" and "://" in value:
            scheme = value.split("://", 1)[0]
            raise ValueError(
                f"unsupported URL scheme {scheme!r}: use rtsp://, rtsps://, http:// or https:// "
                "(or a /dev/videoN device, lavfi:<graph>, or a file path)"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> VideoConfig:
        if self.loop and source_kind(self.source) != "file":
            raise ValueError(
                f"loop applies to a video file source only, not {self.source!r}; remove 'loop'"
            )
        if self.queue_frames * self.frame_bytes > MAX_QUEUE_BYTES:
            most = max(1, MAX_QUEUE_BYTES // self.frame_bytes)
            raise ValueError(
                f"queue_frames = {self.queue_frames} frames of {self.width}x{self.height} would "
                f"hold {self.queue_frames * self.frame_bytes / 1e9:.1f} GB of memory; use at "
                f"most {most}"
            )
        return self

    @property
    def live(self) -> bool:
        """True for a camera (device or network URL): frames come on the camera's time."""
        return is_live(self.source)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one RGB frame: ``width * height * 3``."""
        return self.width * self.height * 3

    def bytes_per_second(self) -> float | None:
        """Estimated H.264 bytes per second of the chunks: ``width * height * fps *``
        :func:`bits_per_pixel` ``(crf) / 8`` (a still scene; see :data:`BITS_PER_PIXEL_CRF23`).
        720p at 25 fps and crf 23: about 202 kB/s, 17 GB a day."""
        return self.width * self.height * self.fps * bits_per_pixel(self.crf) / 8

    def storage_label(self) -> str:
        return "H.264 (estimate, still scene)"


def ffmpeg_executable() -> str | None:
    """Path of the ``ffmpeg`` binary on ``PATH``, or None."""
    return shutil.which("ffmpeg")


def preflight(config: VideoConfig) -> list[str]:
    """What would stop this sensor on this machine: no ``ffmpeg`` binary, a file source that
    does not exist or is not readable, a V4L2 device that is not there (one message each,
    naming the key and the fix)."""
    problems: list[str] = []
    if ffmpeg_executable() is None:
        problems.append(
            f"sensor {config.name}: the ffmpeg binary is not installed (apt-get install ffmpeg)"
        )
    kind = source_kind(config.source)
    path = Path(config.source).expanduser()
    if kind == "file" and not path.is_file():
        problems.append(f"source: video file {path} does not exist or is not a file; fix 'source'")
    elif kind == "device" and not path.exists():
        problems.append(
            f"source: camera {path} is not present (plugged in? see 'v4l2-ctl --list-devices')"
        )
    return problems


def _create(config: VideoConfig, **context: Any) -> Any:
    """Build a :class:`fieldstation.sensors.camera.VideoSensor` (context: ``clock``).

    Raises :class:`~fieldstation.sensors.base.SensorConfigurationError` when ffmpeg is missing
    or a file source does not exist (not retried)."""
    from fieldstation.sensors.camera import VideoSensor

    return VideoSensor(config, clock=context.get("clock"))


plugin = Plugin(
    config_model=VideoConfig, factory=_create, description=__doc__ or "", preflight=preflight
)
