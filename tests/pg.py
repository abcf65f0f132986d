"""A throwaway PostgreSQL server for tests: a private cluster (initdb into a fresh folder in /dev/shm,
else /tmp) on a free loopback port and a unix socket in that folder, started with ``pg_ctl -w`` and a
timeout, stopped ``-m fast`` at the end; only the server it started is ever stopped or killed.

Use it as a context manager, ``with postgres() as server: ...``, or through the pytest fixtures
``postgres_server`` (one server for the session) and ``pg_url`` (a fresh database on it for each
test; conftest.py registers both). What is yielded is a :class:`PostgresServer`:

- ``server.url``: ``postgresql://stress:PASSWORD@127.0.0.1:PORT/stress``, an ordinary login role with
  a password (scram-sha-256 over TCP, as a lab's server would ask for), owner of database ``stress``;
- ``server.database(name=None)``: creates a new empty database owned by that role, returns its URL;
- ``server.admin_url``: the superuser ``postgres`` over the unix socket (trust), for set-up only;
- ``server.port``, ``server.socket_dir``, ``server.password``, ``server.data_dir``, ``server.log``.

Postgres refuses to run as root: when the tests run as uid 0 (CI containers), initdb and the server
run as ``nobody`` through ``runuser`` (or ``setpriv``), with the folder chowned to it. Without the
binaries (Debian: ``postgresql``; found in /usr/lib/postgresql/*/bin, ``$STRESS_PG_BIN`` or PATH) or
without a way to drop root, :func:`unavailable` says why and the fixtures skip with that reason.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Iterator

import pytest

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
ROLE = "stress"
_names = count(1)


def bin_dir() -> Path | None:
    """The folder with initdb, pg_ctl and postgres."""
    candidates = [os.environ.get("STRESS_PG_BIN", "")]
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    if shutil.which("pg_ctl"):
        candidates.append(str(Path(shutil.which("pg_ctl")).parent))
    for c in candidates:
        if c and all((Path(c) / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(c)
    return None


def _drop_root() -> list[str] | None:
    """The command prefix that runs a program as an unprivileged user ([] when we are not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return None
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    return None


def unavailable() -> str | None:
    """Why no test server can be started here, or None."""
    if bin_dir() is None:
        return "PostgreSQL server binaries not found (Debian: apt-get install postgresql; or set STRESS_PG_BIN)"
    if _drop_root() is None:
        return "running as root and neither runuser nor setpriv can drop to user nobody (postgres refuses root)"
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        return "the Python package psycopg is not installed (pip install 'psycopg[binary]')"
    return None


def _scratch() -> str | None:
    """Where the cluster goes: /dev/shm (tmpfs) when it has room, so that creating and removing a
    database per test costs no disk I/O (on a disk mounted with ``discard`` removing a cluster of a
    few thousand files takes seconds); else the default temporary folder."""
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
        if os.access(shm, os.W_OK) and st.f_bavail * st.f_frsize > (1 << 30):
            return str(shm)
    except OSError:
        pass
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    port: int
    socket_dir: Path
    data_dir: Path
    log: Path
    password: str
    _created: list[str] = field(default_factory=list)

    def url_for(self, database: str) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(ROLE)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def admin(self):
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres",
                               autocommit=True, connect_timeout=10)

    def database(self, name: str | None = None) -> str:
        """A new, empty database owned by the ``stress`` role; its URL."""
        name = name or f"t{os.getpid()}_{next(_names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        self._created.append(name)
        return self.url_for(name)


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@contextmanager
def postgres(*, timeout: float = START_TIMEOUT_S) -> Iterator[PostgresServer]:
    """Start a throwaway cluster; stop it (and remove its folder) when the block ends."""
    why = unavailable()
    if why:
        raise RuntimeError(why)
    bins, prefix = bin_dir(), _drop_root()
    assert bins is not None and prefix is not None
    base = Path(tempfile.mkdtemp(prefix="stress-pg-", dir=_scratch()))
    data, log = base / "data", base / "server.log"
    if prefix:
        info = pwd.getpwnam("nobody")
        os.chown(base, info.pw_uid, info.pw_gid)
    started = False
    try:
        init = _run([*prefix, str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                     "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"], timeout)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
        for _attempt in range(3):     # a free port can be taken between the probe and the start
            port = _free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60 "
                    "-c shared_buffers=16MB -c dynamic_shared_memory_type=mmap")
            start = _run([*prefix, str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t",
                          str(int(timeout)), "-o", opts, "start"], timeout + 10)
            if start.returncode == 0:
                started = True
                break
            _stop(prefix, bins, data)
        if not started:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise RuntimeError(f"postgres did not start: {start.stderr.strip()[-300:]} {tail}")
        server = PostgresServer(port=port, socket_dir=base, data_dir=data, log=log,
                                password=secrets.token_urlsafe(12))
        with server.admin() as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{server.password}'")
            conn.execute(f"CREATE DATABASE {ROLE} OWNER {ROLE}")
        yield server
    finally:
        if started or (data / "postmaster.pid").exists():
            _stop(prefix, bins, data)
        shutil.rmtree(base, ignore_errors=True)


def _stop(prefix: list[str], bins: Path, data: Path) -> None:
    """Stop the server of ``data`` (fast shutdown); if it will not stop, kill that postmaster only."""
    pidfile = data / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
    except (OSError, ValueError, IndexError):
        pid = None
    try:
        _run([*prefix, str(bins / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", str(STOP_TIMEOUT_S),
              "stop"], STOP_TIMEOUT_S + 10)
    except subprocess.TimeoutExpired:
        pass
    if pid is not None and pidfile.exists():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    why = unavailable()
    if why:
        pytest.skip(why)
    with postgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server: its URL (with the role's password)."""
    return postgres_server.database()
