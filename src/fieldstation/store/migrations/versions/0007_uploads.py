"""uploads: files queued for upload to the hub (recordings, log bundles)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 08:20:00

Decision 0143. One row per file to upload: its hub id (``upload_id``), the bytes the hub
acknowledged (``offset``), attempts and next attempt (the outbox's pattern), and ``sent``
once the hub confirmed the whole file by its sha256. ``recording_id`` is unique: a recording
is uploaded once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "uploads" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "uploads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=True),
        sa.Column("path", sa.String(length=512), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["recording_id"], ["recordings.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("upload_id"),
        sa.UniqueConstraint("recording_id"),
    )
    op.create_index("ix_uploads_queue", "uploads", ["state", "next_attempt_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_uploads_queue", table_name="uploads")
    op.drop_table("uploads")
