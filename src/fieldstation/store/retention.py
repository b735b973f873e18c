"""Repository queries of retention and of the data commands: set-based SQL over recordings.

Every deletion is one ``UPDATE ... RETURNING`` that re-checks the protections in its WHERE
clause, so a recording claimed, pinned or announced meanwhile by another process is never
marked (compare-and-set, docs/architecture.md). Rows are never removed: ``file_state`` becomes
``deleted`` with ``delete_reason`` and ``deleted_at``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    and_,
    exists,
    false,
    func,
    not_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from fieldstation.store.models import Delivery, Detection, Message, Recording
from fieldstation.store.uploads import UploadSelection, awaiting_upload

__all__ = [
    "DONE_STATES",
    "UNSENT_STATES",
    "Protection",
    "RecordingNotFoundError",
    "deletable",
    "deleted_paths",
    "list_detections",
    "last_event_kind",
    "list_recordings",
    "mark_deleted",
    "mark_oldest_deleted",
    "no_detection_kept",
    "present_bytes",
    "sensor_clause",
    "set_pinned",
]

DONE_STATES = ("processed", "failed", "quarantined")
"""Recording states after processing: only these may be deleted (recorded/processing never)."""


class RecordingNotFoundError(LookupError):
    """No recording has the given id."""


UNSENT_STATES = ("pending", "dead", "dropped")
"""Delivery states of a ``recording`` notice that protect its recording: every state but
``sent``. A notice dropped by the outbox's byte cap or dead-lettered (rejected, or older than
``outbox.max_age``) was never uploaded, so its recording is kept until the notice is sent
(``fieldstation outbox CONFIG retry`` moves dead letters back to pending)."""


@dataclass(frozen=True)
class Protection:
    """What protects a recording besides being unprocessed: pins always, and optionally
    a ``recording`` notice not yet sent to some destination, a place among the best
    ``best_per_label``, and an upload the hub has not confirmed."""

    protect_unsent: bool = True
    best_per_label: int = 0
    upload: UploadSelection | None = None
    """When upload is configured (``[upload]``): what it chooses; such recordings, and those
    the ``upload`` command asked for, wait for the hub's confirmation."""


def _unsent_ids() -> ColumnElement[bool]:
    """Recordings with a ``recording`` notice not ``sent`` to some destination (pending,
    dead or dropped: see :data:`UNSENT_STATES`; one scan of deliveries)."""
    subquery = (
        select(Message.recording_id)
        .join(Delivery, Delivery.message_pk == Message.id)
        .where(
            Delivery.state.in_(UNSENT_STATES),
            Message.kind == "recording",
            Message.recording_id.is_not(None),
        )
    )
    return Recording.id.in_(subquery)


def _best_ids(n: int) -> ColumnElement[bool]:
    """Recordings holding one of the ``n`` best scores of some label (present files only)."""
    per_recording = (
        select(
            Detection.recording_id.label("recording_id"),
            Detection.label.label("label"),
            func.max(Detection.score).label("score"),
        )
        .join(Recording, Recording.id == Detection.recording_id)
        .where(Recording.file_state == "present")
        .group_by(Detection.recording_id, Detection.label)
        .subquery()
    )
    ranked = select(
        per_recording.c.recording_id,
        func.row_number()
        .over(
            partition_by=per_recording.c.label,
            order_by=(per_recording.c.score.desc(), per_recording.c.recording_id),
        )
        .label("rank"),
    ).subquery()
    return Recording.id.in_(select(ranked.c.recording_id).where(ranked.c.rank <= n))


def deletable(protection: Protection) -> ColumnElement[bool]:
    """WHERE clause: present, processed (or failed/quarantined), not pinned, not protected."""
    clauses: list[ColumnElement[bool]] = [
        Recording.file_state == "present",
        Recording.state.in_(DONE_STATES),
        Recording.pinned.is_(False),
    ]
    if protection.protect_unsent:
        clauses.append(not_(_unsent_ids()))
    if protection.best_per_label > 0:
        clauses.append(not_(_best_ids(protection.best_per_label)))
    if protection.upload is not None:
        clauses.append(not_(awaiting_upload(protection.upload)))
    return and_(*clauses)


def sensor_clause(
    sensors: Sequence[str] | None, exclude: Sequence[str] = ()
) -> ColumnElement[bool]:
    """Recordings of ``sensors`` (None: any sensor) except those of ``exclude``."""
    clause: ColumnElement[bool] = true() if sensors is None else Recording.sensor.in_(sensors)
    if exclude:
        clause = and_(clause, Recording.sensor.not_in(exclude))
    return clause


def no_detection_kept(labels: Sequence[str] | None, min_score: float) -> ColumnElement[bool]:
    """Recordings without a detection that would keep them (label in ``labels``, score ≥ min)."""
    conditions: list[ColumnElement[bool]] = [
        Detection.recording_id == Recording.id,
        Detection.score >= min_score,
    ]
    if labels is not None:
        conditions.append(Detection.label.in_(labels) if labels else false())
    return not_(exists(select(Detection.id).where(*conditions)))


def mark_deleted(
    session: Session, where: ColumnElement[bool], *, reason: str, now: datetime
) -> list[tuple[int, str, int]]:
    """Mark every recording matching ``where`` deleted; returns (id, path, bytes) of each."""
    statement = (
        update(Recording)
        .where(where)
        .values(file_state="deleted", delete_reason=reason, deleted_at=now)
        .returning(Recording.id, Recording.path, Recording.bytes)
        .execution_options(synchronize_session=False)
    )
    return [(int(r[0]), str(r[1]), int(r[2])) for r in session.execute(statement)]


def mark_oldest_deleted(
    session: Session, where: ColumnElement[bool], need: int, *, reason: str, now: datetime
) -> list[tuple[int, str, int]]:
    """Mark the oldest recordings matching ``where`` deleted until they hold ``need`` bytes.

    Oldest first by ``started_at`` (then id); a running byte total (SQL window function) picks
    the rows in one statement. Returns (id, path, bytes) of each; fewer bytes when not enough
    recordings are deletable.
    """
    if need <= 0:
        return []
    running = (
        select(
            Recording.id.label("id"),
            Recording.bytes.label("bytes"),
            func.sum(Recording.bytes)
            .over(order_by=(Recording.started_at, Recording.id))
            .label("total"),
        )
        .where(where)
        .subquery()
    )
    chosen = select(running.c.id).where(running.c.total - running.c.bytes < need)
    return mark_deleted(session, and_(Recording.id.in_(chosen), where), reason=reason, now=now)


def present_bytes(session: Session) -> int:
    """Bytes of all recordings whose file is present (the data folder as the database knows it)."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(Recording.bytes), 0)).where(
                Recording.file_state == "present"
            )
        )
        or 0
    )


def deleted_paths(session: Session, among: Collection[str] | None = None) -> Iterator[str]:
    """Paths (relative to the home) of recordings marked deleted, streamed.

    ``among``: only those of these paths (e.g. the files found on disk), looked up by the
    unique path index 500 at a time: the cost follows ``len(among)``, not the archive (a
    station's deleted rows are most of its rows; decision 0120). None: every deleted row.
    """
    if among is None:
        result = session.execute(
            select(Recording.path)
            .where(Recording.file_state == "deleted")
            .execution_options(yield_per=10_000)
        )
        for row in result:
            yield str(row[0])
        return
    paths = sorted(among)
    for first in range(0, len(paths), 500):
        chunk = paths[first : first + 500]
        # by path only: with a term on file_state too, SQLite (no statistics) would rather
        # walk ix_recordings_file_state_started, every deleted row
        rows = session.execute(
            select(Recording.path, Recording.file_state).where(Recording.path.in_(chunk))
        )
        yield from (str(path) for path, state in rows if state == "deleted")


def set_pinned(session: Session, recording_id: int, pinned: bool) -> Recording:
    """Pin (never delete) or unpin a recording; raises :class:`RecordingNotFoundError`."""
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise RecordingNotFoundError(
            f"no recording with id {recording_id}; list them with `fieldstation recordings`"
        )
    recording.pinned = pinned
    return recording


def list_recordings(
    session: Session,
    *,
    state: str | None = None,
    file_state: str | None = None,
    since: datetime | None = None,
    limit: int | None = 100,
    before: tuple[datetime, int] | None = None,
) -> list[tuple[Recording, int]]:
    """Recordings (newest first: ``started_at`` then ``id`` descending) with their detection
    counts, filtered by state and start.

    ``before``: the ``(started_at, id)`` of the last row of the previous page; the page holds
    the rows after it (keyset pagination: the cost of a page does not grow with how far back
    it is, nor with the size of the archive; ``ix_recordings_started``). Detections are
    counted for the rows of the page only (a correlated count on ``ix_detections_recording_id``).
    """
    count = (
        select(func.count(Detection.id))
        .where(Detection.recording_id == Recording.id)
        .correlate(Recording)
        .scalar_subquery()
    )
    query = select(Recording, count).order_by(Recording.started_at.desc(), Recording.id.desc())
    if state is not None:
        query = query.where(Recording.state == state)
    if file_state is not None:
        query = query.where(Recording.file_state == file_state)
    if since is not None:
        query = query.where(Recording.started_at >= since)
    if before is not None:
        query = query.where(tuple_(Recording.started_at, Recording.id) < tuple_(*before))
    if limit is not None:
        query = query.limit(limit)
    return [(row[0], int(row[1])) for row in session.execute(query)]


def list_detections(
    session: Session,
    *,
    label: str | None = None,
    min_score: float | None = None,
    since: datetime | None = None,
    limit: int | None = 100,
) -> list[tuple[Detection, Recording]]:
    """Detections (newest first) with their recordings, filtered by label, score and time."""
    query = (
        select(Detection, Recording)
        .join(Recording, Recording.id == Detection.recording_id)
        .order_by(Detection.detected_at.desc(), Detection.id.desc())
    )
    if label is not None:
        query = query.where(Detection.label == label)
    if min_score is not None:
        query = query.where(Detection.score >= min_score)
    if since is not None:
        query = query.where(Detection.detected_at >= since)
    if limit is not None:
        query = query.limit(limit)
    return [(row[0], row[1]) for row in session.execute(query)]


def last_event_kind(session: Session, *, source: str, kinds: Sequence[str]) -> str | None:
    """Kind of the newest event from ``source`` among ``kinds`` (e.g. disk_low / disk_ok)."""
    from fieldstation.store.models import Event

    return session.scalars(
        select(Event.kind)
        .where(Event.source == source, Event.kind.in_(kinds))
        .order_by(Event.id.desc())
        .limit(1)
    ).first()
