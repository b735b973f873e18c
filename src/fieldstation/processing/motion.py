"""Motion detector for video recordings: frame differencing on small grey frames.

Algorithm (docs/decisions/0075-motion-model.md; the work is in
:mod:`fieldstation.processing.motion_detector`, which imports PyAV and OpenCV):

1. Decode the chunk with PyAV; each frame is scaled by FFmpeg to ``width`` pixels wide (height
   keeping the aspect ratio) and grey, then blurred (5x5 Gaussian).
2. A frame moves where it differs from the frame ``lag`` seconds before it (0.2 s: 5 frames
   at 25 fps; a small or slow object moves too little from one frame to the next to be seen)
   by more than ``threshold`` grey levels; the mask is dilated (3x3, twice: joins the leading
   and trailing edges of one object) and its outer contours give bounding boxes. Boxes smaller
   than ``min_area`` (a fraction of the frame) are dropped (speckle, sensor noise); a frame
   whose moving area exceeds ``max_area`` is a global change (a cloud, the camera's exposure or
   a shake) and ignored.
3. Moving frames closer than ``gap`` seconds merge into one event; events shorter than
   ``min_duration`` are dropped. An event starts at the time of its first moving frame and ends
   one frame after the last frame in which something moved (the last moving frame less the
   lag), in seconds from the first frame of the file.
4. Each event is a ``Detection`` labelled ``label`` (``motion``) whose score is the share of the
   event's frames that moved (1.0: continuous motion; flicker scores low) and whose ``extra``
   holds ``box`` (``[x0, y0, x1, y1]``, the union of the event's boxes in pixels of the
   recorded frame), ``peak_fraction`` (the largest moving share of the frame, 0..1) and
   ``peak_time`` (seconds).
5. One JPEG thumbnail per recording: the frame of most motion (its boxes drawn), or the middle
   frame when nothing moved, ``thumbnail_width`` pixels wide. It is written under the station
   home's ``thumbnails/`` folder, at the recording's path below ``data/`` with the processor's
   name: ``thumbnails/<sensor>/<date>/<chunk>.<processor>.jpg`` (outside a station,
   ``fieldstation analyze``: beside the file). Its absolute path is
   ``ModelOutput.extra["thumbnail"]``.

This module is a plugin module: it imports neither cv2 nor av.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.processing import ProcessorConfig
from fieldstation.config.units import Seconds
from fieldstation.home import StationHome

if TYPE_CHECKING:
    from fieldstation.processing.model import ModelOutput, RecordingInput

__all__ = ["MotionConfig", "MotionModel", "plugin"]

VERSION = "1"
"""Bump when the algorithm changes what it detects."""


class MotionConfig(ProcessorConfig):
    """Motion in video recordings (frame differencing); needs opencv-python-headless."""

    width: int = Field(
        default=320, ge=32, le=1920, description="Frames are analysed at this width, pixels."
    )
    threshold: int = Field(
        default=25, ge=1, le=254, description="Grey-level change (0..255) that counts as motion."
    )
    lag: Seconds = Field(
        default=0.2,
        gt=0,
        le=5,
        description="Each frame is compared with the frame this long before it, seconds; "
        "longer sees slower or smaller motion.",
    )
    min_area: float = Field(
        default=0.001, gt=0, lt=1, description="Smallest moving region, fraction of the frame."
    )
    max_area: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="A frame with more of it moving is a global change (light, shake): ignored.",
    )
    min_duration: Seconds = Field(default=0.2, ge=0, description="Shortest event kept, seconds.")
    gap: Seconds = Field(
        default=1.0, ge=0, description="Moving frames closer than this merge into one event."
    )
    label: str = Field(default="motion", description="Label given to detections.")
    thumbnail_width: int = Field(
        default=480, ge=32, le=3840, description="Width of the JPEG thumbnail, pixels."
    )
    thumbnail_quality: int = Field(
        default=80, ge=10, le=100, description="JPEG quality of the thumbnail (10..100)."
    )

    @model_validator(mode="after")
    def _areas(self) -> MotionConfig:
        if self.max_area <= self.min_area:
            raise ValueError(
                f"max_area ({self.max_area}) must be above min_area ({self.min_area}): both are "
                "fractions of the frame"
            )
        return self


class MotionModel:
    """The motion detector as a :class:`~fieldstation.processing.model.Model` (media
    ``video``). ``home``: the station home (thumbnails go under its ``thumbnails/``), None
    outside a station (thumbnails go beside the file)."""

    name = "motion"
    version = VERSION
    sample_rate: int | None = None
    media = "video"

    def __init__(self, config: MotionConfig, home: Path | None = None) -> None:
        self.config = config
        self.home = None if home is None else Path(home)

    def thumbnail_path(self, recording: Path) -> Path:
        """Where the thumbnail of the file ``recording`` goes (see the module docstring)."""
        name = f"{recording.stem}.{self.config.name}.jpg"
        if self.home is None:
            return recording.with_name(name)
        try:
            relative = recording.relative_to(self.home / "data")
        except ValueError:
            relative = Path(recording.name)  # not under data/ (quarantine, elsewhere)
        return StationHome(self.home).thumbnails / relative.parent / name

    def run(self, recording: RecordingInput) -> ModelOutput:
        """Detect motion in a video file; raises ``UndecodableAudioError`` (the file has no
        decodable video stream) or ``FileNotFoundError``; ``OSError`` when the thumbnail
        cannot be written."""
        from fieldstation.processing.motion_detector import detect

        return detect(recording, self.config, self.thumbnail_path(recording.path))


def _create(config: MotionConfig, **context: Any) -> MotionModel:
    home = context.get("home")
    return MotionModel(config, home=None if home is None else Path(home))


def preflight(config: MotionConfig) -> list[str]:
    """OpenCV missing on this machine (it is a dependency of fieldstation; a broken install)."""
    from fieldstation.processing.model import missing_modules

    if missing_modules("cv2"):
        return [
            f"processor {config.name!r}: model = 'motion' needs OpenCV (cv2), which is not "
            "installed here: pip install opencv-python-headless"
        ]
    return []


plugin = Plugin(
    config_model=MotionConfig,
    factory=_create,
    description=__doc__ or "",
    preflight=preflight,
    media="video",
)
