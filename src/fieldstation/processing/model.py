"""The ``Model`` role: what every detector (built-in or adapter of a real model) provides.

A model receives a :class:`RecordingInput` (the audio file path plus its metadata) and decodes
the file itself with soundfile (helper: :func:`read_audio`), because each model wants its own
sample rate, channel handling and windowing, and some real models (BatDetect2) read files with
their own loader. It returns a :class:`ModelOutput` whose detections carry times in seconds from
the start of the recording; the worker turns them into absolute UTC times. numpy and soundfile
are imported only when used: plugin modules are imported whenever a station file is validated.
See docs/decisions/0030-model-protocol.md.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fieldstation.job import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy import Row

    from fieldstation.store.models import Recording

__all__ = [
    "Detection",
    "MediaMismatchError",
    "Model",
    "ModelError",
    "ModelOutput",
    "ModelUnavailableError",
    "RecordingInput",
    "UndecodableAudioError",
    "check_media",
    "extra_missing",
    "missing_modules",
    "model_media",
    "model_unavailable",
    "read_audio",
    "run_version",
]

RUN_SETTINGS_IGNORED = frozenset(
    {"name", "enabled", "sensors", "timeout", "max_attempts", "lease", "poll_interval", "required"}
)
"""Processor fields that do not change what a model finds (which recordings, how often, how
long): left out of :func:`run_version`'s digest."""


class ModelError(RuntimeError):
    """A model failed on one recording; the worker retries it up to ``max_attempts``."""


class UndecodableAudioError(ModelError):
    """The audio file cannot be decoded: it is quarantined at once and never retried."""


class ModelUnavailableError(RuntimeError):
    """A model's optional extra (packages or model files) is not installed.

    The message names the extra to install, e.g. ``scripts/install-extras``. Raise it with
    :func:`model_unavailable`, which makes it a :class:`fieldstation.job.ConfigurationError` too.
    """


class ModelExtraMissingError(ModelUnavailableError, ConfigurationError):
    """A model's extra is missing: a configuration error the supervisor does not retry (the
    processor job stops with the message, exit 78): installing the extra is the only fix."""


def model_unavailable(message: str) -> ModelExtraMissingError:
    """A :class:`ModelExtraMissingError` with ``message`` (name the extra and how to install it)."""
    return ModelExtraMissingError(message)


def missing_modules(*modules: str) -> list[str]:
    """Those of ``modules`` (top-level import names) that are not installed; found without
    importing them (``importlib.util.find_spec``), so it is cheap enough for ``validate``."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def extra_missing(processor: str, model: str, missing: str) -> str:
    """The message for a processor whose model extra is not installed: the key, what is
    missing and the command that installs it."""
    return (
        f"processor {processor!r}: model = {model!r} needs the {model} extra, which is not "
        f"installed here ({missing}); install it with `scripts/install-extras PYTHON` (the "
        f"[{model}] extra of fieldstation, pip install 'fieldstation[{model}]', plus what pip "
        "cannot install from it alone; docs/decisions/0035-extras-environment.md), or remove "
        "the processor"
    )


@dataclass(frozen=True)
class RecordingInput:
    """What a model is given: one recorded file and its metadata.

    ``path`` is absolute; ``media`` is ``audio``, ``video`` or ``readings``; ``started_at`` is
    the aware UTC time of the first frame (None for a file analysed outside a station);
    ``rate`` (frames per second, Hz: the sample rate of audio), ``channels`` and ``duration``
    (seconds) come from the recording row or the file header.
    """

    path: Path
    rate: int
    channels: int = 1
    duration: float = 0.0
    started_at: datetime | None = None
    sensor: str | None = None
    recording_id: int | None = None
    media: str = "audio"

    @property
    def sample_rate(self) -> int:
        """The rate under its audio name, Hz."""
        return self.rate

    @classmethod
    def from_row(cls, row: Recording | Row[Any], home: Path) -> RecordingInput:
        """The input for a recording row (ORM object or the claimed row's values) whose
        ``path`` is relative to the station ``home``."""
        return cls(
            path=home / row.path,
            rate=row.rate,
            channels=row.channels,
            duration=row.duration,
            started_at=row.started_at,
            sensor=row.sensor,
            recording_id=row.id,
            media=row.media,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> RecordingInput:
        """Build the input from the file alone: a fieldstation chunk of any media from the
        metadata embedded in it, any other audio file from its header. Raises
        :class:`UndecodableAudioError`."""
        import soundfile as sf

        from fieldstation.recording.media import format_of_path
        from fieldstation.recording.metadata import MetadataError

        path = Path(path).resolve()
        fmt = format_of_path(path)
        if fmt is not None and fmt.media != "audio":
            try:
                spec, _, frames = fmt.inspect(path)
            except (MetadataError, OSError) as error:
                raise UndecodableAudioError(f"cannot decode {path}: {error}") from error
            return cls(
                path=path,
                rate=spec.rate,
                channels=spec.channels,
                duration=frames / spec.rate,
                started_at=spec.started_at,
                sensor=spec.sensor,
                media=spec.media,
            )
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError) as error:
            raise UndecodableAudioError(f"cannot decode {path}: {error}") from error
        return cls(
            path=path,
            rate=int(info.samplerate),
            channels=int(info.channels),
            duration=float(info.frames) / info.samplerate if info.samplerate else 0.0,
        )


@dataclass(frozen=True)
class Detection:
    """One thing a model found.

    ``score`` in 0..1; ``start``/``end`` in seconds from the recording start; ``low_hz``/
    ``high_hz`` the frequency band when the model gives one; ``extra`` any JSON-able details.
    """

    label: str
    score: float
    start: float
    end: float
    low_hz: float | None = None
    high_hz: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"detection score {self.score} is outside 0..1")
        if self.end < self.start:
            raise ValueError(f"detection ends ({self.end} s) before it starts ({self.start} s)")


@dataclass(frozen=True)
class ModelOutput:
    """The result of one model run on one recording."""

    detections: list[Detection] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Model(Protocol):
    """A detector. ``sample_rate`` is the rate it analyses at (Hz; None: the file's own).

    ``media`` is the media it analyses (``audio`` when the class does not say: see
    :func:`model_media`); the processor and ``fieldstation analyze`` refuse a recording of
    another media with :class:`MediaMismatchError`."""

    name: str
    version: str
    sample_rate: int | None

    def run(self, recording: RecordingInput) -> ModelOutput:
        """Analyse one recording. Raises :class:`UndecodableAudioError` or :class:`ModelError`."""
        ...


class MediaMismatchError(ModelError, ConfigurationError):
    """A model was given a recording of a media it does not analyse (a video to BirdNET): a
    configuration error (name the processor, the model and the sensor), not retried."""


def model_media(model: object) -> str:
    """The media ``model`` analyses: its ``media`` attribute, ``audio`` when it has none."""
    return str(getattr(model, "media", "audio"))


def check_media(model: object, recording: RecordingInput, processor: str | None = None) -> None:
    """Raise :class:`MediaMismatchError` when ``recording`` is not of the media ``model``
    analyses."""
    want = model_media(model)
    if recording.media != want:
        who = (
            f"processor {processor!r} (model {getattr(model, 'name', '?')!r})"
            if processor
            else (f"model {getattr(model, 'name', '?')!r}")
        )
        where = f"sensor {recording.sensor!r}" if recording.sensor else str(recording.path)
        raise MediaMismatchError(
            f"{who} analyses {want}, but {where} records {recording.media}: give the "
            f"processor sensors of media {want} only ('sensors' of the processor)"
        )


def read_audio(path: str | Path, *, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """Decode a whole file to mono samples: ``(samples[frames], sample_rate_hz)``.

    Several channels are averaged. Raises :class:`UndecodableAudioError` when libsndfile cannot
    decode the file (and ``FileNotFoundError`` when it does not exist).
    """
    import numpy as np
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        samples, rate = sf.read(str(path), dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise UndecodableAudioError(f"cannot decode {path}: {error}") from error
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=dtype)
    return np.ascontiguousarray(mono), int(rate)


def _digest_value(value: Any, digest: Any) -> None:
    """Feed ``value`` (JSON-able settings) to ``digest``; a string naming an existing file adds
    the file's content too (a model or labels file given by path)."""
    import json

    digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    if isinstance(value, dict):
        for item in value.values():
            if isinstance(item, dict | list):
                _digest_value(item, digest)
            else:
                _file(item, digest)
    elif isinstance(value, list):
        for item in value:
            _file(item, digest)


def _file(value: Any, digest: Any) -> None:
    if isinstance(value, str | Path) and str(value) and Path(value).is_file():
        with Path(value).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)


def run_version(model: object, settings: dict[str, Any] | None = None) -> str:
    """The version of one model run (decision 0135): ``<model.version>+<12 hex digits>``, the
    digits a SHA-256 of the processor ``settings`` (a processor config's ``model_dump(mode=
    "json")``; the fields of :data:`RUN_SETTINGS_IGNORED` left out), of the content of every
    file a setting names, and of the model's own ``files`` (an optional attribute: paths of
    the model and labels files it loaded). So the version changes when the model file or a
    setting that changes what the model finds changes, and only then. At most 64 characters
    (the ``model_runs.model_version`` column)."""
    import hashlib

    digest = hashlib.sha256()
    kept = {k: v for k, v in (settings or {}).items() if k not in RUN_SETTINGS_IGNORED}
    _digest_value(kept, digest)
    for path in getattr(model, "files", ()) or ():
        digest.update(str(Path(path).name).encode())
        _file(path, digest)
    base = str(getattr(model, "version", "?"))
    return f"{base[:51]}+{digest.hexdigest()[:12]}"
