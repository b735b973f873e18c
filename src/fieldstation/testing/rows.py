"""Database rows for tests: recordings, model runs and detections with every required field set.

A test names only what it is about (start time, state, size, label, score); the rest gets
plain defaults: a 10 s mono 48 kHz WAV chunk of one session, end reason ``complete``.
Rows are added to the caller's session and flushed, so their ``id`` is set.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from fieldstation.store.models import Detection, ModelRun, Recording

__all__ = ["add_detection", "add_model_run", "add_recording"]


def add_recording(
    session: Session, *, deployment_id: int, started_at: datetime, **fields: Any
) -> Recording:
    """Add a recording row starting at ``started_at`` (aware UTC); ``fields`` override defaults.

    Defaults: sensor ``mic``, a unique ``data/<sensor>/<uuid>.wav`` path, 10 s at 48 kHz mono
    (480,000 frames), 10 bytes, state ``recorded``, file present, ``created_at = started_at``.
    """
    sensor = fields.get("sensor", "mic")
    values: dict[str, Any] = {
        "deployment_id": deployment_id,
        "sensor": sensor,
        "path": f"data/{sensor}/{uuid.uuid4()}.wav",
        "session_id": str(uuid.uuid4()),
        "chunk_index": 0,
        "start_frame": 0,
        "started_at": started_at,
        "duration": 10.0,
        "rate": 48000,
        "channels": 1,
        "frames": 480000,
        "bytes": 10,
        "sha256": "0" * 64,
        "format": "wav",
        "end_reason": "complete",
        "state": "recorded",
        "file_state": "present",
        "created_at": started_at,
        "extra": {},
    }
    values.update(fields)
    row = Recording(**values)
    session.add(row)
    session.flush()
    return row


def add_model_run(
    session: Session,
    recording_id: int,
    *,
    started_at: datetime,
    processor: str = "energy",
    n_detections: int = 0,
) -> ModelRun:
    """Add a successful (``ok``) run of model ``processor`` version 1 taking 0.1 s."""
    run = ModelRun(
        recording_id=recording_id,
        processor=processor,
        model=processor,
        model_version="1",
        status="ok",
        started_at=started_at,
        duration=0.1,
        n_detections=n_detections,
    )
    session.add(run)
    session.flush()
    return run


def add_detection(
    session: Session,
    run: ModelRun,
    *,
    label: str,
    score: float,
    detected_at: datetime,
    start: float = 0.0,
) -> Detection:
    """Add a 1 s detection of ``label`` (score 0..1) from ``start`` seconds into the recording."""
    detection = Detection(
        recording_id=run.recording_id,
        model_run_id=run.id,
        label=label,
        score=score,
        start=start,
        end=start + 1.0,
        detected_at=detected_at,
        extra={},
    )
    session.add(detection)
    session.flush()
    return detection
