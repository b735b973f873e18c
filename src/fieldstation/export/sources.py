"""What an export reads: detections, recordings or readings of the station database, in id
order, page by page, as columns (a dict of equal-length lists) ready for Arrow, CSV or SQL.

Columns and their units (times are aware UTC ``datetime``; seconds; Hz; bytes):

- ``detections``: id, recording_id, recording_path, sensor, processor, model, model_version,
  label, score, start (s from the recording start), end (s), low_hz, high_hz, detected_at,
  recording_started_at;
- ``recordings``: id, sensor, path, session_id, chunk_index, started_at, duration (s), media,
  rate (Hz), channels, frames, bytes, sha256, format, end_reason, state, file_state;
- ``readings``: id, sensor, quantity, unit, value, measured_at.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fieldstation.store.models import Detection, ModelRun, Reading, Recording

__all__ = ["COLUMNS", "What", "count_rows", "pages", "time_column"]

What = Literal["detections", "recordings", "readings"]

COLUMNS: dict[str, tuple[str, ...]] = {
    "detections": (
        "id",
        "recording_id",
        "recording_path",
        "sensor",
        "processor",
        "model",
        "model_version",
        "label",
        "score",
        "start",
        "end",
        "low_hz",
        "high_hz",
        "detected_at",
        "recording_started_at",
    ),
    "recordings": (
        "id",
        "sensor",
        "path",
        "session_id",
        "chunk_index",
        "started_at",
        "duration",
        "media",
        "rate",
        "channels",
        "frames",
        "bytes",
        "sha256",
        "format",
        "end_reason",
        "state",
        "file_state",
    ),
    "readings": ("id", "sensor", "quantity", "unit", "value", "measured_at"),
}
"""Column names of each kind of export, in order."""


def _columns(what: str) -> tuple[Any, Any, Any]:
    """(select statement, id column, time column) of ``what``."""
    if what == "detections":
        statement = (
            select(
                Detection.id,
                Detection.recording_id,
                Recording.path,
                Recording.sensor,
                ModelRun.processor,
                ModelRun.model,
                ModelRun.model_version,
                Detection.label,
                Detection.score,
                Detection.start,
                Detection.end,
                Detection.low_hz,
                Detection.high_hz,
                Detection.detected_at,
                Recording.started_at,
            )
            .join(Recording, Recording.id == Detection.recording_id)
            .join(ModelRun, ModelRun.id == Detection.model_run_id)
        )
        return statement, Detection.id, Detection.detected_at
    if what == "recordings":
        statement = select(*(getattr(Recording, name) for name in COLUMNS["recordings"]))
        return statement, Recording.id, Recording.started_at
    if what == "readings":
        statement = select(*(getattr(Reading, name) for name in COLUMNS["readings"]))
        return statement, Reading.id, Reading.measured_at
    raise ValueError(f"cannot export {what!r}: choose detections, recordings or readings")


def time_column(what: str) -> str:
    """The column ``--since`` filters on: detected_at, started_at or measured_at."""
    return {"detections": "detected_at", "recordings": "started_at", "readings": "measured_at"}[
        what
    ]


def count_rows(session: Session, what: str, after_id: int, since: datetime | None) -> int:
    """Rows :func:`pages` would yield (for a progress bar)."""
    statement, id_column, when = _columns(what)
    counted = select(func.count()).select_from(statement.where(id_column > after_id).subquery())
    if since is not None:
        counted = select(func.count()).select_from(
            statement.where(id_column > after_id, when >= since).subquery()
        )
    return int(session.scalar(counted) or 0)


def pages(
    session: Session, what: str, after_id: int, since: datetime | None, page: int = 50_000
) -> Iterator[dict[str, list[Any]]]:
    """Rows with ``id > after_id`` (and time ``>= since``), in id order, ``page`` rows at a
    time, each page as columns (:data:`COLUMNS`); times aware UTC."""
    statement, id_column, when = _columns(what)
    names = COLUMNS[what]
    last = after_id
    while True:
        query = statement.where(id_column > last)
        if since is not None:
            query = query.where(when >= since)
        rows = session.execute(query.order_by(id_column).limit(page)).all()
        if not rows:
            return
        columns: dict[str, list[Any]] = dict(
            zip(names, (list(column) for column in zip(*rows, strict=True)), strict=True)
        )
        last = columns["id"][-1]
        yield columns
        if len(rows) < page:
            return
