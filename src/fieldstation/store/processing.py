"""Repository functions of the processing stage: claim, complete, fail, quarantine.

A processor **claims** the oldest recording it still has to analyse with one atomic
compare-and-set ``UPDATE ... WHERE id = (oldest candidate) AND <still claimable> RETURNING id``:
the statement takes SQLite's write lock before it reads, so two processes can never claim the
same row, and a stale snapshot cannot cause ``SQLITE_BUSY``. A claim is a lease (``claimed_by``
= a token unique to this claim, ``lease_expires_at``); a worker that dies leaves the lease to
expire, and the recording is claimed again (``attempts`` counts claims).

**Completing** is one transaction: a compare-and-set on the claim token (a worker whose lease
was taken over stores nothing: :class:`LeaseLostError`), the ``ModelRun`` row, the detections,
one outbox message listing them with a deterministic message id (one message per run: fewer,
larger messages suit slow links), and the recording's new state.
Several processors may cover one sensor: they take turns on a recording (one claim at a
time) and it becomes ``processed`` only when every processor in ``required`` has a ModelRun with
status ``ok`` or ``skipped``; until then it goes back to ``recorded`` for the next one
(docs/decisions/0031-processing-state.md).

Every function writes first, so each transaction holds the write lock before it reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol, cast

from sqlalchemy import Row, Table, and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from fieldstation.messages import DetectionBody, to_wire
from fieldstation.store.models import (
    UNFINISHED_HINT,
    Detection,
    ModelRun,
    Recording,
    unfinished,
)
from fieldstation.store.outbox import NewMessage, enqueue_many

__all__ = [
    "ClaimedRecording",
    "DETECTION_FIELDS",
    "DONE_STATUSES",
    "MESSAGE_NAMESPACE",
    "DetectionLike",
    "LeaseLostError",
    "RunInfo",
    "claim_next",
    "claim_token",
    "complete",
    "count_pending",
    "detection_message_id",
    "expire_leases",
    "fail",
    "file_missing",
    "latest_detection_counts",
    "in_latest_run",
    "is_reanalysis",
    "list_run_detections",
    "quarantine",
    "release",
    "reprocessable",
    "worker_id",
]

DONE_STATUSES = ("ok", "skipped")
"""ModelRun statuses that count as "this processor is done with this recording"."""
DETECTION_FIELDS = ("label", "score", "start", "end", "low_hz", "high_hz", "detected_at", "extra")
"""Fields of each item of a detection message's ``detections`` list."""
MESSAGE_NAMESPACE = uuid.UUID("6f1c1f0e-3b7a-5d0e-9a57-5f1e1d5e7a01")
"""UUID5 namespace of detection message ids (fixed forever: ids must stay stable)."""


class LeaseLostError(RuntimeError):
    """The claim token no longer holds the recording (the lease expired and another worker took
    it, or an operator reset it). Nothing was stored; the other holder will finish the work."""


class DetectionLike(Protocol):
    """What :func:`complete` reads from a detection (``processing.model.Detection`` fits)."""

    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def low_hz(self) -> float | None: ...
    @property
    def high_hz(self) -> float | None: ...
    @property
    def extra(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RunInfo:
    """One model run: processor name, model plugin, model version, when it started (UTC),
    how long it took (seconds), status (``ok`` or ``skipped``), and an optional note."""

    processor: str
    model: str
    model_version: str
    started_at: datetime
    duration: float
    status: str = "ok"
    note: str | None = None
    run_key: str = ""
    """Distinguishes deliberate re-runs (``reprocess``) in message ids; empty for normal runs."""
    thumbnail: str | None = None
    """The run's thumbnail image (video models), relative to the station home: kept in the
    recording's ``extra["thumbnails"][processor]``."""
    run_id: str = ""
    """The run's identity (a UUID; empty: :func:`complete` makes one), stored in
    ``model_runs.run_id`` and carried by its detection message (decision 0135)."""


_DETECTIONS = cast(Table, Detection.__table__)
_RECORDINGS = cast(Table, Recording.__table__)
_MODEL_RUNS = cast(Table, ModelRun.__table__)

ClaimedRecording = Row[Any]
"""A claimed recording: the ``recordings`` row's values by column name (``row.id``,
``row.path``, ``row.sample_rate`` ...), as :func:`claim_next` returns them."""


def _claimable(rec: Any, now: Any) -> ColumnElement[bool]:
    return or_(
        rec.state == "recorded",
        and_(rec.state == "processing", rec.lease_expires_at <= now),
    )


def _not_done_by(rec: Any, processor: str) -> ColumnElement[bool]:
    return ~exists().where(
        ModelRun.recording_id == rec.id,
        ModelRun.processor == processor,
        ModelRun.status.in_(DONE_STATUSES),
    )


def _candidates(
    rec: Any, processor: str, sensors: Collection[str] | None, now: Any, media: str | None
) -> list[ColumnElement[bool]]:
    where = [
        unfinished(rec.id.table.name),  # the partial index: no row read when none waits
        _claimable(rec, now),
        rec.file_state == "present",
        _not_done_by(rec, processor),
    ]
    if sensors is not None:
        where.append(rec.sensor.in_(list(sensors)))
    if media is not None:
        where.append(rec.media == media)
    return where


@lru_cache(maxsize=64)
def _claim_statement(processor: str, sensors: tuple[str, ...] | None, media: str | None) -> Any:
    """The claim UPDATE of :func:`claim_next`, built once per processor (bind parameters:
    ``now``, ``token``, ``lease_until``): building it costs more than running it. Core, not
    ORM: the worker needs the row's values, not a tracked object, and the ORM's bookkeeping
    cost more than the statement itself (bench/processing.py)."""
    now = bindparam("now", type_=_RECORDINGS.c.lease_expires_at.type)
    candidate = _RECORDINGS.alias("candidate")  # not correlated with the UPDATE's own table
    oldest = (
        select(candidate.c.id)
        .where(*_candidates(candidate.c, processor, sensors, now, media))
        .order_by(candidate.c.started_at, candidate.c.id)
        .limit(1)
        .with_hint(candidate, UNFINISHED_HINT, "sqlite")
        .scalar_subquery()
    )
    return (
        update(_RECORDINGS)
        .where(_RECORDINGS.c.id == oldest, _claimable(_RECORDINGS.c, now))
        .values(
            state="processing",
            claimed_by=bindparam("token"),
            lease_expires_at=bindparam("lease_until", type_=now.type),
            attempts=_RECORDINGS.c.attempts + 1,
        )
        .returning(*_RECORDINGS.c)
    )


def worker_id(processor: str, pid: int) -> str:
    """The id of processor ``processor``'s worker process ``pid``: ``<processor>@<pid>``."""
    return f"{processor}@{pid}"


def claim_token(worker: str) -> str:
    """A new claim token of ``worker`` (see :func:`worker_id`): ``<worker>#<12 hex digits>``."""
    return f"{worker}#{uuid.uuid4().hex[:12]}"


def expire_leases(session: Session, *, now: datetime, worker: str | None = None) -> int:
    """End the leases held by ``worker`` (a :func:`worker_id`), or by every worker if None.

    For a supervisor that knows the worker is dead (its process ended, or a new runtime holds
    the station lock): its recordings become claimable now instead of when the lease runs out.
    The state stays ``processing`` with ``lease_expires_at = now``, which :func:`claim_next`
    treats as expired; a worker that is in fact alive loses its claim (:class:`LeaseLostError`
    at completion) and never stores twice. Returns the number of recordings released.
    """
    statement = update(Recording).where(
        Recording.state == "processing", Recording.lease_expires_at > now
    )
    if worker is not None:
        statement = statement.where(Recording.claimed_by.like(f"{worker}#%"))
    result = session.execute(statement.values(lease_expires_at=now))
    return int(getattr(result, "rowcount", 0) or 0)


def claim_next(
    session: Session,
    *,
    processor: str,
    sensors: Collection[str] | None,
    token: str,
    now: datetime,
    lease: float,
    max_attempts: int,
    media: str | None = None,
) -> ClaimedRecording | None:
    """Claim the oldest recording ``processor`` has still to analyse; None when there is none.

    Candidates: ``state == 'recorded'``, or ``'processing'`` with a lease expired
    (``<= now``); file present; from ``sensors`` (None: any); of ``media`` (the media of the
    processor's model: ``audio``, ``video``, ``readings``; None: any); no ModelRun of
    ``processor`` with a done status. The claim sets ``state='processing'``, ``claimed_by=token``,
    ``lease_expires_at = now + lease`` (seconds) and increments ``attempts``. A candidate whose
    ``attempts`` had already reached ``max_attempts`` (its worker died on the last attempt) is
    marked ``failed`` instead, in the same transaction, and the next candidate is tried.
    Returns the claimed row's values as they are after the claim (not an ORM object).
    """
    key = None if sensors is None else tuple(sorted(sensors))
    claim = _claim_statement(processor, key, media)
    params = {"now": now, "token": token, "lease_until": now + timedelta(seconds=lease)}
    while True:
        recording = session.execute(claim, params).one_or_none()
        if recording is None or recording.attempts <= max_attempts:
            return recording
        session.execute(
            update(_RECORDINGS)
            .where(_RECORDINGS.c.id == recording.id)
            .values(
                attempts=recording.attempts - 1,  # this claim was not an attempt
                state="failed",
                claimed_by=None,
                lease_expires_at=None,
                last_error=(
                    f"{recording.last_error or ''} [lease expired on the last of {max_attempts} "
                    "attempts: worker died?]"
                ).strip(),
            )
        )


def count_pending(
    session: Session,
    *,
    processor: str,
    sensors: Collection[str] | None,
    media: str | None = None,
) -> int:
    """How many recordings ``processor`` has still to analyse (claimable or claimed), of
    ``media`` (None: any)."""
    where = [
        unfinished(),
        Recording.file_state == "present",
        _not_done_by(Recording, processor),
    ]
    if sensors is not None:
        where.append(Recording.sensor.in_(list(sensors)))
    if media is not None:
        where.append(Recording.media == media)
    query = select(func.count()).select_from(Recording).where(*where)
    return int(session.scalar(query.with_hint(Recording, UNFINISHED_HINT, "sqlite")) or 0)


def reprocessable(
    session: Session,
    *,
    processor: str,
    sensors: Collection[str] | None,
    since: datetime | None = None,
    media: str | None = None,
) -> list[Recording]:
    """Recordings ``processor`` may run on (``fieldstation reprocess``), oldest first: file
    present, from ``sensors`` (None: any), of ``media`` (None: any), started at or after
    ``since``, and either ``processed`` or ``failed`` (whether ``processor`` ran on them before
    or not: a processor added to a station, or a model never run on them) or ``recorded`` and
    **already done by** ``processor`` (waiting for another processor).

    A ``recorded`` recording ``processor`` has not done yet is left to its worker: a run stored
    without a claim does not change the recording's state, yet counts as done, so the worker
    would never claim it and it would stay ``recorded`` for good. No worker ever claims a
    ``processed`` or ``failed`` one, so it is safe to run on it here."""
    query = select(Recording).where(
        Recording.file_state == "present",
        or_(
            Recording.state.in_(("processed", "failed")),
            and_(Recording.state == "recorded", ~_not_done_by(Recording, processor)),
        ),
    )
    if sensors is not None:
        query = query.where(Recording.sensor.in_(list(sensors)))
    if since is not None:
        query = query.where(Recording.started_at >= since)
    if media is not None:
        query = query.where(Recording.media == media)
    return list(session.scalars(query.order_by(Recording.started_at, Recording.id)))


def _latest(run: Any) -> ColumnElement[bool]:
    """``run`` (a ModelRun entity or alias) is the latest done run of its processor on its
    recording: no later (higher id) done run of that processor on that recording."""
    later = aliased(ModelRun)
    return ~exists().where(
        later.recording_id == run.recording_id,
        later.processor == run.processor,
        later.status.in_(DONE_STATUSES),
        later.id > run.id,
    )


def is_reanalysis(run: Any) -> ColumnElement[bool]:
    """``run`` (a ModelRun entity or alias) is a **re-analysis**: its processor had already
    finished a run on its recording before it (a done run with a lower id), as ``fieldstation
    reprocess`` stores them. The first done run of each processor on each recording (the
    worker's, or a processor's first run through ``reprocess --model``) is not one."""
    earlier = aliased(ModelRun)
    return exists().where(
        earlier.recording_id == run.recording_id,
        earlier.processor == run.processor,
        earlier.status.in_(DONE_STATUSES),
        earlier.id < run.id,
    )


def in_latest_run() -> ColumnElement[bool]:
    """A ``WHERE`` condition on :class:`Detection`: it belongs to the latest done run of its
    processor on its recording (what :func:`list_run_detections` lists by default), so a
    recording analysed again (``reprocess``) is not counted twice."""
    run = aliased(ModelRun)
    return exists().where(run.id == Detection.model_run_id, _latest(run))


def list_run_detections(
    session: Session,
    *,
    label: str | None = None,
    min_score: float | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    all_runs: bool = False,
) -> list[tuple[Detection, Recording, ModelRun]]:
    """Detections (newest first: ``detected_at`` then ``id`` descending) with their recording
    and model run, filtered by label, minimum score (0..1) and time (``detected_at >= since``),
    at most ``limit`` (None: all).

    By default only the detections of the **latest** run of each processor on each recording
    (see ``reprocess``): a recording analysed twice by one processor is not counted twice,
    while the runs of other processors on it still show. ``all_runs``: every run's."""
    query = (
        select(Detection, Recording, ModelRun)
        .join(Recording, Recording.id == Detection.recording_id)
        .join(ModelRun, ModelRun.id == Detection.model_run_id)
        .order_by(Detection.detected_at.desc(), Detection.id.desc())
    )
    if not all_runs:
        query = query.where(_latest(ModelRun))
    if label is not None:
        query = query.where(Detection.label == label)
    if min_score is not None:
        query = query.where(Detection.score >= min_score)
    if since is not None:
        query = query.where(Detection.detected_at >= since)
    if limit is not None:
        query = query.limit(limit)
    return [(row[0], row[1], row[2]) for row in session.execute(query)]


def latest_detection_counts(session: Session, recording_ids: Collection[int]) -> dict[int, int]:
    """Detections per recording of ``recording_ids`` counting the latest done run of each
    processor only (as :func:`list_run_detections` lists them); recordings without a run are
    left out (count 0)."""
    if not recording_ids:
        return {}
    query = (
        select(ModelRun.recording_id, func.sum(ModelRun.n_detections))
        .where(
            ModelRun.recording_id.in_(list(recording_ids)),
            ModelRun.status.in_(DONE_STATUSES),
            _latest(ModelRun),
        )
        .group_by(ModelRun.recording_id)
    )
    return {int(rid): int(n or 0) for rid, n in session.execute(query)}


_FACT_COLUMNS = (
    _RECORDINGS.c.started_at,
    _RECORDINGS.c.sensor,
    _RECORDINGS.c.path,
    _RECORDINGS.c.sha256,
)
_FACTS = select(*_FACT_COLUMNS)
_HELD = and_(
    _RECORDINGS.c.id == bindparam("rid"),
    _RECORDINGS.c.state == "processing",
    _RECORDINGS.c.claimed_by == bindparam("token"),
)
_TAKE_OVER_FOR_COMPLETE = (
    update(_RECORDINGS)
    .where(_HELD)
    .values(lease_expires_at=bindparam("now"))
    .returning(*_FACT_COLUMNS)
)
_RELEASE = {"claimed_by": None, "lease_expires_at": None, "last_error": None}
_FINISHED: dict[str, Any] = {"state": "processed", "processed_at": bindparam("now"), **_RELEASE}
_TAKE_OVER_AND_FINISH = (  # the recording's only processor: take over and finish at once
    update(_RECORDINGS).where(_HELD).values(**_FINISHED).returning(*_FACT_COLUMNS)
)
_FINISH = update(_RECORDINGS).where(_RECORDINGS.c.id == bindparam("rid")).values(**_FINISHED)
_HAND_ON = (
    update(_RECORDINGS)
    .where(_RECORDINGS.c.id == bindparam("rid"))
    .values(state="recorded", attempts=0, **_RELEASE)
)


def release(session: Session, *, recording_id: int, token: str) -> bool:
    """Give back a claim that was never worked on (a worker stopping with a claim taken ahead,
    see ``ProcessorWorker``): the recording is ``recorded`` again and the claim does not count
    as an attempt. True when ``token`` still held it (else nothing changes)."""
    result = session.execute(
        update(_RECORDINGS)
        .where(_HELD)
        .values(
            state="recorded",
            attempts=_RECORDINGS.c.attempts - 1,
            claimed_by=None,
            lease_expires_at=None,
        ),
        {"rid": recording_id, "token": token},
    )
    return bool(getattr(result, "rowcount", 0))


def _lost(recording_id: int, token: str) -> LeaseLostError:
    return LeaseLostError(
        f"recording {recording_id} is no longer claimed by {token}: its lease expired and "
        "another worker took it; nothing was stored"
    )


def _take_over(
    session: Session, recording_id: int, token: str, values: dict[str, Any]
) -> Recording:
    """Compare-and-set on the claim token, returning the row; raises :class:`LeaseLostError`
    when the token no longer holds it."""
    recording = session.scalars(
        update(Recording)
        .where(
            Recording.id == recording_id,
            Recording.state == "processing",
            Recording.claimed_by == token,
        )
        .values(**values)
        .returning(Recording)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).one_or_none()
    if recording is None:
        raise _lost(recording_id, token)
    return recording


def detection_message_id(station_id: str, recording: Any, processor: str, run_key: str = "") -> str:
    """Deterministic id of the detection message of one run (UUID5 of station, recording path
    and hash, processor, run key): a retry of the same run yields the same id, so the outbox's
    unique ``message_id`` forbids a second copy. ``recording``: anything with ``path`` and
    ``sha256`` (a Recording row)."""
    name = f"{station_id}/{recording.path}/{recording.sha256}/{processor}/{run_key}"
    return str(uuid.uuid5(MESSAGE_NAMESPACE, name))


def complete(
    session: Session,
    *,
    recording_id: int,
    token: str | None,
    run: RunInfo,
    detections: Sequence[DetectionLike],
    required: Collection[str],
    destinations: Sequence[str],
    station_id: str,
    now: datetime,
) -> int:
    """Store a finished run in the caller's transaction (commit = all of it, or nothing);
    returns the new ModelRun's id.

    ``token``: the claim token (None: no claim is held, as in ``reprocess``; the recording's
    state is then left alone, so give only recordings ``run.processor`` has already done:
    :func:`reprocessable`). Writes the ModelRun, one Detection per item (``detected_at`` =
    recording start + ``start`` seconds) and, when there are detections, ONE ``detection``
    outbox message for ``destinations`` whose body lists them all (``recording_id``, ``sensor``,
    ``recording_started_at``, ``processor``, ``model``, ``model_version``, ``detections``: dicts
    of :data:`DETECTION_FIELDS`, times ISO 8601 UTC, seconds from the recording start).
    A ``run.thumbnail`` is kept in the recording's ``extra["thumbnails"][run.processor]``.
    Then the recording becomes ``processed`` when every processor named in ``required`` has a
    done ModelRun, else ``recorded`` again for the next processor.
    Raises :class:`LeaseLostError` when ``token`` no longer holds the claim, ``LookupError``
    when there is no such recording.
    """
    others = set(required) - {run.processor}
    finish_now = not others and run.status in DONE_STATUSES
    if token is not None:
        recording = session.execute(
            _TAKE_OVER_AND_FINISH if finish_now else _TAKE_OVER_FOR_COMPLETE,
            {"rid": recording_id, "token": token, "now": now},
        ).one_or_none()
        if recording is None:
            raise _lost(recording_id, token)
    else:
        recording = session.execute(_FACTS.where(Recording.id == recording_id)).one_or_none()
        if recording is None:
            raise LookupError(f"no recording with id {recording_id}")
    run_uuid = run.run_id or str(uuid.uuid4())
    run_id = session.execute(
        insert(_MODEL_RUNS).returning(_MODEL_RUNS.c.id),
        {
            "run_id": run_uuid,
            "recording_id": recording_id,
            "processor": run.processor,
            "model": run.model,
            "model_version": run.model_version,
            "status": run.status,
            "error": run.note,
            "started_at": run.started_at,
            "duration": run.duration,
            "n_detections": len(detections),
        },
    ).scalar_one()
    rows: list[dict[str, Any]] = [
        {
            "recording_id": recording_id,
            "model_run_id": run_id,
            "label": item.label,
            "score": float(item.score),
            "start": float(item.start),
            "end": float(item.end),
            "low_hz": item.low_hz,
            "high_hz": item.high_hz,
            "detected_at": recording.started_at + timedelta(seconds=item.start),
            "extra": dict(item.extra),
        }
        for item in detections
    ]
    if rows:
        session.execute(insert(_DETECTIONS), rows)  # Core executemany: no ORM bookkeeping
        # validated from plain dicts in one call (pydantic-core, no Python per item)
        body = to_wire(
            DetectionBody.model_validate(
                {
                    "recording_id": recording_id,
                    "sensor": recording.sensor,
                    "recording_started_at": recording.started_at,
                    "processor": run.processor,
                    "model": run.model,
                    "model_version": run.model_version,
                    "run_id": run_uuid,  # the run's identity (decision 0135)
                    "detections": [{k: row[k] for k in DETECTION_FIELDS} for row in rows],
                }
            )
        )
        message = NewMessage(
            kind="detection",
            body=body,
            destinations=destinations,
            message_id=detection_message_id(station_id, recording, run.processor, run.run_key),
            recording_id=recording_id,
        )
        # the bulk path writes through the cursor on SQLite: no ORM unit of work per message
        enqueue_many(session, [message], now=now, station_id=station_id)
    if run.thumbnail is not None:
        _keep_thumbnail(session, recording_id, run.processor, run.thumbnail)
    if token is not None and not finish_now:
        done = others and set(
            session.scalars(
                select(ModelRun.processor).where(
                    ModelRun.recording_id == recording_id, ModelRun.status.in_(DONE_STATUSES)
                )
            )
        )
        finished = run.status in DONE_STATUSES and (not others or others <= done)
        session.execute(_FINISH if finished else _HAND_ON, {"rid": recording_id, "now": now})
    return int(run_id)


def _keep_thumbnail(session: Session, recording_id: int, processor: str, path: str) -> None:
    """Set ``extra["thumbnails"][processor] = path`` on the recording (other keys kept)."""
    extra = session.execute(
        select(_RECORDINGS.c.extra).where(_RECORDINGS.c.id == recording_id)
    ).scalar_one()
    extra = dict(extra or {})
    extra["thumbnails"] = {**extra.get("thumbnails", {}), processor: path}
    session.execute(update(_RECORDINGS).where(_RECORDINGS.c.id == recording_id).values(extra=extra))


def fail(
    session: Session,
    *,
    recording_id: int,
    token: str,
    error: str,
    max_attempts: int,
    now: datetime,
) -> str:
    """Record a failed attempt; returns the new state: ``recorded`` (will be retried) or
    ``failed`` (``attempts`` reached ``max_attempts``). ``last_error`` keeps ``error``.
    Raises :class:`LeaseLostError` when ``token`` no longer holds the claim."""
    recording = _take_over(session, recording_id, token, {"last_error": error[:4000]})
    state = "failed" if recording.attempts >= max_attempts else "recorded"
    recording.state = state
    recording.claimed_by = None
    recording.lease_expires_at = None
    session.flush()
    return state


def file_missing(
    session: Session, *, recording_id: int, token: str, error: str, now: datetime
) -> Recording:
    """Mark a claimed recording whose file is gone: ``state = 'failed'`` (never retried, as no
    attempt can succeed), ``file_state = 'missing'`` with ``deleted_at = now`` and
    ``delete_reason = 'missing'`` (as start-up recovery marks files it cannot find), and
    ``last_error = error``. Raises :class:`LeaseLostError` when ``token`` no longer holds the
    claim."""
    recording = _take_over(session, recording_id, token, {"last_error": error[:4000]})
    recording.state = "failed"
    recording.claimed_by = None
    recording.lease_expires_at = None
    recording.file_state = "missing"
    recording.deleted_at = now
    recording.delete_reason = "missing"
    session.flush()
    return recording


def quarantine(
    session: Session, *, recording_id: int, token: str, new_path: str, error: str, now: datetime
) -> Recording:
    """Mark an undecodable recording ``quarantined`` (never retried), pointing ``path`` at its
    new place ``new_path`` (relative to the station home) and keeping the old one in
    ``extra['quarantined_from']``. The caller moves the file before committing.
    Raises :class:`LeaseLostError` when ``token`` no longer holds the claim."""
    recording = _take_over(session, recording_id, token, {"last_error": error[:4000]})
    recording.extra = {
        **(recording.extra or {}),
        "quarantined_from": recording.path,
        "quarantined_at": now.isoformat(),
    }
    recording.path = new_path
    recording.state = "quarantined"
    recording.claimed_by = None
    recording.lease_expires_at = None
    session.flush()
    return recording
