"""What an export reads: detections, recordings, readings or model runs of the station
database, in id order, page by page, as columns (a dict of equal-length lists) ready for
Arrow, CSV or SQL.

Columns and their units (times are aware UTC ``datetime``; seconds; Hz; bytes):

- ``detections``: id, recording_id, recording_path, sensor, processor, model, model_version,
  label, score, start (s from the recording start), end (s), low_hz, high_hz, detected_at,
  recording_started_at, run_id (the run's UUID, as in detection messages), model_run_id (the
  run's number on the station: a later run has a higher one), reanalysis (the run is a
  re-analysis: its processor had finished a run on the recording before, ``reprocess``).
  Every run's detections, each once; :func:`pages` with ``latest_only`` gives only those of
  the latest run of each processor on each recording (as ``fieldstation detections`` lists);
- ``recordings``: id, sensor, path, session_id, chunk_index, started_at, duration (s), media,
  rate (Hz), channels, frames, bytes, sha256, format, end_reason, state, file_state;
- ``readings``: id, sensor, quantity, unit, value, measured_at;
- ``runs``: every model run, also those that found nothing: id (the ``model_run_id`` of the
  detections), run_id, recording_id, recording_path, processor, model, model_version, status
  (ok, skipped, error), started_at, duration (s), n_detections, reanalysis. The latest run of
  a processor on a recording is its done (ok, skipped) run with the highest id.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fieldstation.store.models import Detection, ModelRun, Reading, Recording
from fieldstation.store.processing import in_latest_run, is_reanalysis

__all__ = [
    "COLUMNS",
    "What",
    "count_rows",
    "pages",
    "recording_detections",
    "reanalysed_recordings",
    "time_column",
    "top_run",
]

What = Literal["detections", "recordings", "readings", "runs"]

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
        "run_id",
        "model_run_id",
        "reanalysis",
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
    "runs": (
        "id",
        "run_id",
        "recording_id",
        "recording_path",
        "processor",
        "model",
        "model_version",
        "status",
        "started_at",
        "duration",
        "n_detections",
        "reanalysis",
    ),
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
                ModelRun.run_id,
                Detection.model_run_id,
                is_reanalysis(ModelRun),
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
    if what == "runs":
        runs: Any = select(
            ModelRun.id,
            ModelRun.run_id,
            ModelRun.recording_id,
            Recording.path,
            ModelRun.processor,
            ModelRun.model,
            ModelRun.model_version,
            ModelRun.status,
            ModelRun.started_at,
            ModelRun.duration,
            ModelRun.n_detections,
            is_reanalysis(ModelRun),
        ).join(Recording, Recording.id == ModelRun.recording_id)
        return runs, ModelRun.id, ModelRun.started_at
    raise ValueError(f"cannot export {what!r}: choose {', '.join(COLUMNS)}")


def time_column(what: str) -> str:
    """The column ``--since`` filters on: detected_at, started_at or measured_at."""
    return {
        "detections": "detected_at",
        "recordings": "started_at",
        "readings": "measured_at",
        "runs": "started_at",
    }[what]


def _filtered(what: str, since: datetime | None, latest_only: bool) -> tuple[Any, Any]:
    """(statement with the filters, id column) of ``what``."""
    statement, id_column, when = _columns(what)
    if since is not None:
        statement = statement.where(when >= since)
    if latest_only and what == "detections":
        statement = statement.where(in_latest_run())
    return statement, id_column


def count_rows(
    session: Session,
    what: str,
    after_id: int,
    since: datetime | None,
    *,
    latest_only: bool = False,
) -> int:
    """Rows :func:`pages` would yield (for a progress bar)."""
    statement, id_column = _filtered(what, since, latest_only)
    counted = select(func.count()).select_from(statement.where(id_column > after_id).subquery())
    return int(session.scalar(counted) or 0)


def pages(
    session: Session,
    what: str,
    after_id: int,
    since: datetime | None,
    page: int = 50_000,
    *,
    latest_only: bool = False,
) -> Iterator[dict[str, list[Any]]]:
    """Rows with ``id > after_id`` (and time ``>= since``), in id order, ``page`` rows at a
    time, each page as columns (:data:`COLUMNS`); times aware UTC. ``latest_only``
    (detections): only those of the latest run of each processor on each recording."""
    statement, id_column = _filtered(what, since, latest_only)
    names = COLUMNS[what]
    last = after_id
    while True:
        query = statement.where(id_column > last)
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


def recording_detections(
    session: Session, recording_ids: list[int], up_to_id: int
) -> list[dict[str, Any]]:
    """The detections (``id <= up_to_id``) of the latest run of each processor on each of
    ``recording_ids``, each a dict of :data:`COLUMNS` ``["detections"]`` (a Raven table's
    rows)."""
    statement, _, _ = _columns("detections")
    names = COLUMNS["detections"]
    found = session.execute(
        statement.where(
            Detection.recording_id.in_(recording_ids), Detection.id <= up_to_id, in_latest_run()
        )
    ).all()
    return [dict(zip(names, row, strict=True)) for row in found]


def top_run(session: Session) -> int:
    """The highest model run id of the station (0: none)."""
    return int(session.scalar(select(func.max(ModelRun.id))) or 0)


def reanalysed_recordings(session: Session, after_run: int, up_to_run: int) -> dict[int, str]:
    """Recordings (id -> path) with a re-analysis run (``reprocess``,
    :func:`~fieldstation.store.processing.is_reanalysis`) of id in ``(after_run, up_to_run]``,
    whether it found anything or not: their latest detections may have changed, also to
    none."""
    rerun = (
        select(ModelRun.recording_id)
        .where(ModelRun.id > after_run, ModelRun.id <= up_to_run, is_reanalysis(ModelRun))
        .scalar_subquery()
    )
    found = session.execute(
        select(Recording.id, Recording.path).where(Recording.id.in_(rerun)).order_by(Recording.id)
    ).all()
    return {int(rid): str(path) for rid, path in found}
