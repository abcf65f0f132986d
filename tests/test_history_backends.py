"""The history on both back ends: a real SQLite file and a real PostgreSQL server (a throwaway cluster,
tests/pg.py). Recording, queries, the ``history`` and ``compare`` commands, migrations (an SQLite file
from before Alembic upgraded in place), concurrent writers, and the one-line errors for a bad URL or a
server that cannot be reached, with the password never shown."""
from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from stress.errors import StressError
from stress.history import (HistoryError, SCHEMA_REVISION, find_run, open_db, query_runs, record_run,
                            record_summary, summarize_run, trends, try_record_run)
from stress.history.db import MIGRATIONS_DIR, REVISIONS, display, history_location, to_url
from stress.history.schema import metadata, metrics, runs, samples
from stress.journal import write_json_atomic
from tests.conftest import ROOT, run_cli
from tests.test_compare import times
from tests.test_history import make_run


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request, tmp_path) -> str:
    """A fresh history: an SQLite path, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "reports" / "history.db")
    return request.getfixturevalue("pg_url")


def _count(db: str, table=runs) -> int:
    with open_db(db, create=False) as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_record_query_and_find_on_both_back_ends(history, tmp_path):
    reports = tmp_path / "reports"
    rd = make_run(tmp_path / "runs", "r1", image_times=[1.0, 2.0], reports=reports)
    first = record_run(rd, reports / "r1", history, soak_id="soak-1", soak_iteration=3)
    assert record_run(rd, None, history) == first        # a re-record: same row, soak and report kept
    assert _count(history) == 1
    (run,) = query_runs(history)
    assert (run.soak_id, run.soak_iteration) == ("soak-1", 3)
    assert run.report_path == str((reports / "r1" / "report.json").resolve())
    n_metrics = _count(history, metrics)
    record_run(rd, None, history)
    assert _count(history, metrics) == n_metrics and _count(history, samples) == 4   # replaced, not appended
    for i, (driver, gpu) in enumerate([("555.42.02", "NVIDIA GeForce RTX 4090"), ("555.42.06", "NVIDIA RTX A6000"),
                                       ("550.54.14", "NVIDIA GeForce RTX 4090")]):
        record_run(make_run(tmp_path / "runs", f"a{i}", image_times=[1.0 + i], driver=driver, gpu=gpu,
                            verdict="reproduced" if i != 1 else "not-reproduced", t0=1.8e9 + i), None, history)
    assert [r.run_id for r in query_runs(history, {"driver": "555.*"})] == ["a0", "a1"]
    assert [r.run_id for r in query_runs(history, {"gpu": "*4090*"})] == ["r1", "a0", "a2"]
    assert [r.run_id for r in query_runs(history, {"run": "a[02]"})] == ["a0", "a2"]
    assert [r.run_id for r in query_runs(history, {"driver": "555.42.0?", "verdict": "reproduced"})] == ["a0"]
    assert [r.run_id for r in query_runs(history, {"driver": "555"})] == []          # exact unless a glob
    assert [r.run_id for r in query_runs(history, None, limit=2)] == ["a1", "a2"]
    assert find_run(history, "r1").samples["image_s"] == [1.0, 2.0]
    assert find_run(history, "a2").driver == "550.54.14" and find_run(history, "zz") is None
    with pytest.raises(StressError, match="matches 3 runs"):
        find_run(history, "a")
    groups = {g["driver"]: g for g in trends(query_runs(history))}
    assert groups["555.42.02"]["incidence"]["reproduced"] == 1 and groups["550.54.14"]["runs"] == 2


def test_machine_identity_is_recorded_and_kept(history, tmp_path):
    rd = make_run(tmp_path / "runs", "w1", image_times=[1.0])
    env = json.loads((rd / "environment.json").read_text())
    env["host"]["machine_id"] = "m-0123456789abcdef"
    env["display"] = {"type": "wayland", "compositor": "sway", "display_server": "sway"}
    write_json_atomic(rd / "environment.json", env)
    record_run(rd, None, history)
    (run,) = query_runs(history, {"machine_id": "m-0123456789abcdef", "compositor": "sway"})
    assert (run.machine_id, run.compositor, run.display_server, run.session_type) == (
        "m-0123456789abcdef", "sway", "sway", "wayland")
    # a re-record that knows less (environment.json lost) keeps the identity recorded first
    (rd / "environment.json").unlink()
    record_run(rd, None, history)
    assert find_run(history, "w1").machine_id == "m-0123456789abcdef"
    # a row without a run directory (e.g. a host that stopped responding), idempotent on its id
    s = summarize_run(rd)
    s.run_id, s.status, s.verdict = "gone-1", "host-stopped-responding", "inconclusive"
    assert record_summary(history, s) == record_summary(history, s)
    assert find_run(history, "gone-1").status == "host-stopped-responding" and _count(history) == 2


def test_history_and_compare_commands_on_both_back_ends(history, tmp_path):
    for i in range(4):
        record_run(make_run(tmp_path / "old", f"old{i}", image_times=times(i, n=4), driver="550.54.14",
                            t0=1.79e9 + i), None, history)
        record_run(make_run(tmp_path / "new", f"new{i}", image_times=times(10 + i, n=4, scale=1.6),
                            driver="555.42.02", verdict="reproduced", t0=1.79e9 + 10 + i), None, history)
    # the environment variable selects the history when no option does
    res = run_cli("history", "--driver", "555.*", "--json", env={"STRESS_HISTORY_URL": history})
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [r["run_id"] for r in data["runs"]] == ["new0", "new1", "new2", "new3"]
    assert data["db"] == display(history)
    res = run_cli("compare", "driver=550.54.14", "driver=555.42.02", "--db", history)   # --db: the older spelling
    assert res.returncode == 0, res.stderr
    assert "SIGNIFICANT (worse)" in res.stdout and "driver: A 550.54.14 | B 555.42.02" in res.stdout
    assert "verdicts: A not-reproduced 4 | B reproduced 4  -> DIFFER" in res.stdout
    if history.startswith("postgresql"):
        password = to_url(history).password
        assert password and password not in res.stdout + res.stderr + json.dumps(data)
        assert "***" in data["db"]


# The schema the released SQLite-only code created (PRAGMA user_version 3), as `sqlite3 .schema` shows it.
V3_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE, recorded_at REAL NOT NULL,
    started_at REAL, ended_at REAL, wall_s REAL, hostname TEXT, gpu TEXT, driver TEXT, kernel TEXT,
    scenario TEXT, scenario_sha256 TEXT, verdict TEXT, exit_code INTEGER, status TEXT,
    images_ok INTEGER, images_failed INTEGER, images_per_min REAL, image_s_median REAL,
    run_dir TEXT, report_path TEXT, cuda_driver TEXT, python TEXT, libraries TEXT, soak_id TEXT,
    soak_iteration INTEGER);
CREATE TABLE metrics (run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, name TEXT NOT NULL, value REAL,
    PRIMARY KEY (run, name));
CREATE TABLE samples (run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, name TEXT NOT NULL,
    "values" TEXT NOT NULL, PRIMARY KEY (run, name));
CREATE INDEX runs_scenario ON runs (scenario, started_at);
CREATE INDEX runs_driver ON runs (driver, started_at);
CREATE INDEX runs_hostname ON runs (hostname, started_at);
PRAGMA user_version = 3;
"""


def _make_v3(path: Path, n: int = 3) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V3_SCHEMA)
    for i in range(n):
        conn.execute("INSERT INTO runs (run_id, recorded_at, started_at, hostname, gpu, driver, scenario, verdict, "
                     "status, images_ok, images_failed, images_per_min, libraries, soak_id, soak_iteration) "
                     "VALUES (?, 1.7e9, ?, 'box', 'RTX 4090', ?, 'demo', 'reproduced', 'finished', 4, 0, ?, "
                     "'{\"torch\": \"2.5.1\"}', 'soak-old', ?)",
                     (f"v3-{i}", 1.7e9 + i, "535.104" if i < 2 else "550.54", 10.0 + i, i))
        conn.execute("INSERT INTO metrics VALUES (?, 'images_per_min', ?)", (i + 1, 10.0 + i))
        conn.execute("INSERT INTO samples VALUES (?, 'image_s', ?)", (i + 1, json.dumps([1.0 + i, 1.1 + i, 1.2 + i])))
    conn.commit()
    conn.close()


def test_a_v3_sqlite_file_upgrades_in_place_without_losing_rows(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    db = tmp_path / "history.db"
    _make_v3(db)
    old = query_runs(db, with_samples=True)          # opening it upgrades it
    assert [r.run_id for r in old] == ["v3-0", "v3-1", "v3-2"]
    assert old[2].metrics == {"images_per_min": 12.0} and old[2].samples == {"image_s": [3.0, 3.1, 3.2]}
    assert old[1].libraries == {"torch": "2.5.1"} and (old[1].soak_id, old[1].soak_iteration) == ("soak-old", 1)
    assert old[0].machine_id is None                 # the new columns exist, empty for old rows
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4   # an older gpu-stress now refuses it
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_REVISION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with open_db(db) as conn:
        # Equivalent to a fresh database's schema: only what SQLite cannot tell apart (REAL is Float's
        # affinity, an inline REFERENCES is reflected without its ON DELETE, INTEGER PRIMARY KEY is an alias
        # of the row id) differs.
        kinds = set()
        for diff in compare_metadata(MigrationContext.configure(conn), metadata):
            for d in diff if isinstance(diff, list) else [diff]:
                kinds.add(d[0])
        assert kinds <= {"modify_type", "remove_fk", "add_fk", "modify_nullable"}, kinds
    # new runs go in after the old ones, old rows compare like new ones, and deleting cascades
    record_run(make_run(tmp_path / "runs", "new-run", image_times=[2.0], driver="550.54"), None, db)
    assert [r.run_id for r in query_runs(db, {"driver": "550.54"})] == ["v3-2", "new-run"]
    res = run_cli("compare", "driver=535.104", "driver=550.54", "--history", str(db), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["a"]["runs"] == ["v3-0", "v3-1"], res.stderr
    with open_db(db, write=True) as conn:
        with conn.begin():
            conn.execute(runs.delete().where(runs.c.run_id == "v3-0"))
    assert _count(str(db), metrics) == 2 + len(find_run(db, "new-run").metrics)


def test_the_migrations_build_the_tables_and_know_their_head(history):
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(cfg)
    assert script.get_current_head() == SCHEMA_REVISION == REVISIONS[-1]
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == list(REVISIONS)
    with open_db(history) as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == SCHEMA_REVISION


def test_a_newer_history_is_refused_in_one_line(history, tmp_path):
    record_run(make_run(tmp_path, "r1", image_times=[1.0]), None, history)
    with open_db(history, write=True) as conn:
        with conn.begin():
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(HistoryError, match="revision 9999, newer than this gpu-stress"):
        query_runs(history)
    res = run_cli("history", "--history", history)
    assert res.returncode == 2 and "newer than this gpu-stress" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


WRITER = r"""
import sys, time
from pathlib import Path
from stress.history import record_run
db, go, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
(go.parent / ("ready-" + me)).touch()
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.005)
for d in sys.argv[4:]:
    record_run(Path(d), None, db, soak_id="soak-" + me, soak_iteration=0)
"""


@pytest.mark.parametrize("writers", [6])
def test_concurrent_writers_lose_and_duplicate_nothing(history, tmp_path, writers):
    """N processes record into one fresh history at once (so they also race to create its schema):
    their own runs, and the same two shared runs from every process."""
    base = tmp_path / "runs"
    shared = [make_run(base, f"shared-{k}", image_times=[1.0, 1.5]) for k in range(2)]
    own = {w: [make_run(base, f"w{w}-{k}", image_times=[1.0 + k, 2.0]) for k in range(2)] for w in range(writers)}
    go = tmp_path / "go"
    env = {"PYTHONPATH": str(ROOT)}
    procs = []
    for w in range(writers):
        order = own[w][:1] + (shared if w % 2 else shared[::-1]) + own[w][1:]
        procs.append(subprocess.Popen([sys.executable, "-c", WRITER, history, str(go), str(w), *map(str, order)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 60     # all imported and waiting at the line, then all at once
        while len(list(tmp_path.glob("ready-*"))) < writers and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        go.touch()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    took = time.monotonic() - t0
    for p, (_out, err) in zip(procs, results):
        assert p.returncode == 0, err
    recorded = query_runs(history, limit=0, with_samples=True)
    ids = [r.run_id for r in recorded]
    expected = {f"w{w}-{k}" for w in range(writers) for k in range(2)} | {"shared-0", "shared-1"}
    assert len(ids) == len(set(ids)) == len(expected) and set(ids) == expected
    for r in recorded:
        want = summarize_run(base / r.run_id)
        assert r.metrics.keys() == want.metrics.keys() and r.samples == want.samples, r.run_id
        assert r.soak_id in {f"soak-{w}" for w in range(writers)}
    assert _count(history, metrics) == sum(len(summarize_run(base / i).metrics) for i in expected)
    print(f"{writers} writers, {len(expected)} runs ({writers * 4} records) on {history.split(':')[0]}: {took:.2f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


UNREACHABLE = "postgresql://u:pw-one-two@127.0.0.1:{port}/h?connect_timeout=3"


@pytest.mark.parametrize("location, code, message", [
    ("mysql://u:pw-one-two@db/h", 2, "unsupported history URL (scheme 'mysql')"),
    ("postgresql://u:pw-one-two@127.0.0.1/", 2, "name the database"),
    ("sqlite://", 2, "an SQLite history needs a file"),
    ("postgresql://u:pw-one-two@[::1/h", 2, "not a valid history URL"),
    (UNREACHABLE, 3, "cannot connect to the history database"),
])
def test_bad_urls_and_unreachable_servers_are_one_line(location, code, message, tmp_path):
    location = location.format(port=_free_port())
    with pytest.raises(HistoryError) as err:
        query_runs(location)
    assert err.value.exit_code == code and message in str(err.value) and "pw-one-two" not in str(err.value)
    assert "\n" not in str(err.value)
    warning = try_record_run(make_run(tmp_path, "r1", image_times=[1.0]), None, location)
    assert warning and message in warning and "pw-one-two" not in warning


def test_the_commands_exit_2_for_a_bad_url_and_3_for_an_unreachable_server():
    for args, code in ((["history", "--history", "mysql://u:pw-one-two@db/h"], 2),
                       (["compare", "a", "b", "--history", UNREACHABLE.format(port=_free_port())], 3)):
        res = run_cli(*args)
        assert res.returncode == code and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
        assert "pw-one-two" not in res.stderr + res.stdout and "u:***@" in res.stderr


def test_a_wrong_password_is_refused_without_showing_it(postgres_server, tmp_path):
    url = postgres_server.url.replace(postgres_server.password, "not-the-password")
    res = run_cli("history", "--history", url)
    assert res.returncode == 3 and "password authentication failed" in res.stderr, res.stderr
    assert "not-the-password" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert display(url) == url.replace("not-the-password", "***")


def test_history_location(monkeypatch, tmp_path):
    monkeypatch.delenv("STRESS_HISTORY_URL", raising=False)
    assert history_location(tmp_path / "h.db") == str((tmp_path / "h.db").resolve())
    assert history_location(None, default=tmp_path / "d.db") == str(tmp_path / "d.db")
    monkeypatch.setenv("STRESS_HISTORY_URL", "postgresql://lab@db.example/stress")
    assert history_location(None, default=tmp_path / "d.db") == "postgresql://lab@db.example/stress"
    assert history_location("other.db").endswith("/other.db")           # the option wins
    assert to_url("postgres://lab@db/stress").drivername == "postgresql+psycopg"
    assert to_url(f"sqlite:///{tmp_path}/x.db").database == str(tmp_path / "x.db")
    from stress.soak.state import _history

    assert _history({"reports": str(tmp_path)}) == "postgresql://lab@db.example/stress"
    monkeypatch.delenv("STRESS_HISTORY_URL")
    assert _history({"reports": str(tmp_path)}) == str(tmp_path.resolve() / "history.db")


def test_a_soak_records_its_iterations_in_a_postgresql_history(pg_url, tmp_path):
    """The real Soak loop (no child process: an iteration that finished while the soak was down is
    adopted) records it with its soak id into the history URL it was given (an SQLite path: test_soak)."""
    history = pg_url
    from stress.soak import Soak, prepare_state
    from tests.test_soak import TINY, add_events

    scen = tmp_path / "tiny.yaml"
    scen.write_text(TINY)
    state, cfg, _ = prepare_state(tmp_path / "state", [scen], {"iterations": 1, "reports": str(tmp_path / "reports"),
                                                               "history": history, "min_free_bytes": 0})
    assert cfg["history"] == history_location(history)
    make_run(state / "iterations" / "0001-1", "adopt-me", image_times=[1.0], verdict="reproduced")
    add_events(state, {"ev": "iteration_start", "iteration": 1, "attempt": 1, "scenario": "tiny", "slot": 0,
                       "folder": "iterations/0001-1", "boot_id": "b0", "resume_run": None})
    res = Soak(state, stream=None).run()
    assert res.exit_code == 10 and not res.summary.get("warnings"), res.summary
    hist = query_runs(history, {"soak": cfg["soak_id"]})
    assert [(r.run_id, r.soak_iteration, r.verdict) for r in hist] == [("adopt-me", 1, "reproduced")]


def test_a_writer_waits_for_a_locked_sqlite_file_then_gives_up_in_one_line(tmp_path, monkeypatch):
    import stress.history.db as hdb

    monkeypatch.setattr(hdb, "BUSY_TIMEOUT_S", 0.5)
    db = str(tmp_path / "h.db")
    rd = make_run(tmp_path / "runs", "r1", image_times=[1.0])
    record_run(rd, None, db)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")           # another writer holds the lock
    try:
        t0 = time.monotonic()
        with pytest.raises(HistoryError) as err:
            record_run(rd, None, db)
        assert 0.4 < time.monotonic() - t0 < 10
        assert err.value.exit_code == 3 and "stayed locked by another writer" in str(err.value)
        assert query_runs(db)[0].run_id == "r1"     # readers are not blocked (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert record_run(rd, None, db) == 1 and _count(db) == 1


def test_report_records_a_run_into_a_postgresql_history(pg_url, tmp_path):
    rd = make_run(tmp_path / "artifacts", "20261201-010101-demo-abcd", image_times=[1.0, 1.2])
    res = run_cli("report", str(rd), "--out", str(tmp_path / "reports"), "--no-bundle", "--history", pg_url)
    assert res.returncode == 0, res.stderr
    assert "not recorded" not in res.stderr and to_url(pg_url).password not in res.stdout + res.stderr
    (run,) = query_runs(pg_url)
    assert run.run_id == rd.name and run.report_path and run.report_path.endswith("report.json")
