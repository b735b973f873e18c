"""uploaded files: recordings and log bundles stations uploaded (decision 0143)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fieldstation.hub.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = fieldstation.hub.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "uploaded_files",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("station", sa.String(length=200), nullable=False),
        sa.Column("upload_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("recording_id", ID, nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("storage", sa.String(length=8), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("stored_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_uploaded_files_station_upload",
        "uploaded_files",
        ["station", "upload_id"],
        unique=True,
    )
    op.create_index("ix_uploaded_files_station_stored", "uploaded_files", ["station", "stored_at"])


def downgrade() -> None:
    op.drop_index("ix_uploaded_files_station_stored", table_name="uploaded_files")
    op.drop_index("ux_uploaded_files_station_upload", table_name="uploaded_files")
    op.drop_table("uploaded_files")
