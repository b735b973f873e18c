"""Repository functions for recording rows (one row per committed chunk file).

The recorder inserts a row in the same transaction as the outbox message reporting it; start-up
recovery finds rows by path and marks rows whose file vanished as ``missing``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fieldstation.store.models import UNFINISHED_HINT, Recording, unfinished

__all__ = [
    "find_by_path",
    "insert_recording",
    "mark_missing",
    "present_paths",
    "session_recordings",
    "unconfirmed_paths",
]


def insert_recording(session: Session, **fields: Any) -> Recording:
    """Add a recording row (``state`` recorded, ``file_state`` present unless given), flushed
    so its ``id`` is set. ``fields`` are :class:`~fieldstation.store.models.Recording` columns;
    ``path`` is relative to the station home and unique (a duplicate raises ``IntegrityError``).
    """
    fields.setdefault("state", "recorded")
    fields.setdefault("file_state", "present")
    fields.setdefault("extra", {})
    recording = Recording(**fields)
    session.add(recording)
    session.flush()
    return recording


def find_by_path(session: Session, path: str) -> Recording | None:
    """The row of the file at ``path`` (relative to the home), or None."""
    return session.scalars(select(Recording).where(Recording.path == path)).first()


def present_paths(session: Session, sensor: str | None = None) -> dict[str, int]:
    """``{path: id}`` of rows whose file should be on disk (``file_state`` present)."""
    query = select(Recording.path, Recording.id).where(Recording.file_state == "present")
    if sensor is not None:
        query = query.where(Recording.sensor == sensor)
    return {path: rid for path, rid in session.execute(query)}


def unconfirmed_paths(session: Session) -> dict[str, int]:
    """``{path: id}`` of rows marked present that no processor has finished with yet (state
    ``recorded`` or ``processing``): the files start-up recovery checks. The partial index
    ``ix_recordings_unfinished`` finds them without reading the rest of the archive."""
    query = (
        select(Recording.path, Recording.id)
        .where(unfinished(), Recording.file_state == "present")
        .with_hint(Recording, UNFINISHED_HINT, "sqlite")
    )
    return {path: rid for path, rid in session.execute(query)}


def mark_missing(session: Session, ids: Iterable[int], now: datetime) -> int:
    """Set ``file_state = 'missing'`` on rows ``ids`` still marked present; returns the count.

    ``now`` is recorded as ``deleted_at`` with ``delete_reason = 'missing'``.
    """
    id_list = list(ids)
    if not id_list:
        return 0
    result = session.execute(
        update(Recording)
        .where(Recording.id.in_(id_list), Recording.file_state == "present")
        .values(file_state="missing", deleted_at=now, delete_reason="missing")
    )
    return int(getattr(result, "rowcount", 0) or 0)


def session_recordings(session: Session, session_id: str) -> list[Recording]:
    """Rows of one recording session, by chunk index."""
    query = (
        select(Recording).where(Recording.session_id == session_id).order_by(Recording.chunk_index)
    )
    return list(session.scalars(query))
