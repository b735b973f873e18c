"""recordings of any media (media, rate), sessions of several streams, readings rows

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    columns = {c["name"] for c in inspector.get_columns("recordings")}
    if "rate" not in columns:
        # RENAME COLUMN: SQLite 3.25+ and PostgreSQL, without copying the table
        op.execute("ALTER TABLE recordings RENAME COLUMN sample_rate TO rate")
    if "media" not in columns:
        op.add_column(
            "recordings",
            sa.Column("media", sa.String(length=16), nullable=False, server_default="audio"),
        )
    if "capture_id" not in columns:
        op.add_column("recordings", sa.Column("capture_id", sa.String(length=36), nullable=True))
        op.create_index("ix_recordings_capture_id", "recordings", ["capture_id"])
    if "readings" not in inspector.get_table_names():
        op.create_table(
            "readings",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("deployment_id", sa.Integer(), nullable=False),
            sa.Column("sensor", sa.String(length=64), nullable=False),
            sa.Column("quantity", sa.String(length=64), nullable=False),
            sa.Column("unit", sa.String(length=32), nullable=False),
            sa.Column("measured_at", sa.DateTime(), nullable=False),
            sa.Column("value", sa.Float(), nullable=False),
            sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"]),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(
            "ix_readings_sensor_quantity_time", "readings", ["sensor", "quantity", "measured_at"]
        )
        op.create_index("ix_readings_time", "readings", ["measured_at"])
        op.create_index("ix_readings_quantity_time", "readings", ["quantity", "measured_at"])


def downgrade() -> None:
    op.drop_index("ix_readings_quantity_time", table_name="readings")
    op.drop_index("ix_readings_time", table_name="readings")
    op.drop_index("ix_readings_sensor_quantity_time", table_name="readings")
    op.drop_table("readings")
    op.drop_index("ix_recordings_capture_id", table_name="recordings")
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_column("capture_id")
        batch_op.drop_column("media")
    op.execute("ALTER TABLE recordings RENAME COLUMN rate TO sample_rate")
