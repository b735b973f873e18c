"""detection rollup: detections per (station, label, UTC day) and per (station, UTC day),
backfilled from the detections already stored

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _day(dialect: str) -> str:
    """SQL of the UTC date of ``detected_at`` (SQLite stores UTC text; PostgreSQL timestamptz)."""
    if dialect == "postgresql":
        return "CAST(detected_at AT TIME ZONE 'UTC' AS DATE)"
    return "date(detected_at)"


def upgrade() -> None:
    op.create_table(
        "detection_days",
        sa.Column("station", sa.String(length=200), nullable=False),
        sa.Column("label", sa.String(length=300), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("station", "label", "day"),
    )
    op.create_index("ix_detection_days_label_day", "detection_days", ["label", "day"])
    op.create_table(
        "station_days",
        sa.Column("station", sa.String(length=200), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("station", "day"),
    )
    op.create_index("ix_station_days_day", "station_days", ["day"])
    # backfill: one pass over detections per table (the migration's transaction holds it all)
    day = _day(op.get_bind().dialect.name)
    op.execute(
        "INSERT INTO detection_days (station, label, day, count) "
        f"SELECT station, label, {day}, COUNT(*) FROM detections GROUP BY station, label, {day}"
    )
    op.execute(
        "INSERT INTO station_days (station, day, count) "
        "SELECT station, day, SUM(count) FROM detection_days GROUP BY station, day"
    )


def downgrade() -> None:
    op.drop_index("ix_station_days_day", table_name="station_days")
    op.drop_table("station_days")
    op.drop_index("ix_detection_days_label_day", table_name="detection_days")
    op.drop_table("detection_days")
