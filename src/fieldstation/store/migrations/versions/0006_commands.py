"""fleet commands: the ``commands`` table

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 08:20:00

Decision 0140. One row per fleet command the station verified, in order of arrival (``pk``); the
command id is unique, so a command is applied at most once (a second copy of the id is
refused as a replay).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "commands" not in inspector.get_table_names():
        op.create_table(
            "commands",
            sa.Column("pk", sa.Integer(), nullable=False),
            sa.Column("id", sa.String(length=200), nullable=False),
            sa.Column("command", sa.String(length=32), nullable=False),
            sa.Column("args", sa.JSON(), nullable=False),
            sa.Column("source", sa.String(length=80), nullable=False),
            sa.Column("state", sa.String(length=16), nullable=False),
            sa.Column("reason", sa.Text(), nullable=True),
            sa.Column("details", sa.JSON(), nullable=False),
            sa.Column("issued_at", sa.DateTime(), nullable=False),
            sa.Column("expires_at", sa.DateTime(), nullable=False),
            sa.Column("received_at", sa.DateTime(), nullable=False),
            sa.Column("started_at", sa.DateTime(), nullable=True),
            sa.Column("finished_at", sa.DateTime(), nullable=True),
            sa.PrimaryKeyConstraint("pk"),
            sa.UniqueConstraint("id"),
        )
    if "ix_commands_state" not in {i["name"] for i in inspector.get_indexes("commands")}:
        op.create_index("ix_commands_state", "commands", ["state", "pk"])


def downgrade() -> None:
    op.drop_index("ix_commands_state", table_name="commands")
    op.drop_table("commands")
