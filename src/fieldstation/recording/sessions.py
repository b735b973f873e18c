"""Manifests of sessions of several streams (``[[sessions]]``, decision record 0070).

Every recorder of a session stamps its chunks with the session's ``capture_id`` and anchor
(the slot start, :func:`fieldstation.recording.job.capture_id_for`), each on its own; the
manifest is read back from the recording rows, so it is always complete and needs no writer
that all recorders share. For each stream it lists every chunk with its first frame's offset
from the session anchor, in seconds and in frames of that stream, so the files of a camera,
its IMU and a microphone line up to the frame.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fieldstation.store.models import Reading, Recording

__all__ = ["MANIFEST_VERSION", "capture_manifest", "list_captures"]

MANIFEST_VERSION = 1
"""Version of the manifest's JSON shape."""


def _micros(delta: Any) -> int:
    return int(delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds)


def capture_manifest(
    session: Session, capture_id: str, readings_sensors: tuple[str, ...] | list[str] = ()
) -> dict[str, Any] | None:
    """The manifest of the session of several streams ``capture_id``, or None when no chunk
    has it.

    Shape: ``{"version", "capture_id", "session", "anchor" (ISO UTC), "streams": {sensor:
    {"media", "rate" (Hz), "channels", "frames" (total), "chunks": [{"path", "recording_id",
    "started_at", "offset" (seconds from the anchor, microseconds exact), "offset_frames"
    (``round(offset * rate)``), "start_frame", "frames", "duration", "end_reason",
    "session_id", "file_state"}]}}, "readings": {sensor: [{"measured_at", "offset",
    "quantity", "unit", "value"}]}}``; chunks by start time. ``readings_sensors``: the slow
    sensors of the session (their values are rows, not chunks): the manifest lists their
    values measured from the anchor to the end of the session's last chunk.
    """
    rows = list(
        session.scalars(
            select(Recording)
            .where(Recording.capture_id == capture_id)
            .order_by(Recording.sensor, Recording.started_at, Recording.chunk_index)
        )
    )
    if not rows:
        return None
    first = rows[0]
    anchor_text = (first.extra or {}).get("capture_anchor")
    anchor = datetime.fromisoformat(anchor_text) if anchor_text else min(r.started_at for r in rows)
    streams: dict[str, Any] = {}
    for row in rows:
        stream = streams.setdefault(
            row.sensor,
            {
                "media": row.media,
                "rate": row.rate,
                "channels": row.channels,
                "frames": 0,
                "chunks": [],
            },
        )
        offset = _micros(row.started_at - anchor)
        stream["frames"] += row.frames
        stream["chunks"].append(
            {
                "path": row.path,
                "recording_id": row.id,
                "started_at": row.started_at.isoformat(),
                "offset": offset / 1_000_000,
                "offset_frames": (offset * row.rate * 2 + 1_000_000) // 2_000_000,
                "start_frame": row.start_frame,
                "frames": row.frames,
                "duration": row.duration,
                "end_reason": row.end_reason,
                "session_id": row.session_id,
                "file_state": row.file_state,
            }
        )
    name = str((first.extra or {}).get("capture_session") or "")
    end = max(r.started_at + timedelta(seconds=r.duration) for r in rows)
    readings: dict[str, list[dict[str, Any]]] = {}
    if readings_sensors:
        query = (
            select(Reading)
            .where(
                Reading.sensor.in_(list(readings_sensors)),
                Reading.measured_at >= anchor,
                Reading.measured_at < end,
            )
            .order_by(Reading.sensor, Reading.measured_at, Reading.quantity)
        )
        for value in session.scalars(query):
            readings.setdefault(value.sensor, []).append(
                {
                    "measured_at": value.measured_at.isoformat(),
                    "offset": _micros(value.measured_at - anchor) / 1_000_000,
                    "quantity": value.quantity,
                    "unit": value.unit,
                    "value": value.value,
                }
            )
    return {
        "version": MANIFEST_VERSION,
        "capture_id": capture_id,
        "session": name or None,
        "anchor": anchor.isoformat(),
        "streams": streams,
        "readings": readings,
    }


def list_captures(session: Session, since: datetime | None = None) -> list[dict[str, Any]]:
    """Sessions of several streams that have chunks (started at or after ``since``), newest
    first: ``[{"capture_id", "first" (ISO UTC start of its first chunk), "sensors" (sorted),
    "chunks", "bytes"}]``."""
    query = (
        select(
            Recording.capture_id,
            func.min(Recording.started_at),
            func.count(),
            func.sum(Recording.bytes),
        )
        .where(Recording.capture_id.is_not(None))
        .group_by(Recording.capture_id)
    )
    if since is not None:
        query = query.where(Recording.started_at >= since)
    found = []
    for capture_id, first, chunks, size in session.execute(query):
        sensors = sorted(
            session.scalars(
                select(Recording.sensor).where(Recording.capture_id == capture_id).distinct()
            )
        )
        found.append(
            {
                "capture_id": capture_id,
                "first": first.isoformat(),
                "sensors": sensors,
                "chunks": int(chunks),
                "bytes": int(size or 0),
            }
        )
    return sorted(found, key=lambda c: c["first"], reverse=True)
