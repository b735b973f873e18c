"""model run identity: ``model_runs.run_id``

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 06:10:00

Decision 0135. Every model run gets a ``run_id`` (a UUID for new runs) that detection
messages and ``detections --csv`` carry, so that a re-analysis can be told apart from the
run before it. Runs stored before this revision get ``run-<id>`` (their row id: unique, and
stable). ``ix_model_runs_run_id`` is unique.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # each step only when not done yet: a database an interrupted upgrade left half-done (or
    # stamped back) is finished, not broken
    inspector = sa.inspect(op.get_bind())
    if "run_id" not in {c["name"] for c in inspector.get_columns("model_runs")}:
        with op.batch_alter_table("model_runs") as batch:
            batch.add_column(sa.Column("run_id", sa.String(length=36), nullable=True))
    op.execute("UPDATE model_runs SET run_id = 'run-' || CAST(id AS TEXT) WHERE run_id IS NULL")
    if "ix_model_runs_run_id" not in {i["name"] for i in inspector.get_indexes("model_runs")}:
        op.create_index("ix_model_runs_run_id", "model_runs", ["run_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_model_runs_run_id", table_name="model_runs")
    with op.batch_alter_table("model_runs") as batch:
        batch.drop_column("run_id")
