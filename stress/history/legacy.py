"""The history's schema before Alembic: versions 1 to 3 of SQLite files, numbered with
``PRAGMA user_version``. Frozen: these steps only bring an old file to version 3, from where the
Alembic revisions (``stress/history/migrations``) take over (:func:`stress.history.db.upgrade`)."""
from __future__ import annotations

import sqlite3
from typing import Callable

def _v0_to_v1(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL UNIQUE,
            recorded_at REAL NOT NULL,
            started_at REAL, ended_at REAL, wall_s REAL,
            hostname TEXT, gpu TEXT, driver TEXT, kernel TEXT,
            scenario TEXT, scenario_sha256 TEXT,
            verdict TEXT, exit_code INTEGER, status TEXT,
            images_ok INTEGER, images_failed INTEGER,
            images_per_min REAL, image_s_median REAL,
            run_dir TEXT, report_path TEXT
        )""")


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    # Named metrics and raw samples, so that new metrics need no schema change.
    conn.execute("""
        CREATE TABLE metrics (
            run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            name TEXT NOT NULL, value REAL,
            PRIMARY KEY (run, name)
        )""")
    conn.execute("""
        CREATE TABLE samples (
            run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            name TEXT NOT NULL, "values" TEXT NOT NULL,
            PRIMARY KEY (run, name)
        )""")
    # Carry the two v1 metrics over, so old rows compare like new ones.
    for col in ("images_per_min", "image_s_median"):
        conn.execute(f"INSERT INTO metrics (run, name, value) SELECT id, '{col}', {col} FROM runs "
                     f"WHERE {col} IS NOT NULL")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    for col in ("cuda_driver TEXT", "python TEXT", "libraries TEXT", "soak_id TEXT", "soak_iteration INTEGER"):
        conn.execute(f"ALTER TABLE runs ADD COLUMN {col}")
    conn.execute("CREATE INDEX runs_scenario ON runs (scenario, started_at)")
    conn.execute("CREATE INDEX runs_driver ON runs (driver, started_at)")
    conn.execute("CREATE INDEX runs_hostname ON runs (hostname, started_at)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v0_to_v1, _v1_to_v2, _v2_to_v3]
SCHEMA_VERSION = len(MIGRATIONS)

