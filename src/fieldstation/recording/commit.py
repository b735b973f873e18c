"""Committing a finished chunk: rename into ``data/``, fsync, then one database transaction.

Order (docs/architecture.md, decision record 0022): the closed chunk is fsynced in ``spool/``; it is
renamed into ``data/<sensor>/<YYYY-MM-DD>/`` (folders created on the way are fsynced into their
parents) and both folders are fsynced; then one transaction inserts the recording row and
enqueues its ``recording`` outbox message; then the sidecar is deleted. A crash at any point
leaves a state that :mod:`fieldstation.recording.recovery` completes: nothing committed is
lost, nothing is recorded twice.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from fieldstation.config.station import StationConfig
from fieldstation.home import StationHome, fsync_dir, make_dirs_durably
from fieldstation.messages import RecordingBody, to_wire
from fieldstation.recording.chunk import FinishedChunk
from fieldstation.store.db import Database
from fieldstation.store.models import Recording
from fieldstation.store.outbox import enqueue
from fieldstation.store.recordings import find_by_path, insert_recording

__all__ = ["commit_chunk", "insert_row", "message_id_for", "place_in_data"]


def message_id_for(station: str, relpath: str) -> str:
    """Stable outbox message id of a recording: UUID5 of station and path (36 characters)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fieldstation:{station}:recording:{relpath}"))


def place_in_data(home: StationHome, audio: Path, relpath: str) -> str:
    """Rename the spool file ``audio`` to ``home.root / relpath`` (a free name: ``_1``, ``_2``
    ... is added when taken) and fsync both folders; returns the relative path used. Folders
    created on the way (a new sensor or day) are fsynced into their parents too, so a power
    cut cannot lose the day's folder entry and the files in it."""
    target = home.root / relpath
    make_dirs_durably(target.parent)
    n = 0
    while target.exists():
        n += 1
        base = Path(relpath)
        target = home.root / base.with_name(f"{base.stem}_{n}{base.suffix}")
    os.replace(audio, target)
    fsync_dir(target.parent)
    fsync_dir(audio.parent)
    return target.relative_to(home.root).as_posix()


def insert_row(
    db: Database,
    config: StationConfig,
    chunk: FinishedChunk,
    relpath: str,
    now: datetime,
) -> Recording:
    """Insert the recording row and its outbox message in one transaction; returns the row.

    Idempotent: an existing row for ``relpath`` is returned unchanged.
    """
    spec = chunk.spec
    with db.session() as session:
        existing = find_by_path(session, relpath)
        if existing is not None:
            return existing
        row = insert_recording(
            session,
            deployment_id=spec.deployment_id,
            sensor=spec.sensor,
            path=relpath,
            session_id=spec.session_id,
            capture_id=spec.capture_id,
            chunk_index=spec.chunk_index,
            start_frame=spec.start_frame,
            started_at=spec.started_at,
            duration=chunk.frames / spec.rate,
            media=spec.media,
            rate=spec.rate,
            channels=spec.channels,
            frames=chunk.frames,
            bytes=chunk.bytes,
            sha256=chunk.sha256,
            format=spec.format,
            end_reason=chunk.end_reason,
            created_at=now,
            extra=_row_extra(chunk),
        )
        media: dict[str, Any] = (
            {"sample_rate": spec.rate}  # the name consumers of audio messages know
            if spec.media == "audio"
            else {"stream": row.extra["stream"]}
        )
        body = to_wire(
            RecordingBody(
                recording_id=row.id,
                sensor=spec.sensor,
                path=relpath,
                session_id=spec.session_id,
                capture_id=spec.capture_id,
                chunk_index=spec.chunk_index,
                start_frame=spec.start_frame,
                started_at=spec.started_at,
                duration=row.duration,
                media=spec.media,
                rate=spec.rate,
                channels=spec.channels,
                frames=chunk.frames,
                bytes=chunk.bytes,
                sha256=chunk.sha256,
                format=spec.format,
                end_reason=chunk.end_reason,
                **media,
            )
        )
        enqueue(
            session,
            kind="recording",
            body=body,
            destinations=config.destinations_for("recording"),
            now=now,
            station_id=config.station.id,
            message_id=message_id_for(config.station.id, relpath),
            recording_id=row.id,
        )
    return row


def _row_extra(chunk: FinishedChunk) -> dict[str, Any]:
    """The row's ``extra``: the chunk's own, its session's anchor (``capture_anchor``) when it
    is in a session of several streams, and, for media other than audio, what is specific to
    the media (``stream``: frame shape, codec, fields and units)."""
    extra = dict(chunk.extra)
    if chunk.spec.capture_anchor is not None:
        extra["capture_anchor"] = chunk.spec.capture_anchor.isoformat()
        extra["capture_session"] = chunk.spec.capture_session
    stream = chunk.spec.stream
    if stream.media != "audio":
        extra["stream"] = {
            "shape": list(stream.shape),
            "dtype": stream.dtype,
            "codec": stream.codec,
            "fields": list(stream.fields),
            "units": list(stream.units),
        }
    return extra


def commit_chunk(
    db: Database, config: StationConfig, home: StationHome, chunk: FinishedChunk, now: datetime
) -> Recording:
    """Move a finished chunk into ``data/`` and record it (see the module docstring)."""
    relpath = place_in_data(home, chunk.audio, chunk.spec.relpath())
    row = insert_row(db, config, chunk, relpath, now)
    chunk.sidecar.unlink(missing_ok=True)
    return row
