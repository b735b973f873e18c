"""BatDetect2 (extra ``fieldstation[batdetect2]``, installed by ``scripts/install-extras``).

Runs BatDetect2 1.3 through its Python API (``batdetect2.api.process_file``) on torch CPU, with
the model file shipped in its wheel; nothing is downloaded. Each annotation becomes one
detection: label = species class, score = detection probability (``det_prob``), times in
seconds and band in Hz as BatDetect2 reports them; ``extra`` keeps ``class_prob``, ``event``
and ``individual``. Importing ``batdetect2.api`` loads torch and the model (about 1 GB RSS,
measured), so it happens in the factory, never at module import.
See docs/decisions/0034-batdetect2-adapter.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from fieldstation.config.plugins import Plugin
from fieldstation.config.processing import ProcessorConfig
from fieldstation.processing.model import (
    Detection,
    ModelError,
    ModelOutput,
    RecordingInput,
    UndecodableAudioError,
    extra_missing,
    missing_modules,
    model_unavailable,
)

__all__ = [
    "BatDetect2Config",
    "BatDetect2Model",
    "annotations_to_detections",
    "check_decodable",
    "plugin",
]


class BatDetect2Config(ProcessorConfig):
    """BatDetect2 through its Python API on torch CPU."""

    detection_threshold: float = Field(default=0.3, ge=0, le=1, description="Model threshold.")
    time_expansion: float = Field(default=1.0, gt=0, description="Time expansion factor of files.")
    threads: int = Field(default=1, ge=1, description="torch CPU threads.")


def annotations_to_detections(annotations: list[dict[str, Any]]) -> list[Detection]:
    """BatDetect2 ``pred_dict['annotation']`` items as detections, in the model's order."""
    return [
        Detection(
            label=str(a["class"]),
            score=float(min(1.0, max(0.0, a["det_prob"]))),
            start=float(a["start_time"]),
            end=float(a["end_time"]),
            low_hz=float(a["low_freq"]),
            high_hz=float(a["high_freq"]),
            extra={
                "class_prob": float(a["class_prob"]),
                "event": str(a.get("event", "")),
                "individual": str(a.get("individual", "")),
            },
        )
        for a in annotations
    ]


_CHECK_BLOCK = 1 << 16
"""Frames decoded at a time by :func:`check_decodable` (memory stays small for long files)."""


def check_decodable(path: Path) -> int:
    """Decode the whole file at ``path`` with soundfile, block by block, and return its frames.

    BatDetect2 loads files with librosa, which falls back to audioread (ffmpeg) when soundfile
    fails: a file whose header is fine but whose body is corrupt or cut short would then be
    analysed half-decoded, or fail with an error the worker retries. Checking the whole body
    first gives one clear verdict, so such a file is quarantined at once. Raises
    :class:`UndecodableAudioError` when the header or any block cannot be decoded, or when fewer
    frames decode than the header announces.
    """
    import soundfile as sf

    decoded = 0
    try:
        with sf.SoundFile(str(path)) as f:
            announced = f.frames
            while block := len(f.read(_CHECK_BLOCK, dtype="int16", always_2d=True)):
                decoded += block
    except (sf.LibsndfileError, RuntimeError) as error:
        raise UndecodableAudioError(
            f"cannot decode {path} (after {decoded} frame(s)): {error}"
        ) from error
    if decoded < announced:
        raise UndecodableAudioError(
            f"cannot decode {path}: {decoded} of {announced} frame(s) decode"
        )
    return decoded


class BatDetect2Model:
    """BatDetect2 as a :class:`~fieldstation.processing.model.Model`."""

    name = "batdetect2"
    sample_rate: int | None = 256_000  # batdetect2.detector.parameters.TARGET_SAMPLERATE_HZ

    def __init__(self, config: BatDetect2Config) -> None:
        try:
            import torch
            from batdetect2 import api
        except ImportError as error:
            raise model_unavailable(
                extra_missing(config.name, "batdetect2", f"cannot import it: {error}")
            ) from error
        from importlib.metadata import version

        torch.set_num_threads(config.threads)
        self.config = config
        self.version = version("batdetect2")
        self._api = api
        self._device = torch.device("cpu")
        self._settings = api.get_config(
            detection_threshold=config.detection_threshold,
            time_expansion=config.time_expansion,
        )

    def run(self, recording: RecordingInput) -> ModelOutput:
        """Detect bat calls in the file. Raises ``UndecodableAudioError`` (the file, header or
        body, cannot be decoded: :func:`check_decodable`) or ``ModelError``."""
        path = str(recording.path)
        check_decodable(recording.path)
        try:
            results = self._api.process_file(
                path, self._api.model, config=self._settings, device=self._device
            )
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"batdetect2 failed on {path}: {error}") from error
        annotations = list(results["pred_dict"]["annotation"])
        return ModelOutput(detections=annotations_to_detections(annotations))


def _create(config: BatDetect2Config, **context: object) -> BatDetect2Model:
    return BatDetect2Model(config)


def preflight(config: BatDetect2Config) -> list[str]:
    """The batdetect2 extra, checked without importing it (for ``fieldstation validate``)."""
    absent = missing_modules("torch", "batdetect2")
    if not absent:
        return []
    return [extra_missing(config.name, "batdetect2", f"no module {', '.join(absent)}")]


plugin = Plugin(
    config_model=BatDetect2Config, factory=_create, description=__doc__ or "", preflight=preflight
)
