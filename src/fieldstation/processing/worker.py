"""The processor job: claim recordings, run the model, store results in one transaction.

``run_processor(ctx, name)`` is the job the runtime runs in its own process for each enabled
processor. Each step claims the oldest recording the processor covers (store.processing), runs
the model, applies the output cleaners, and commits detections + ModelRun + outbox messages +
the recording's new state in one transaction. A failure is retried up to ``max_attempts``
(``last_error`` kept); an undecodable file is moved to ``quarantine/`` at once and never
retried; a recording whose file is gone fails at once, marked ``missing``. Progress:
``claimed``, ``processed``, ``failed``, ``quarantined``, ``idle``.

A processor claims only recordings of its model's media (``Recording.media == model.media``,
in the claim statement), so an audio model never sees a video chunk and the reverse; a
recording is ``processed`` once every enabled processor of its media covering its sensor is
done with it (:func:`covering_processors`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from fieldstation.config.plugins import load_plugin
from fieldstation.config.processing import ProcessorConfig
from fieldstation.config.station import StationConfig
from fieldstation.home import move_durably
from fieldstation.job import ConfigurationError, JobContext
from fieldstation.processing.filters import RecordingFacts, build_cleaner, build_filter
from fieldstation.processing.model import (
    Model,
    ModelOutput,
    RecordingInput,
    UndecodableAudioError,
    check_media,
    model_media,
    run_version,
)
from fieldstation.store import processing as repo
from fieldstation.store.events import record_event

__all__ = [
    "ProcessorWorker",
    "StepResult",
    "build_model",
    "covering_processors",
    "processor_media",
    "run_processor",
]

log = logging.getLogger(__name__)


def _station_model(config: ProcessorConfig, ctx: JobContext) -> Model:
    """:func:`build_model` with the station's home and position."""
    station = ctx.config.station
    return build_model(config, home=ctx.home.root, position=(station.latitude, station.longitude))


def build_model(
    config: ProcessorConfig,
    *,
    home: Path | None = None,
    position: tuple[float, float] | None = None,
) -> Model:
    """Build the model of a processor through its plugin's factory, given the context keyword
    ``home`` (the station home's root; where a model keeps files of its own, such as the
    motion model's thumbnails) when there is one, and ``latitude``/``longitude`` (decimal
    degrees, the station's position; BirdNET's range filter) when given.

    Raises ``UnknownPluginError``, ``ModelUnavailableError`` when the model's extra is not
    installed, and :class:`~fieldstation.job.ConfigurationError` when the model's ``media``
    is not the one its plugin declares (``Plugin.media``, which validation and
    :func:`covering_processors` go by).
    """
    plugin = load_plugin("models", config.model)
    context: dict[str, object] = {} if home is None else {"home": home}
    if position is not None:
        context["latitude"], context["longitude"] = position
    model: Model = plugin.factory(config, **context)
    if model_media(model) != plugin.media:
        raise ConfigurationError(
            f"processor {config.name!r}: model plugin {config.model!r} declares media "
            f"{plugin.media} (Plugin.media) but its model analyses {model_media(model)} (the "
            "model's media attribute): the plugin must make them agree"
        )
    return model


def processor_media(config: ProcessorConfig) -> str:
    """The media the processor's model analyses (its plugin's ``media``: ``audio``,
    ``video``, ``readings``). Raises ``UnknownPluginError``."""
    return load_plugin("models", config.model).media


def _sensor_media(config: StationConfig, sensor: str) -> str:
    try:
        return config.sensor(sensor).media
    except KeyError:  # a sensor since removed from the station file: its recordings stay
        return "audio"


def covering_processors(config: StationConfig, sensor: str, media: str | None = None) -> list[str]:
    """Names of the enabled processors that analyse recordings of ``sensor`` whose media is
    ``media`` (None: the media of the sensor's config; ``audio`` for a sensor no longer in
    the station file): a processor of another media does not cover it."""
    if media is None:
        media = _sensor_media(config, sensor)
    return [
        p.name
        for p in config.processors
        if p.enabled and (p.sensors is None or sensor in p.sensors) and processor_media(p) == media
    ]


def _undecodable(error: BaseException) -> bool:
    import soundfile as sf

    return isinstance(error, UndecodableAudioError | sf.LibsndfileError)


@dataclass(frozen=True)
class StepResult:
    """What one :meth:`ProcessorWorker.step` did: ``outcome`` is ``idle``, ``processed``,
    ``skipped``, ``failed``, ``retry``, ``quarantined``, ``missing`` (its file is gone) or
    ``lost`` (lease taken over)."""

    outcome: str
    recording_id: int | None = None
    detections: int = 0
    error: str | None = None


Claim = tuple[repo.ClaimedRecording, str]
"""A claimed recording and its claim token."""
RecordingLike = Any
"""A recording to analyse: a claimed row (:class:`~fieldstation.store.processing.ClaimedRecording`)
or a :class:`~fieldstation.store.models.Recording` (id, path, sensor, duration, end_reason...)."""


class ProcessorWorker:
    """One processor working on one station database. ``step()`` handles one recording.

    Working through a backlog, claims are taken one ahead: the transaction that stores a
    recording's results also claims the next one, so each recording costs one commit instead
    of two (bench/processing.py). "Backlog" means the previous step found work too; a worker
    keeping up with its recorder (idle between recordings) does not try, as the attempt would
    find nothing. A claim taken ahead is given back by :meth:`release` when the worker stops;
    if the worker dies instead, the claim ends like any other (lease expiry, or the runtime
    releasing the dead worker's claims), counted as an attempt.
    """

    def __init__(self, ctx: JobContext, processor: str, model: Model | None = None) -> None:
        self.ctx = ctx
        self.config = ctx.config.processor(processor)
        self.model = model if model is not None else _station_model(self.config, ctx)
        self.sensors = self.config.sensors
        self.media = model_media(self.model)
        """Only recordings of this media are claimed (the model's ``media``)."""
        self.run_version = run_version(self.model, self.config.model_dump(mode="json"))
        """The ``model_version`` of this worker's runs: the model's version and a digest of its
        files and settings (:func:`~fieldstation.processing.model.run_version`)."""
        self._filter = build_filter(self.config.filters)
        self._clean = build_cleaner(self.config.cleaners)
        self._destinations = ctx.config.destinations_for("detection")
        self._worker_id = repo.worker_id(processor, os.getpid())
        self._ahead: Claim | None = None
        self._busy = False  # the last step found work (it did not end idle)

    def _token(self) -> str:
        return repo.claim_token(self._worker_id)

    def pending(self) -> int:
        """Recordings this processor still has to analyse."""
        with self.ctx.db.session() as session:
            return repo.count_pending(
                session, processor=self.config.name, sensors=self.sensors, media=self.media
            )

    def claim(self) -> Claim | None:
        """Claim the next recording in a transaction of its own: ``(row, token)`` or None.

        The claim is not made durable (``durable=False``): after a power cut the recording is
        simply ``recorded`` again, as start-up releases every claim anyway."""
        with self.ctx.db.session(durable=False) as session:
            return self._claim_in(session)

    def _claim_in(self, session: Session) -> Claim | None:
        token = self._token()
        row = repo.claim_next(
            session,
            processor=self.config.name,
            sensors=self.sensors,
            token=token,
            now=self.ctx.clock.now(),
            lease=self.config.lease,
            max_attempts=self.config.max_attempts,
            media=self.media,
        )
        return None if row is None else (row, token)

    def release(self) -> None:
        """Give back the claim taken ahead, if any (see the class docstring); call it when the
        worker stops, so that the claim does not count as an attempt."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            with self.ctx.db.session() as session:
                repo.release(session, recording_id=ahead[0].id, token=ahead[1])

    def step(self) -> StepResult:
        """Process the recording claimed ahead, or claim one and process it;
        ``StepResult('idle')`` when there is none."""
        claimed, self._ahead = self._ahead or self.claim(), None
        busy, self._busy = self._busy, claimed is not None
        if claimed is None:
            return StepResult("idle")
        row, token = claimed
        self.ctx.progress("claimed", {"recording_id": row.id})
        return self.process(row, token, claim_next=busy)

    def analyse(self, row: RecordingLike) -> tuple[repo.RunInfo, list[Any]]:
        """Run the filter, the model and the cleaners on ``row``'s file; returns the run (status
        ``ok``, or ``skipped`` with the filter's reason) and the detections kept. Stores
        nothing; raises what the model raised."""
        started = self.ctx.clock.now()
        t0 = time.perf_counter()
        facts = RecordingFacts(duration=row.duration, end_reason=row.end_reason, sensor=row.sensor)
        skip_reason = self._filter(facts)
        if skip_reason is None:
            recording = self._input(row)
            check_media(self.model, recording, self.config.name)
            output = self.model.run(recording)
        else:
            output = ModelOutput()
        kept = self._clean(list(output.detections))
        run = repo.RunInfo(
            processor=self.config.name,
            model=self.config.model,
            model_version=self.run_version,
            run_id=str(uuid.uuid4()),
            started_at=started,
            duration=time.perf_counter() - t0,
            status="skipped" if skip_reason is not None else "ok",
            note=skip_reason,
            thumbnail=self._relative(output.extra.get("thumbnail")),
        )
        return run, kept

    def _relative(self, path: str | None) -> str | None:
        """``path`` relative to the station home when it is inside it."""
        if path is None:
            return None
        root = self.ctx.home.root
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            return str(path)

    def rerun(self, row: RecordingLike, run_key: str) -> StepResult:
        """Analyse a recording this processor has already done once more (``fieldstation
        reprocess``) and store the new run beside the earlier ones (``run_key`` tells its
        messages apart), without a claim and without changing the recording's state. A model
        failure is returned (``failed``), and a recording the filters skip (``skipped``);
        neither is stored."""
        try:
            run, kept = self.analyse(row)
        except Exception as error:  # noqa: BLE001 - reported to the caller, nothing stored
            return StepResult("failed", row.id, error=f"{type(error).__name__}: {error}")
        if run.status == "skipped":
            return StepResult("skipped", row.id)
        with self.ctx.db.session() as session:
            repo.complete(
                session,
                recording_id=row.id,
                token=None,
                run=dataclasses.replace(run, run_key=run_key),
                detections=kept,
                required=(),
                destinations=self._destinations,
                station_id=self.ctx.config.station.id,
                now=self.ctx.clock.now(),
            )
        return StepResult("processed", row.id, detections=len(kept))

    def process(
        self, row: repo.ClaimedRecording, token: str, *, claim_next: bool = False
    ) -> StepResult:
        """Analyse a claimed recording and commit the outcome (see module docstring);
        ``claim_next``: also claim the next recording in that commit (see the class
        docstring)."""
        try:
            run, kept = self.analyse(row)
        except Exception as error:  # noqa: BLE001 - any model failure is recorded, not raised
            if not (self.ctx.home.root / row.path).exists():
                return self._missing(row, token, error)
            if _undecodable(error):
                return self._quarantine(row, token, error)
            return self._fail(row, token, error)
        try:
            with self.ctx.db.session() as session:
                repo.complete(
                    session,
                    recording_id=row.id,
                    token=token,
                    run=run,
                    detections=kept,
                    required=covering_processors(self.ctx.config, row.sensor, row.media),
                    destinations=self._destinations,
                    station_id=self.ctx.config.station.id,
                    now=self.ctx.clock.now(),
                )
                # claim the next recording in the same transaction: one commit per recording
                ahead = None
                if claim_next and not self.ctx.stop.is_set():
                    ahead = self._claim_in(session)
            self._ahead = ahead
        except repo.LeaseLostError as error:
            log.warning("%s", error)
            return StepResult("lost", row.id, error=str(error))
        outcome = "skipped" if run.status == "skipped" else "processed"
        self.ctx.progress("processed", {"recording_id": row.id, "detections": len(kept)})
        return StepResult(outcome, row.id, detections=len(kept))

    def _input(self, row: RecordingLike) -> RecordingInput:
        return RecordingInput.from_row(row, self.ctx.home.root)

    def _fail(self, row: repo.ClaimedRecording, token: str, error: BaseException) -> StepResult:
        message = f"{type(error).__name__}: {error}"
        log.warning("processor %s failed on recording %s: %s", self.config.name, row.id, message)
        try:
            with self.ctx.db.session() as session:
                state = repo.fail(
                    session,
                    recording_id=row.id,
                    token=token,
                    error=message,
                    max_attempts=self.config.max_attempts,
                    now=self.ctx.clock.now(),
                )
        except repo.LeaseLostError as lost:
            return StepResult("lost", row.id, error=str(lost))
        self.ctx.progress(
            "failed", {"recording_id": row.id, "error": message, "final": state == "failed"}
        )
        return StepResult("failed" if state == "failed" else "retry", row.id, error=message)

    def _missing(self, row: repo.ClaimedRecording, token: str, error: BaseException) -> StepResult:
        """The recording's file is gone (deleted by hand, a failed card): no attempt can
        succeed, so it fails at once and is marked missing, with an event."""
        message = f"file missing: {type(error).__name__}: {error}"
        log.warning("processor %s: recording %s: %s", self.config.name, row.id, message)
        now = self.ctx.clock.now()
        try:
            with self.ctx.db.session() as session:
                repo.file_missing(session, recording_id=row.id, token=token, error=message, now=now)
                self._event(
                    session,
                    "recording_missing",
                    f"recording {row.id} ({row.path}) has no file; it will not be processed",
                    {"recording_id": row.id, "error": message},
                    now,
                )
        except repo.LeaseLostError as lost:
            return StepResult("lost", row.id, error=str(lost))
        self.ctx.progress("failed", {"recording_id": row.id, "error": message, "final": True})
        return StepResult("missing", row.id, error=message)

    def _event(
        self, session: Session, kind: str, message: str, data: dict[str, Any], now: datetime
    ) -> None:
        record_event(
            session,
            kind=kind,
            source=self.ctx.name or f"processor:{self.config.name}",
            message=message,
            now=now,
            station_id=self.ctx.config.station.id,
            destinations=self.ctx.config.destinations_for("event"),
            severity="warning",
            data=data,
        )

    def _quarantine(
        self, row: repo.ClaimedRecording, token: str, error: BaseException
    ) -> StepResult:
        message = f"undecodable: {type(error).__name__}: {error}"
        home = self.ctx.home
        source = home.root / row.path
        target = home.quarantine_target(Path(row.path).name)
        now = self.ctx.clock.now()
        try:
            with self.ctx.db.session() as session:
                repo.quarantine(
                    session,
                    recording_id=row.id,
                    token=token,
                    new_path=os.path.relpath(target, home.root),
                    error=message,
                    now=now,
                )
                self._event(
                    session,
                    "recording_quarantined",
                    f"recording {row.id} ({row.path}) is undecodable; moved to {target}",
                    {"recording_id": row.id, "error": message},
                    now,
                )
                _move(source, target)  # last step before the commit; undone if it fails
        except repo.LeaseLostError as lost:
            return StepResult("lost", row.id, error=str(lost))
        except Exception:
            _move(target, source)
            raise
        self.ctx.progress("failed", {"recording_id": row.id, "error": message, "final": True})
        return StepResult("quarantined", row.id, error=message)


def _move(source: Path, target: Path) -> None:
    if source.exists():
        move_durably(source, target)


def run_processor(
    ctx: JobContext,
    processor_name: str,
    *,
    model_factory: Callable[[ProcessorConfig], Model] | None = None,
) -> None:
    """The processor job: process recordings until ``ctx.stop`` is set.

    When there is nothing to do it reports ``progress("idle", {"pending": n})`` and waits on
    ``ctx.wake`` (a nudge: a recorder committed a chunk) for at most ``poll_interval``
    seconds of ``ctx.clock``. Raises ``KeyError`` for an unknown processor
    and whatever building the model raises (e.g. ``ModelUnavailableError``).
    """
    config = ctx.config.processor(processor_name)
    model = model_factory(config) if model_factory else _station_model(config, ctx)
    worker = ProcessorWorker(ctx, processor_name, model)
    try:
        while not ctx.stop.is_set():
            result = worker.step()
            if result.outcome == "idle":
                details: dict[str, Any] = {"pending": worker.pending()}
                ctx.progress("idle", details)
                ctx.clock.wait(ctx.wake, config.poll_interval)  # set by a nudge or the stop
                ctx.wake.clear()
    finally:
        worker.release()
