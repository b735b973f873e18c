"""indexes for every query a running station makes (flat cost in the size of the archive)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 05:00:00

Decision 0120. ``ix_recordings_started`` serves the recordings listing (newest first, keyset
pages on ``(started_at, id)``) and the period counts of heartbeats and summaries;
``ix_recordings_unfinished`` (partial: only rows a processor has still to look at) serves the
processors' claim and pending count, so a claim with nothing waiting reads no row;
``ix_detections_label_time`` the detections listing filtered by label;
``ix_outbox_deliveries_state`` the outbox depth of health reports.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UNFINISHED = "state IN ('recorded', 'processing')"
"""The partial index's condition; a query uses the index only when its WHERE clause holds
this very term (literal values, not bound parameters: https://www.sqlite.org/partialindex.html)."""

_INDEXES: tuple[tuple[str, str, list[str], str | None], ...] = (
    ("ix_recordings_started", "recordings", ["started_at"], None),
    ("ix_recordings_unfinished", "recordings", ["started_at"], UNFINISHED),
    ("ix_detections_label_time", "detections", ["label", "detected_at"], None),
    ("ix_outbox_deliveries_state", "outbox_deliveries", ["state"], None),
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for name, table, columns, where in _INDEXES:
        if name in {i["name"] for i in inspector.get_indexes(table)}:
            continue  # made by an older release killed before it stamped 0004
        if where is None:
            op.create_index(name, table, columns)
        else:
            condition = sa.text(where)
            op.create_index(
                name, table, columns, sqlite_where=condition, postgresql_where=condition
            )


def downgrade() -> None:
    for name, table, _, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
