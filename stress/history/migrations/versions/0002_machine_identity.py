"""Machine identity on every run: machine_id (a salted hash of /etc/machine-id), compositor,
display server and session type; an index to list a machine's runs.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = ("machine_id", "compositor", "display_server", "session_type")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("runs", sa.Column(name, sa.Text))   # plain ADD COLUMN on both back ends
    op.create_index("runs_machine_id", "runs", ["machine_id", "started_at"])


def downgrade() -> None:
    op.drop_index("runs_machine_id", "runs")
    with op.batch_alter_table("runs") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
