"""The history's tables as SQLAlchemy Core sees them at the newest revision (the same on SQLite and
PostgreSQL). The migrations in ``migrations/versions`` build exactly this, step by step; a test
compares the two (tests/test_history_backends.py)."""
from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Index, Integer, MetaData, Table, Text

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Text, nullable=False, unique=True),
    Column("recorded_at", Float, nullable=False),
    Column("started_at", Float), Column("ended_at", Float), Column("wall_s", Float),
    Column("hostname", Text), Column("gpu", Text), Column("driver", Text), Column("kernel", Text),
    Column("scenario", Text), Column("scenario_sha256", Text),
    Column("verdict", Text), Column("exit_code", Integer), Column("status", Text),
    Column("images_ok", Integer), Column("images_failed", Integer),
    Column("images_per_min", Float), Column("image_s_median", Float),
    Column("run_dir", Text), Column("report_path", Text),
    # version 3 of the SQLite-only schema
    Column("cuda_driver", Text), Column("python", Text), Column("libraries", Text),
    Column("soak_id", Text), Column("soak_iteration", Integer),
    # revision 0002: the machine identity
    Column("machine_id", Text), Column("compositor", Text), Column("display_server", Text),
    Column("session_type", Text),
    Index("runs_scenario", "scenario", "started_at"),
    Index("runs_driver", "driver", "started_at"),
    Index("runs_hostname", "hostname", "started_at"),
    Index("runs_machine_id", "machine_id", "started_at"),
    sqlite_autoincrement=True,
)

metrics = Table(
    "metrics", metadata,
    Column("run", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("value", Float),
)

samples = Table(
    "samples", metadata,
    Column("run", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("values", Text, nullable=False),     # a JSON list of numbers
)

# The columns a RunSummary fills (everything but the row id).
RUN_COLUMNS = tuple(c.name for c in runs.columns if c.name != "id")
