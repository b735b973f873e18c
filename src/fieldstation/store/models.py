"""SQLAlchemy 2 models of the station database.

State lives here, not in memory (docs/architecture.md): a recording is a row before anyone
processes it, a message is a row before anyone sends it. All times are timezone-aware UTC
(stored naive UTC).
The schema is created and changed only by the Alembic migrations in ``store/migrations``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "CommandRow",
    "Delivery",
    "Deployment",
    "Detection",
    "Event",
    "Message",
    "ModelRun",
    "Reading",
    "Recording",
    "UNFINISHED",
    "UNFINISHED_HINT",
    "UTCDateTime",
    "Upload",
    "unfinished",
]


UNFINISHED = "state IN ('recorded', 'processing')"
"""Recordings a processor has still to look at: the condition of the partial index
``ix_recordings_unfinished`` (migration 0004). A query uses that index only when its WHERE
clause holds this very text (literal values, not bound parameters:
https://www.sqlite.org/partialindex.html), so queries take it from here (:func:`unfinished`)."""


UNFINISHED_HINT = "INDEXED BY ix_recordings_unfinished"
"""SQLite's hint naming the partial index, for :meth:`Select.with_hint` (dialect ``sqlite``).
Without statistics (the station never runs ``ANALYZE``) SQLite prefers an index with an
equality on ``file_state`` or ``sensor``, which walks every present file or every recording of
the sensor when none waits; the hint makes the claim read only unfinished rows (decision 0120,
tests/store/test_query_plans.py). PostgreSQL ignores it."""


def unfinished(table: str = "recordings") -> Any:
    """The WHERE term :data:`UNFINISHED` on ``table`` (a name or alias), as literal SQL."""
    return text(UNFINISHED.replace("state", f"{table}.state", 1))


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored as naive UTC and returned timezone-aware (UTC), to the microsecond.

    Raises ``ValueError`` when given a naive datetime: every time in fieldstation is aware.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of the station tables."""

    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Deployment(Base):
    """One config version of the station in force over a period."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station_id: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    fieldstation_version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column(default=None)


class Recording(Base):
    """One committed chunk file and its pipeline state.

    ``state``: ``recorded`` → ``processing`` (claimed, with a lease) → ``processed``; or
    ``failed`` (attempts exhausted) or ``quarantined`` (undecodable). ``file_state``: ``present``,
    ``deleted`` (by retention, with reason and time) or ``missing`` (gone without us).
    """

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"))
    sensor: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512), unique=True)
    """Path of the file relative to the station home (``data/<sensor>/<date>/<name>``)."""
    session_id: Mapped[str] = mapped_column(String(36))
    """Recording session (one slot): its chunks concatenate to the captured stream."""
    capture_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    """Session of several streams (``[[sessions]]``) the chunk belongs to: every stream of the
    session recorded in the same slot shares it (the manifest's key); None outside one."""
    chunk_index: Mapped[int] = mapped_column(Integer)
    start_frame: Mapped[int] = mapped_column(BigInteger)
    """Index of the chunk's first frame in the session stream."""
    started_at: Mapped[datetime] = mapped_column()
    """Session anchor + start_frame / rate, UTC, microseconds."""
    duration: Mapped[float] = mapped_column(Float)
    """Seconds (frames / rate)."""
    media: Mapped[str] = mapped_column(String(16), default="audio", server_default="audio")
    """``audio``, ``video`` or ``readings`` (an IMU stream); media-specific details (video
    size and codec, readings' fields) are in ``extra``."""
    rate: Mapped[int] = mapped_column(Integer)
    """Frames per second of the stream, Hz (audio sample rate, video frame rate, IMU rate)."""
    channels: Mapped[int] = mapped_column(Integer)
    """Size of the last axis of a frame: audio channels, 3 for RGB video, readings' fields."""
    frames: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8))
    end_reason: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="recorded")
    file_state: Mapped[str] = mapped_column(String(16), default="present")
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column()
    processed_at: Mapped[datetime | None] = mapped_column(default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)
    delete_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    detections: Mapped[list[Detection]] = relationship(back_populates="recording")

    __table_args__ = (
        Index("ix_recordings_state_started", "state", "started_at"),
        Index("ix_recordings_sensor_started", "sensor", "started_at"),
        Index("ix_recordings_file_state_started", "file_state", "started_at"),
        Index("ix_recordings_session", "session_id", "chunk_index"),
        Index("ix_recordings_started", "started_at"),
        Index(
            "ix_recordings_unfinished",
            "started_at",
            sqlite_where=text(UNFINISHED),
            postgresql_where=text(UNFINISHED),
        ),
    )


class ModelRun(Base):
    """One run of one model on one recording (kept for every model version)."""

    __tablename__ = "model_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), index=True)
    processor: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    """``ok`` or ``error``."""
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column()
    duration: Mapped[float] = mapped_column(Float)
    """Seconds the model took."""
    n_detections: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[str | None] = mapped_column(String(36), default=None)
    """The run's identity in messages and exports: a UUID (``run-<id>`` for runs stored before
    migration 0005); ``model_version`` tells model file and settings apart (decision 0135)."""

    __table_args__ = (Index("ix_model_runs_run_id", "run_id", unique=True),)


class Detection(Base):
    """Something a model found in a recording."""

    __tablename__ = "detections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), index=True)
    model_run_id: Mapped[int] = mapped_column(ForeignKey("model_runs.id"), index=True)
    label: Mapped[str] = mapped_column(String(256))
    score: Mapped[float] = mapped_column(Float)
    start: Mapped[float] = mapped_column(Float)
    """Seconds from the recording start."""
    end: Mapped[float] = mapped_column(Float)
    low_hz: Mapped[float | None] = mapped_column(Float, default=None)
    high_hz: Mapped[float | None] = mapped_column(Float, default=None)
    detected_at: Mapped[datetime] = mapped_column()
    """Absolute UTC time of ``start``."""
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    recording: Mapped[Recording] = relationship(back_populates="detections")

    __table_args__ = (
        Index("ix_detections_label_score", "label", "score"),
        Index("ix_detections_detected_at", "detected_at"),
        Index("ix_detections_label_time", "label", "detected_at"),
    )


class Message(Base):
    """An outbox message: written in the same transaction as the data it reports."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    """Stable id for de-duplication downstream."""
    kind: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    """0 is most urgent (events), then heartbeats, summaries, detections, bulk."""
    schema_version: Mapped[int] = mapped_column(Integer, default=1)
    payload: Mapped[str] = mapped_column(Text)
    """JSON text, exactly as delivered."""
    size: Mapped[int] = mapped_column(Integer)
    """Bytes of ``payload`` (UTF-8)."""
    created_at: Mapped[datetime] = mapped_column()
    recording_id: Mapped[int | None] = mapped_column(ForeignKey("recordings.id"), default=None)

    deliveries: Mapped[list[Delivery]] = relationship(back_populates="message")

    __table_args__ = (Index("ix_outbox_messages_created", "created_at"),)


class Delivery(Base):
    """The state of one message for one destination (output).

    ``state``: ``pending`` → ``sent``; or ``dead`` (rejected or too old, kept with the reason)
    or ``dropped`` (by the byte cap's drop_oldest policy, counted).
    """

    __tablename__ = "outbox_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("outbox_messages.id"))
    destination: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer)
    """Copy of the message priority, for the delivery index."""
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    retried_at: Mapped[datetime | None] = mapped_column(default=None)
    """When a dead letter was moved back to pending (``outbox retry``); ``max_age`` counts
    from it instead of from the message's creation."""

    message: Mapped[Message] = relationship(back_populates="deliveries")

    __table_args__ = (
        Index(
            "ix_outbox_deliveries_queue",
            "destination",
            "state",
            "priority",
            "next_attempt_at",
            "id",
        ),
        Index("ix_outbox_deliveries_message", "message_pk", "destination", unique=True),
        Index("ix_outbox_deliveries_state", "state"),
    )


class Upload(Base):
    """A file to upload to the hub (``fieldstation.upload``): a recording or a log bundle.

    ``state``: ``pending`` → ``sent`` (the hub confirmed the whole file by its sha256);
    ``missing`` when the file is gone before it could be sent. ``offset``: bytes the hub
    acknowledged so far (a resumed upload starts there). Retention never deletes a recording
    with a row that is not ``sent`` (:mod:`fieldstation.store.uploads`).
    """

    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[str] = mapped_column(String(36), unique=True)
    """Stable id of the upload on the hub (a UUID)."""
    kind: Mapped[str] = mapped_column(String(16))
    """``recording`` or ``log_bundle``."""
    recording_id: Mapped[int | None] = mapped_column(
        ForeignKey("recordings.id"), default=None, unique=True
    )
    path: Mapped[str | None] = mapped_column(String(512), default=None)
    """Relative to the station home; None for a log bundle not built yet."""
    bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (Index("ix_uploads_queue", "state", "next_attempt_at", "id"),)


class Event(Base):
    """Something that happened to the station (restart, failure, disk low, network down)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    """``info``, ``warning`` or ``error``."""
    source: Mapped[str] = mapped_column(String(64))
    """Job or component that reported it."""
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Reading(Base):
    """One value of a slow sensor (period of a second or more): a row, not a chunk file.

    Fast streams (an IMU at 100-400 Hz) are chunk files (``recordings`` with media
    ``readings``), not rows."""

    __tablename__ = "readings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"))
    sensor: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[str] = mapped_column(String(64))
    """What was measured, e.g. ``temperature``, ``humidity``, ``cpu_temperature``."""
    unit: Mapped[str] = mapped_column(String(32))
    """Unit of ``value`` (UCUM-like short form: ``Cel``, ``%``, ``hPa``, ``By``)."""
    measured_at: Mapped[datetime] = mapped_column()
    value: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_readings_sensor_quantity_time", "sensor", "quantity", "measured_at"),
        Index("ix_readings_time", "measured_at"),
        Index("ix_readings_quantity_time", "quantity", "measured_at"),
    )


class CommandRow(Base):
    """A fleet command the station verified and stored (``fieldstation.commands``).

    The command's id is unique: a command is stored, hence applied, at most once. ``pk``
    orders the commands by arrival (they run in that order).
    ``state``: ``accepted`` (stored, waiting) -> ``running`` -> ``done`` or ``refused``; a
    command found ``running`` at start-up was cut by a stop and is refused, never run twice.
    Commands refused before they were verified (a bad signature, expired) have no row: their
    id is not trusted, only reported (an event and a ``command_result``).
    """

    __tablename__ = "commands"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(200), unique=True)
    command: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(80))
    """Where it came from: ``mqtt:<output>`` or ``http:<output>``."""
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    issued_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_commands_state", "state", "pk"),)
