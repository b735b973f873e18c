"""dashboard, users and alerts: the stations' newest heartbeat figures, users, alerts, the
keyset index of the detections explorer

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fieldstation.hub.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = fieldstation.hub.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("stations") as batch:
        batch.add_column(sa.Column("heartbeat_interval", sa.Float(), nullable=True))
        batch.add_column(sa.Column("reasons", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("disk_free", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("disk_percent", sa.Float(), nullable=True))
        batch.add_column(sa.Column("battery_percent", sa.Float(), nullable=True))
        batch.add_column(sa.Column("outbox_pending", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("jobs", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("last_recording_at", UTC, nullable=True))
        batch.add_column(sa.Column("last_detection_at", UTC, nullable=True))
    op.create_table(
        "users",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "alerts",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("station", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("opened_at", UTC, nullable=False),
        sa.Column("acknowledged_at", UTC, nullable=True),
        sa.Column("acknowledged_by", sa.String(length=100), nullable=True),
        sa.Column("closed_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_alerts_open",
        "alerts",
        ["station", "kind", "subject"],
        unique=True,
        postgresql_where=sa.text("closed_at IS NULL"),
        sqlite_where=sa.text("closed_at IS NULL"),
    )
    op.create_index("ix_alerts_opened", "alerts", ["opened_at", "id"])
    op.drop_index("ix_detections_detected", table_name="detections")
    op.create_index("ix_detections_detected_id", "detections", ["detected_at", "id"])
    # A fleet database of revision 0001 holds recordings and detections already: the stations'
    # newest ones, so the fleet alerts do not find every station "silent" (no recording since
    # it was first seen) the moment the hub is upgraded. One indexed lookup per station
    # (ix_recordings_station_started, ix_detections_station_detected).
    for column, table, time in (
        ("last_recording_at", "recordings", "started_at"),
        ("last_detection_at", "detections", "detected_at"),
    ):
        op.execute(
            f"UPDATE stations SET {column} = "  # noqa: S608 (names above, no input)
            f"(SELECT max(t.{time}) FROM {table} t WHERE t.station = stations.id)"
        )


def downgrade() -> None:
    op.drop_index("ix_detections_detected_id", table_name="detections")
    op.create_index("ix_detections_detected", "detections", ["detected_at"])
    op.drop_index("ix_alerts_opened", table_name="alerts")
    op.drop_index("ux_alerts_open", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("users")
    with op.batch_alter_table("stations") as batch:
        for column in (
            "last_detection_at",
            "last_recording_at",
            "jobs",
            "outbox_pending",
            "battery_percent",
            "disk_percent",
            "disk_free",
            "reasons",
            "heartbeat_interval",
        ):
            batch.drop_column(column)
