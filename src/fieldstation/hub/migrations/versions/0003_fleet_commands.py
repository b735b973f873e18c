"""fleet commands: the signed commands queued for stations and their states; config
templates and their member stations' overrides

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fieldstation.hub.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC = fieldstation.hub.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("station", sa.String(length=200), nullable=False),
        sa.Column("command", sa.String(length=50), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("wire", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("delivered_at", UTC, nullable=True),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("config_hash", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_commands_station_created", "commands", ["station", "created_at"])
    op.create_index("ix_commands_state", "commands", ["state", "station"])
    op.create_table(
        "config_templates",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "config_template_members",
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("station", sa.String(length=200), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["template"], ["config_templates.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("template", "station"),
    )


def downgrade() -> None:
    op.drop_table("config_template_members")
    op.drop_table("config_templates")
    op.drop_index("ix_commands_state", table_name="commands")
    op.drop_index("ix_commands_station_created", table_name="commands")
    op.drop_table("commands")
