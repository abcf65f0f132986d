"""Where the history lives, and opening it: a file path or URL, SQLAlchemy engines for SQLite and
PostgreSQL, and the schema brought to the newest Alembic revision before use.

- **Location** (:func:`history_location`): ``--history``/``--db`` when given, else
  ``$STRESS_HISTORY_URL``, else ``reports/history.db``. A path or ``sqlite:///PATH`` is an SQLite
  file (the embedded default); ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`` (also
  ``postgres://``, ``postgresql+psycopg://``, ``?host=/socket/dir``) a PostgreSQL database through
  psycopg 3. Passwords are never shown: every URL printed goes through :func:`display`.
- **Schema** (:func:`upgrade`): Alembic revisions in ``migrations/versions``, run programmatically on
  the connection being opened, under a lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction
  advisory lock) so that many machines opening a fresh or older history at once upgrade it once. An
  SQLite file from before Alembic (``PRAGMA user_version`` 1..3) is brought to version 3 by
  :mod:`stress.history.legacy`, stamped with revision 0001 and upgraded, all in one transaction;
  its ``user_version`` becomes 4 so that an older gpu-stress refuses it instead of writing into it.
- **Concurrency**: SQLite in WAL mode with a 30 s busy timeout, writes in ``BEGIN IMMEDIATE``
  transactions; PostgreSQL at READ COMMITTED, writes as upserts keyed on the run id.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import URL, Connection, Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from stress.errors import ExitCode, StressError
from stress.history.legacy import MIGRATIONS, SCHEMA_VERSION as LEGACY_VERSION

ENV_VAR = "STRESS_HISTORY_URL"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
HEAD = "0002"                       # the newest revision in migrations/versions (a test checks)
REVISIONS = ("0001", "0002")        # every revision this gpu-stress knows, oldest first
ALEMBIC_USER_VERSION = LEGACY_VERSION + 1   # SQLite files under Alembic: refused by older gpu-stress
BUSY_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10
_LOCK_KEY = 0x6770_7374             # pg_advisory_xact_lock key for schema upgrades ("gpst")


class HistoryError(StressError):
    """The history database cannot be opened, read or upgraded (bad location, unusable, too new)."""

    exit_code = ExitCode.BAD_INPUT


class HistoryUnavailable(HistoryError):
    """The history's server cannot be reached (refused, timed out, authentication, no such database)."""

    exit_code = ExitCode.ENVIRONMENT


# ---------------------------------------------------------------------------------------------
# Locations and URLs
# ---------------------------------------------------------------------------------------------

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PASSWORD_RE = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def is_url(db: str | Path) -> bool:
    return isinstance(db, str) and bool(_SCHEME_RE.match(db))


def history_location(value: str | Path | None = None, default: str | Path | None = None) -> str:
    """The history to use: ``value`` (``--history``/``--db``), else ``$STRESS_HISTORY_URL``, else
    ``default``, else ``reports/history.db``. A path comes back absolute; a URL as given."""
    chosen: str | Path | None = value or os.environ.get(ENV_VAR) or default
    if not chosen:
        from stress.paths import default_history_db

        chosen = default_history_db()
    if is_url(str(chosen)):
        return str(chosen)
    return str(Path(chosen).expanduser().resolve())


def mask(message: str, db: str | Path | None = None) -> str:
    """``message`` with the password of any URL in it (and of ``db``) replaced by ``***``."""
    out = _PASSWORD_RE.sub(r"\1***@", str(message))
    if db is not None and is_url(str(db)):
        try:
            pw = make_url(str(db)).password
        except (ArgumentError, ValueError):
            pw = None
        if pw:
            from urllib.parse import quote

            for form in {pw, quote(pw, safe="")}:
                if len(form) >= 3:
                    out = out.replace(form, "***")
    return out


def display(db: str | Path) -> str:
    """How a history is named in messages and output: the path, or the URL without its password."""
    if not is_url(str(db)):
        return str(db)
    try:
        return make_url(str(db)).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return mask(str(db))


def to_url(db: str | Path) -> URL:
    """The SQLAlchemy URL for a history location. Raises :class:`HistoryError` for what is not one."""
    db = str(db)
    try:
        cwd = "" if db.startswith("/") or is_url(db) and db.startswith("postgres") else os.getcwd()
    except OSError:      # the working directory is gone: resolve() will say so
        cwd = ""
    return _to_url(db, cwd)


@lru_cache(maxsize=64)
def _to_url(db: str, _cwd: str) -> URL:      # _cwd: a relative path means another file elsewhere
    if not is_url(str(db)):
        return URL.create("sqlite", database=str(Path(db).expanduser().resolve()))
    try:
        url = make_url(str(db))
    except (ArgumentError, ValueError) as exc:
        raise HistoryError(f"{display(db)}: not a valid history URL ({mask(str(exc), db)})") from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not url.database or url.database == ":memory:":
            raise HistoryError(f"{display(db)}: an SQLite history needs a file: sqlite:///relative/path or "
                               "sqlite:////absolute/path")
        return url.set(drivername="sqlite", database=str(Path(url.database).expanduser().resolve()))
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        if not url.database:
            raise HistoryError(f"{display(db)}: name the database: postgresql://USER@HOST[:PORT]/DATABASE")
        return url.set(drivername="postgresql+psycopg")
    raise HistoryError(f"{display(db)}: unsupported history URL (scheme {url.drivername!r}); give a file path, "
                       "sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE")


def sqlite_path(db: str | Path) -> Path | None:
    """The file of an SQLite history, None for a server."""
    url = to_url(db)
    return Path(url.database) if url.get_backend_name() == "sqlite" else None


def exists(db: str | Path) -> bool:
    """Whether there may be a history to read: an SQLite file that exists, or any server URL (a
    server's history is checked when it is opened)."""
    path = sqlite_path(db)
    return path is None or path.exists()


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------

def _sqlite_engine(url: URL) -> Engine:
    # One pooled connection, idle between uses (no transaction, no lock held): closing the last
    # connection of a WAL database checkpoints it and deletes its -wal and -shm files, which the next
    # open makes again; reusing the connection costs nothing.
    engine = create_engine(url, pool_size=1, max_overflow=4, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:   # noqa: ANN001 - DB-API objects
        import sqlite3

        dbapi_conn.isolation_level = None           # transactions are ours: BEGIN [IMMEDIATE] below
        dbapi_conn.execute("PRAGMA foreign_keys = ON")
        try:   # WAL: readers never wait for the writer, and writers queue on the busy timeout
            if dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                dbapi_conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:           # a read-only file system: read in its current mode
            pass

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A write takes the lock at BEGIN: a deferred transaction that reads and then writes can fail
        # with SQLITE_BUSY at once instead of waiting for the busy timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("stress_write") else "BEGIN")

    return engine


def _postgres_engine(url: URL) -> Engine:
    args: dict = {"application_name": "gpu-stress"}
    if "connect_timeout" not in url.query:
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        # A small pool: a connection (and its password exchange, SCRAM being slow on purpose) is reused
        # by the next open_db of this process; pre-ping replaces one the server or a firewall dropped
        # while a soak slept between iterations.
        return create_engine(url, pool_size=2, max_overflow=4, pool_pre_ping=True, pool_recycle=1800,
                             connect_args=args)
    except ModuleNotFoundError as exc:
        raise HistoryUnavailable(f"{display(url.render_as_string())}: PostgreSQL needs the Python package "
                                 f"'{exc.name}' (pip install 'psycopg[binary]')") from None


_ENGINES: dict[tuple[int, str], Engine] = {}


def _forget_engines_in_child() -> None:
    # A forked child must not use (or close: that would end the parent's sessions) the parent's
    # pooled connections; it makes its own engines (keyed by pid) and lets these go quietly.
    for engine in list(_ENGINES.values()):
        engine.dispose(close=False)
    _ENGINES.clear()


os.register_at_fork(after_in_child=_forget_engines_in_child)


def engine_for(db: str | Path) -> Engine:
    """One engine per history and process, with a small pool and the compiled-statement cache."""
    url = to_url(db)
    key = (os.getpid(), url.render_as_string(hide_password=False))
    engine = _ENGINES.get(key)
    if engine is None:
        engine = _sqlite_engine(url) if url.get_backend_name() == "sqlite" else _postgres_engine(url)
        _ENGINES[key] = engine
    return engine


def describe_error(exc: BaseException, db: str | Path) -> str:
    """One line for a database error, password masked."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    return mask("; ".join(lines[:3]) or type(orig).__name__, db)


# ---------------------------------------------------------------------------------------------
# Schema revisions
# ---------------------------------------------------------------------------------------------

def revision(conn: Connection) -> str | None:
    """The Alembic revision of the database, None when it has no ``alembic_version`` table."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
    return rows[0] if len(rows) == 1 else ",".join(sorted(rows))


def _user_version(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())


def _refuse_newer(rev: str | None, user_version: int | None, where: str) -> None:
    if rev is not None and rev not in REVISIONS:
        raise HistoryError(f"{where}: the history is at schema revision {rev}, newer than this gpu-stress knows "
                           f"({HEAD}); upgrade gpu-stress or use another --history")
    if user_version is not None and user_version > ALEMBIC_USER_VERSION:
        raise HistoryError(f"{where}: the history database is at schema version {user_version}, newer than this "
                           f"gpu-stress knows ({ALEMBIC_USER_VERSION}); upgrade gpu-stress or use another --history")


def _alembic(conn: Connection, *, stamp: str | None) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    if stamp:
        command.stamp(cfg, stamp)
    command.upgrade(cfg, "head")


def _at_head(conn: Connection) -> bool:
    """The common case in one query: the database is at :data:`HEAD` already."""
    try:
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:     # no such table (yet): the slow path finds out what there is
        rows = []
    conn.rollback()        # the caller starts its own transactions
    return [tuple(r) for r in rows] == [(HEAD,)]


def upgrade(conn: Connection, *, create: bool, where: str) -> str | None:
    """Bring the database to :data:`HEAD`; returns the revision it was at (None: new or pre-Alembic)."""
    if _at_head(conn):
        return HEAD
    sqlite = conn.dialect.name == "sqlite"
    before = revision(conn)
    uv = _user_version(conn) if sqlite else None
    conn.rollback()
    _refuse_newer(before, uv, where)
    if before == HEAD:
        return before
    if before is None and not create and not inspect(conn).has_table("runs"):
        conn.rollback()
        raise HistoryError(f"{where}: no history there yet (it is created by the first recorded run)")
    conn.rollback()
    conn.execution_options(stress_write=True)
    try:
        with conn.begin():
            if not sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            # Another process may have upgraded while we waited for the lock.
            before = revision(conn)
            uv = _user_version(conn) if sqlite else None
            _refuse_newer(before, uv, where)
            if before == HEAD:
                return before
            stamp = None
            if sqlite and before is None and uv:        # an SQLite file from before Alembic
                raw = conn.connection.dbapi_connection
                for version in range(uv, LEGACY_VERSION):
                    MIGRATIONS[version](raw)
                stamp = "0001"
            _alembic(conn, stamp=stamp)
            if sqlite:
                conn.exec_driver_sql(f"PRAGMA user_version = {ALEMBIC_USER_VERSION}")
    finally:
        conn.execution_options(stress_write=False)
    return before


@contextmanager
def open_db(db: str | Path, *, create: bool = True, write: bool = False) -> Iterator[Connection]:
    """A connection to the history, its schema at :data:`HEAD` (created when ``create``). With
    ``write``, SQLite transactions begin IMMEDIATE. Errors become :class:`HistoryError` (exit 2) or
    :class:`HistoryUnavailable` (exit 3), one line, password masked."""
    url = to_url(db)
    where = display(db)
    path = Path(url.database) if url.get_backend_name() == "sqlite" else None
    if path is not None:
        where = str(path)
        if not create and not path.exists():
            raise HistoryError(f"{path}: no history database there yet (it is created by the first run)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(f"{path}: cannot create the history database's folder ({exc.strerror})") from None
    engine = engine_for(db)
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        if path is not None:
            raise HistoryError(f"{where}: not a usable history database ({describe_error(exc, db)})") from None
        raise HistoryUnavailable(f"{where}: cannot connect to the history database "
                                 f"({describe_error(exc, db)})") from None
    try:
        upgrade(conn, create=create, where=where)
        if write:
            conn.execution_options(stress_write=True)
        yield conn
    except OperationalError as exc:
        why = describe_error(exc, db)
        if path is not None and ("locked" in why or "busy" in why):
            raise HistoryUnavailable(f"{where}: the history database stayed locked by another writer for "
                                     f"{BUSY_TIMEOUT_S:.0f} s ({why})") from None
        if path is None and exc.connection_invalidated:
            raise HistoryUnavailable(f"{where}: lost the connection to the history database ({why})") from None
        raise HistoryError(f"{where}: not a usable history database ({why})") from None
    except SQLAlchemyError as exc:
        raise HistoryError(f"{where}: not a usable history database ({describe_error(exc, db)})") from None
    finally:
        conn.close()
