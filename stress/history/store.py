"""Writing runs into the history and reading them back, the same on SQLite and PostgreSQL.

A run is written as one upsert keyed on its run id (``INSERT ... ON CONFLICT (run_id) DO UPDATE``
on both back ends) with its metrics and samples replaced in the same transaction, so that any
number of machines and processes may record at once, and the same run twice, without a row lost
or duplicated. A re-record (after ``gpu-stress report``, say) keeps what it does not know: the soak
membership, the report path and the machine identity recorded earlier.
"""
from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, case, delete, func, insert, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import SQLAlchemyError

from stress.errors import StressError
from stress.history.db import HistoryError, describe_error, display, open_db
from stress.history.schema import RUN_COLUMNS, metrics, runs, samples
from stress.history.summary import RunSummary, summarize_run

# Kept from an earlier record of the same run when a re-record does not know them.
_KEEP_IF_NULL = ("report_path", "machine_id", "compositor", "display_server", "session_type")
_CHUNK = 500   # ids per IN (...) when reading metrics and samples of many runs


def _upsert(conn: Connection):
    return (pg_dialect.insert if conn.dialect.name == "postgresql" else sqlite_dialect.insert)(runs)


def store_summary(conn: Connection, s: RunSummary) -> int:
    """Insert or update one run (keyed by run id) with its metrics and samples; returns its row id."""
    row = {c: getattr(s, c, None) for c in RUN_COLUMNS}
    row.update(recorded_at=time.time(), libraries=json.dumps(s.libraries, sort_keys=True),
               images_per_min=s.metrics.get("images_per_min"), image_s_median=s.metrics.get("image_s_median"))
    stmt = _upsert(conn).values(**row)
    new = stmt.excluded
    set_: dict[str, Any] = {c: new[c] for c in RUN_COLUMNS if c != "run_id"}
    for c in _KEEP_IF_NULL:
        set_[c] = func.coalesce(new[c], runs.c[c])
    # a plain re-record (no soak id) keeps the soak membership recorded earlier
    set_["soak_id"] = case((new.soak_id.is_(None), runs.c.soak_id), else_=new.soak_id)
    set_["soak_iteration"] = case((new.soak_id.is_(None), runs.c.soak_iteration), else_=new.soak_iteration)
    stmt = stmt.on_conflict_do_update(index_elements=[runs.c.run_id], set_=set_).returning(runs.c.id)
    if conn.in_transaction():
        conn.commit()
    with conn.begin():
        rid = int(conn.execute(stmt).scalar_one())
        conn.execute(delete(metrics).where(metrics.c.run == rid))
        conn.execute(delete(samples).where(samples.c.run == rid))
        if s.metrics:
            conn.execute(insert(metrics), [{"run": rid, "name": k, "value": v} for k, v in sorted(s.metrics.items())])
        if s.samples:
            conn.execute(insert(samples), [{"run": rid, "name": k, "values": json.dumps(v)}
                                           for k, v in sorted(s.samples.items())])
    return rid


def record_summary(db: str | Path, s: RunSummary) -> int:
    """Store a summary built elsewhere (e.g. a run whose host stopped responding) in the history at
    ``db`` (a path or URL); idempotent per run id like :func:`record_run`. Returns the row id."""
    with open_db(db, write=True) as conn:
        return store_summary(conn, s)


def record_run(run_dir: str | Path, report_dir: str | Path | None, db: str | Path, *, soak_id: str | None = None,
               soak_iteration: int | None = None) -> int:
    """Record one run in the history at ``db`` (an SQLite path, ``sqlite:///PATH`` or
    ``postgresql://...``), idempotent per run id: a second call updates the row.

    Returns the run's row id. Raises :class:`StressError` when the run directory or the database
    cannot be read; callers that must not fail (the end of a run) use :func:`try_record_run`.
    """
    s = summarize_run(run_dir, report_dir)
    if soak_id is not None:
        s.soak_id, s.soak_iteration = soak_id, soak_iteration
    return record_summary(db, s)


def try_record_run(run_dir: Path, report_dir: Path | None, db: str | Path, **kw: Any) -> str | None:
    """:func:`record_run`, but a failure becomes a warning line (returned) instead of an exception."""
    try:
        record_run(run_dir, report_dir, db, **kw)
        return None
    except StressError as exc:
        return f"run not recorded in the history: {exc}"
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        return f"run not recorded in the history {display(db)} ({type(exc).__name__}: {describe_error(exc, db)})"


def _summaries(conn: Connection, rows: list, *, with_samples: bool) -> list[RunSummary]:
    ids = [r["id"] for r in rows]
    mets: dict[int, dict[str, float]] = {i: {} for i in ids}
    smps: dict[int, dict[str, list]] = {i: {} for i in ids}
    for k in range(0, len(ids), _CHUNK):
        chunk = ids[k:k + _CHUNK]
        for run, name, value in conn.execute(select(metrics.c.run, metrics.c.name, metrics.c.value)
                                             .where(metrics.c.run.in_(chunk))):
            mets[run][name] = value
        if with_samples:
            for run, name, values in conn.execute(select(samples.c.run, samples.c.name, samples.c["values"])
                                                  .where(samples.c.run.in_(chunk))):
                smps[run][name] = json.loads(values)
    out = []
    for d in rows:
        s = RunSummary(run_id=d["run_id"])
        for k in RunSummary.__dataclass_fields__:
            if k in d and k not in ("libraries", "metrics", "samples", "reasons"):
                setattr(s, k, d[k])
        try:
            s.libraries = json.loads(d.get("libraries") or "{}")
        except ValueError:
            s.libraries = {}
        s.images_ok, s.images_failed = d.get("images_ok") or 0, d.get("images_failed") or 0
        s.metrics = mets[d["id"]]
        if with_samples:
            s.samples = smps[d["id"]]
        out.append(s)
    return out


# filter key -> column; ``machine`` is the user-facing word for the hostname
FILTER_KEYS = {"scenario": "scenario", "machine": "hostname", "hostname": "hostname", "driver": "driver",
               "gpu": "gpu", "kernel": "kernel", "verdict": "verdict", "status": "status", "soak": "soak_id",
               "run": "run_id", "run_id": "run_id", "machine_id": "machine_id", "compositor": "compositor",
               "matrix": "scenario"}


def parse_filter(text: str) -> dict[str, str]:
    """``driver=550.54,scenario=demo`` -> {"driver": "550.54", "scenario": "demo"}."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in FILTER_KEYS or not value.strip():
            raise StressError(f"{text!r}: a filter is KEY=VALUE[,KEY=VALUE] with KEY one of "
                              f"{', '.join(sorted(set(FILTER_KEYS) - {'hostname', 'run_id'}))}")
        out[key] = value.strip()
    return out


def glob_regex(pattern: str) -> str:
    """A glob (``*``, ``?``, ``[...]``, as SQLite's GLOB reads it) as an anchored POSIX regex."""
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and (j := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:j]
            body = "^" + body[1:] if body.startswith("^") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out) + "$"


def _match(conn: Connection, col, value: str):   # noqa: ANN001 - a SQLAlchemy column
    if not any(ch in value for ch in "*?["):
        return col == value
    if conn.dialect.name == "sqlite":
        return col.op("GLOB")(value)
    return col.op("~")(glob_regex(value))


def query_runs(db: str | Path, filters: dict[str, str] | None = None, *, limit: int | None = None,
               with_samples: bool = False) -> list[RunSummary]:
    """Runs matching every filter (exact match; ``*`` and ``?`` glob), oldest first."""
    with open_db(db, create=False) as conn:
        stmt = select(runs)
        for key, value in (filters or {}).items():
            if key == "matrix":     # the cells of a matrix: scenario names 'NAME[...]' (stress.cells)
                stmt = stmt.where(func.substr(runs.c.scenario, 1, len(value) + 1) == value + "[")
                continue
            stmt = stmt.where(_match(conn, runs.c[FILTER_KEYS[key]], value))
        stmt = stmt.order_by(func.coalesce(runs.c.started_at, runs.c.recorded_at).desc(), runs.c.id.desc())
        if limit:
            stmt = stmt.limit(int(limit))
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
        found = _summaries(conn, rows, with_samples=with_samples)
    return list(reversed(found))


def find_run(db: str | Path, ref: str, *, with_samples: bool = True) -> RunSummary | None:
    """A run by exact id, or by a prefix that names exactly one run."""
    with open_db(db, create=False) as conn:
        rows = [dict(r) for r in conn.execute(select(runs).where(runs.c.run_id == ref)).mappings()]
        if not rows:
            rows = [dict(r) for r in conn.execute(
                select(runs).where(func.substr(runs.c.run_id, 1, len(ref)) == ref).order_by(runs.c.id)).mappings()]
        if len(rows) > 1:
            raise StressError(f"{ref!r} matches {len(rows)} runs ({', '.join(r['run_id'] for r in rows[:3])}, ...); "
                              "give more of the run id")
        return _summaries(conn, rows, with_samples=with_samples)[0] if rows else None


__all__ = ["FILTER_KEYS", "HistoryError", "find_run", "glob_regex", "parse_filter", "query_runs", "record_run",
           "record_summary", "store_summary", "try_record_run"]
