"""The history as the SQLite-only schema left it at PRAGMA user_version 3: runs, metrics, samples.

A fresh database (SQLite or PostgreSQL) starts here; an SQLite file at user_version 1..3 is first
brought to 3 by stress.history.legacy, then stamped with this revision. Frozen: never edit a
released revision, add the next.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Text, nullable=False, unique=True),
        sa.Column("recorded_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float), sa.Column("ended_at", sa.Float), sa.Column("wall_s", sa.Float),
        sa.Column("hostname", sa.Text), sa.Column("gpu", sa.Text), sa.Column("driver", sa.Text),
        sa.Column("kernel", sa.Text), sa.Column("scenario", sa.Text), sa.Column("scenario_sha256", sa.Text),
        sa.Column("verdict", sa.Text), sa.Column("exit_code", sa.Integer), sa.Column("status", sa.Text),
        sa.Column("images_ok", sa.Integer), sa.Column("images_failed", sa.Integer),
        sa.Column("images_per_min", sa.Float), sa.Column("image_s_median", sa.Float),
        sa.Column("run_dir", sa.Text), sa.Column("report_path", sa.Text),
        sa.Column("cuda_driver", sa.Text), sa.Column("python", sa.Text), sa.Column("libraries", sa.Text),
        sa.Column("soak_id", sa.Text), sa.Column("soak_iteration", sa.Integer),
        sqlite_autoincrement=True,
    )
    for table in ("metrics", "samples"):
        value = (sa.Column("value", sa.Float) if table == "metrics"
                 else sa.Column("values", sa.Text, nullable=False))
        op.create_table(
            table,
            sa.Column("run", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("name", sa.Text, primary_key=True),
            value,
        )
    op.create_index("runs_scenario", "runs", ["scenario", "started_at"])
    op.create_index("runs_driver", "runs", ["driver", "started_at"])
    op.create_index("runs_hostname", "runs", ["hostname", "started_at"])


def downgrade() -> None:
    for table in ("samples", "metrics", "runs"):
        op.drop_table(table)
