"""Fleet database tables (SQLAlchemy 2). Times are aware UTC; durations seconds; sizes bytes.

Idempotence: every accepted message has one row in ``messages`` keyed by its message id; the
rows a message produces are written in the same transaction, only when that row was new
(``INSERT ... ON CONFLICT DO NOTHING``), so a redelivered message stores nothing twice.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "DeadLetter",
    "Detection",
    "DetectionDay",
    "Event",
    "Heartbeat",
    "IngestedMessage",
    "Reading",
    "Recording",
    "Station",
    "StationDay",
    "StationToken",
    "UploadedFile",
    "Summary",
    "User",
    "Alert",
    "COMMAND_STATES",
    "ConfigTemplate",
    "ConfigTemplateMember",
    "HubCommand",
    "ROLES",
]

ROLES = ("viewer", "operator", "admin")
"""Dashboard roles, weakest first: a viewer reads, an operator also acknowledges alerts, an
admin also manages users."""


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give an aware (UTC) time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


ID = BigInteger().with_variant(Integer(), "sqlite")
"""Row ids: BIGINT on PostgreSQL (10 million detections and more), INTEGER (rowid) on SQLite."""


class Base(DeclarativeBase):
    pass


class Station(Base):
    """One station, created by its first message or status. ``online``: from the retained
    ``status`` topic (None: never seen there)."""

    __tablename__ = "stations"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When the hub last received anything from it."""
    online: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    health: Mapped[str | None] = mapped_column(String(20), nullable=True)
    """Status of the newest heartbeat: ok, degraded, failing."""
    config_hash: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # the newest heartbeat's figures, kept on the row so the fleet page reads one table
    # (migration 0002); None until a heartbeat carries them
    heartbeat_interval: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Seconds to the next heartbeat, as the newest heartbeat announced."""
    reasons: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """Why the newest heartbeat is degraded or failing."""
    disk_free: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Bytes free on the station's home file system."""
    disk_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Percent of that file system in use."""
    battery_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    outbox_pending: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Messages waiting in the station's outbox."""
    jobs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    """The newest heartbeat's jobs: name, state, restarts, reason, problem."""
    last_recording_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Start of the newest recording received (its end is start + duration)."""
    last_detection_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IngestedMessage(Base):
    """Every accepted message, once (the idempotence key)."""

    __tablename__ = "messages"

    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    station: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(50))
    schema_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_via: Mapped[str] = mapped_column(String(200))
    """``mqtt:<client id>`` or ``http``: which ingest stored it."""

    __table_args__ = (Index("ix_messages_station_kind_created", "station", "kind", "created_at"),)


def _message_fk() -> Any:
    return ForeignKey("messages.message_id", ondelete="CASCADE")


class Heartbeat(Base):
    """Health time series: one row per heartbeat; the whole body in ``body``."""

    __tablename__ = "heartbeats"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(200), _message_fk(), unique=True)
    station: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20))
    seq: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_heartbeats_station_created", "station", "created_at"),)


class Recording(Base):
    """A chunk a station committed (the file stays on the station)."""

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(200), _message_fk(), unique=True)
    station: Mapped[str] = mapped_column(String(200))
    recording_id: Mapped[int] = mapped_column(ID)
    """The row id on the station."""
    sensor: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration: Mapped[float] = mapped_column(Float)
    media: Mapped[str] = mapped_column(String(50))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_recordings_station_started", "station", "started_at"),)


class Detection(Base):
    """One detection (a ``detection`` message holds a list: one row each)."""

    __tablename__ = "detections"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(200), _message_fk())
    station: Mapped[str] = mapped_column(String(200))
    recording_id: Mapped[int] = mapped_column(ID)
    sensor: Mapped[str] = mapped_column(String(200))
    processor: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(200), nullable=True)
    label: Mapped[str] = mapped_column(String(300))
    score: Mapped[float] = mapped_column(Float)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    low_hz: Mapped[float | None] = mapped_column(Float, nullable=True)
    high_hz: Mapped[float | None] = mapped_column(Float, nullable=True)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_detections_station_detected", "station", "detected_at"),
        Index("ix_detections_label_detected", "label", "detected_at"),
        Index("ix_detections_detected_id", "detected_at", "id"),  # keyset pages (0002)
        Index("ix_detections_message", "message_id"),
    )


class DetectionDay(Base):
    """Detections per (station, label, UTC day): the explorer's counts per day (migration
    0005). Kept by :func:`fieldstation.hub.rollup.count_inserted` in the transaction that
    inserts the detections; backfilled from ``detections`` by the migration."""

    __tablename__ = "detection_days"

    station: Mapped[str] = mapped_column(String(200), primary_key=True)
    label: Mapped[str] = mapped_column(String(300), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    """UTC date of ``detected_at``."""
    count: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_detection_days_label_day", "label", "day"),)


class StationDay(Base):
    """Detections per (station, UTC day), every label: the unfiltered counts read one row per
    station and day instead of one per label (migration 0005, kept with :class:`DetectionDay`)."""

    __tablename__ = "station_days"

    station: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_station_days_day", "day"),)


class Event(Base):
    """A station event (restart, failure, disk low, ...)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(200), _message_fk(), unique=True)
    station: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event: Mapped[str] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_events_station_created", "station", "created_at"),)


class Summary(Base):
    """A station's detection summary over one period."""

    __tablename__ = "summaries"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(200), _message_fk(), unique=True)
    station: Mapped[str] = mapped_column(String(200))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_summaries_station_period", "station", "period_start"),)


class Reading(Base):
    """One value of a slow sensor's measurement (a ``readings`` message: one row per value)."""

    __tablename__ = "readings"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(200), _message_fk())
    station: Mapped[str] = mapped_column(String(200))
    sensor: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[str] = mapped_column(String(100))
    unit: Mapped[str | None] = mapped_column(String(50), nullable=True)
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        Index("ix_readings_station_sensor_measured", "station", "sensor", "measured_at"),
    )


class DeadLetter(Base):
    """A message refused (unknown schema version, unknown kind, malformed), with the reason.
    ``digest`` (SHA-256 of topic and payload) makes a redelivered refusal one row."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(300))
    """``mqtt:<topic>`` or ``http:<station>``."""
    station: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class StationToken(Base):
    """A bearer token of the HTTP ingest, argon2-hashed (the token itself is never stored)."""

    __tablename__ = "station_tokens"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    station: Mapped[str] = mapped_column(String(200), index=True)
    token_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class UploadedFile(Base):
    """A file a station uploaded (:mod:`fieldstation.hub.uploads`): ``partial`` while its
    bytes arrive (kept on the hub's disk), ``stored`` once the whole file matched its sha256
    and is in the store (``storage`` ``disk`` or ``s3``, at ``location``: a path relative to
    the upload folder, or an object key)."""

    __tablename__ = "uploaded_files"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    station: Mapped[str] = mapped_column(String(200))
    upload_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))
    recording_id: Mapped[int | None] = mapped_column(ID, nullable=True)
    """The row id on the station."""
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    length: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    storage: Mapped[str | None] = mapped_column(String(8), nullable=True)
    location: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ux_uploaded_files_station_upload", "station", "upload_id", unique=True),
        Index("ix_uploaded_files_station_stored", "station", "stored_at"),
    )


class User(Base):
    """A dashboard user: argon2id password hash, role (one of :data:`ROLES`)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class Alert(Base):
    """A fleet alert: opened when its condition holds, acknowledged by an operator, closed
    when the condition clears. At most one open alert per (station, kind, subject): a partial
    unique index, so hub processes evaluating at once open it once."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    station: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(50))
    """offline, silent, disk_low, job_failed, heartbeat_missing."""
    subject: Mapped[str] = mapped_column(String(200), default="")
    """What inside the station (a job's name for job_failed), else empty."""
    detail: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index(
            "ux_alerts_open",
            "station",
            "kind",
            "subject",
            unique=True,
            postgresql_where=text("closed_at IS NULL"),
            sqlite_where=text("closed_at IS NULL"),
        ),
        Index("ix_alerts_opened", "opened_at", "id"),
    )


COMMAND_STATES = ("queued", "delivered", "expired", "accepted", "done", "refused")
"""A fleet command's states in the order they may move (:mod:`fieldstation.hub.commands`):
queued (signed, waiting for its station), delivered (handed to the broker or to the station's
HTTP poll; handed again until accepted), expired (never accepted before ``expires_at``),
accepted (the station stored it), done / refused (its answer; final)."""


class HubCommand(Base):
    """A signed command for one station (migration 0003). ``wire`` is the signed JSON exactly
    as sent; ``args`` its arguments (for display); ``state`` only moves forward."""

    __tablename__ = "commands"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    """The command id (uuid4 hex), the station's at-most-once key."""
    station: Mapped[str] = mapped_column(String(200))
    command: Mapped[str] = mapped_column(String(50))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    wire: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str] = mapped_column(String(100))
    """``cli:<user>`` or the dashboard user's name."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When it was last handed to the broker or to an HTTP poll."""
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    config_hash: Mapped[str | None] = mapped_column(String(100), nullable=True)
    """The station's config hash in force, as its answer said."""

    __table_args__ = (
        Index("ix_commands_station_created", "station", "created_at"),
        Index("ix_commands_state", "state", "station"),
    )


class ConfigTemplate(Base):
    """A station file shared by many stations (migration 0003): TOML text whose secrets are
    ``env:`` / ``file:`` references; each member station's overrides are applied to it."""

    __tablename__ = "config_templates"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(100))


class ConfigTemplateMember(Base):
    """A station that takes a template, with its overrides (dotted key -> value, e.g.
    ``station.latitude``: position, names, secret references)."""

    __tablename__ = "config_template_members"

    template: Mapped[str] = mapped_column(
        String(100), ForeignKey("config_templates.name", ondelete="CASCADE"), primary_key=True
    )
    station: Mapped[str] = mapped_column(String(200), primary_key=True)
    overrides: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
