"""A real fleet on loopback: a Buildbot master and three Buildbot workers (each with its own expected
GPU/driver/compositor properties) set up by ``gpu-stress fleet init``, one shared history; a forced
build of a tiny soak on every worker gives three rows in the history and three bundles on the master;
then one worker is SIGSTOPped mid-soak and the master records "host stopped responding" for it, with
the time it last heard from it. Every wait is bounded; every process started is ended (process groups,
then whatever is left of their descendants).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("buildbot", reason="Buildbot is in the 'test' and 'fleet' extras")
pytest.importorskip("buildbot_worker", reason="buildbot-worker is in the 'test' and 'fleet' extras")
psutil = pytest.importorskip("psutil")

from buildbot.process.results import RETRY, SUCCESS, WARNINGS  # noqa: E402

from stress.fleet.records import HOST_STOPPED  # noqa: E402
from stress.history import query_runs  # noqa: E402
from tests.conftest import ROOT, run_cli  # noqa: E402

TINY = """
name: tiny
model:
  base: builtin:tiny-sdxl
  refiner: null
steps: 2
images: 1
resolutions: [64x64]
seeds: 7
prompt: "a lighthouse at dusk"
probes:
  enabled: false
monitors:
  interval: 0.5
"""

MACHINES = {"box-a": {"gpu": "*4090*", "driver": "550.*", "compositor": "kwin"},
            "box-b": {"gpu": "*A4000*", "driver": "555.*", "compositor": "mutter"},
            "box-c": {"gpu": "*4090*", "driver": "550.*", "compositor": "sway"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(pred, timeout: float, what: str, procs: dict | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        for name, p in (procs or {}).items():
            if p.poll() is not None:
                raise AssertionError(f"{name} exited ({p.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _tree(p: subprocess.Popen) -> list[psutil.Process]:
    try:
        root = psutil.Process(p.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _end(procs: dict[str, subprocess.Popen]) -> None:
    """End what the test started: SIGCONT (a stopped tree cannot die of SIGTERM), SIGTERM to each
    process group, a bounded wait, then SIGKILL to everything left of each tree."""
    trees = {name: _tree(p) for name, p in procs.items()}
    for name, p in procs.items():
        for q in trees[name]:
            try:
                q.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for name, p in procs.items():
        for q in [*trees[name], *_tree(p)]:
            try:
                q.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _api(www: str, path: str):
    with urllib.request.urlopen(f"http://{www}/api/v2/{path}", timeout=10) as r:
        return json.loads(r.read())


def _soak_started(worker_dir: Path, machine: str, after: float) -> bool:
    """The machine's current build has a run whose worker process has started (its models are loading)."""
    for j in (worker_dir / machine / machine / "build" / "run" / "state").glob("iterations/*/*/journal.jsonl"):
        if j.stat().st_mtime >= after and "worker_start" in j.read_text(errors="replace"):
            return True
    return False


@pytest.fixture
def history_url(request, tmp_path) -> str:
    """The shared history: a throwaway PostgreSQL server (tests/pg.py) where one can run here, else
    SQLite on the master (the embedded default)."""
    try:
        from tests.pg import unavailable
    except ImportError:
        return str(tmp_path / "shared-history.db")
    if unavailable():
        print(f"\nshared history on SQLite: {unavailable()}")
        return str(tmp_path / "shared-history.db")
    return request.getfixturevalue("pg_url")


def _fleet_history(url: str) -> tuple[str, dict]:
    """The fleet file's history entry (no password in it) and the master's environment with it."""
    if "://" not in url:
        return f"history: {{url: {json.dumps(url)}}}", {}
    from sqlalchemy.engine import URL, make_url

    u = make_url(url)
    bare = URL.create(u.drivername, username=u.username, host=u.host, port=u.port,
                      database=u.database).render_as_string(hide_password=False)
    return (f"history: {{url: {json.dumps(bare)}, password: {{env: FLEET_TEST_DB_PASSWORD}}}}",
            {"FLEET_TEST_DB_PASSWORD": u.password})


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_fleet_of_three_workers_records_runs_bundles_and_a_host_that_stopped_responding(
        tmp_path, model_cache, history_url):
    t_test = time.monotonic()
    pb, www_port = _free_port(), _free_port()
    www = f"127.0.0.1:{www_port}"
    (tmp_path / "tiny.yaml").write_text(TINY)
    env_lines = "".join(f"      {k}: {json.dumps(v)}\n" for k, v in {
        "PYTHONPATH": str(ROOT), "STRESS_CACHE": str(model_cache), "STRESS_NVML_MODULE": "tests.fake_nvml"}.items())
    machines = "".join(
        f"  - name: {name}\n    expect: {json.dumps(exp)}\n    scenarios: [tiny]\n"
        f"    command: {json.dumps([sys.executable, '-m', 'stress'])}\n    env:\n{env_lines}"
        for name, exp in MACHINES.items())
    fleet = tmp_path / "fleet.yaml"
    history_entry, secret_env = _fleet_history(history_url)
    fleet.write_text(f"""fleet: loopback
master: {{host: 127.0.0.1, port: {pb}, listen: 127.0.0.1, www: "{www}"}}
{history_entry}
bundles: bundles
schedule: {{nightly: "03:00"}}
soak: {{duration: 10m, stop_on: never, min_free_disk: "0", unresponsive_after: 6s, ping_every: 1s}}
scenarios: {{tiny: tiny.yaml}}
machines:
{machines}""")
    res = run_cli("fleet", "check", str(fleet))
    assert res.returncode == 0, res.stderr
    for secret in secret_env.values():  # the database password is nowhere in the fleet file
        assert secret not in fleet.read_text()
    master, workers = tmp_path / "master", tmp_path / "workers"
    res = run_cli("fleet", "init", str(fleet), "--master", str(master), "--workers", str(workers), timeout=120)
    assert res.returncode == 0, res.stderr
    assert (master / "master.cfg").is_file() and (master / "buildbot.tac").is_file()
    for name in MACHINES:
        pw = master / "secrets" / f"worker-{name}"
        assert pw.stat().st_mode & 0o077 == 0 and (workers / name / "buildbot.tac").is_file()
        assert pw.read_text().strip() not in fleet.read_text()  # no secret in the fleet file

    bindir = Path(sys.executable).parent
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    master_env = dict(env, **secret_env)  # only the master holds the database password
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["master"] = subprocess.Popen([str(bindir / "buildbot"), "start", "--nodaemon", str(master)], env=master_env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for(lambda: "BuildMaster is running" in (master / "twistd.log").read_text(errors="replace")
                  if (master / "twistd.log").exists() else False, 90, "the master to start", procs)
        for name in MACHINES:
            procs[name] = subprocess.Popen([str(bindir / "buildbot-worker"), "start", "--nodaemon", str(workers / name)],
                                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True)
        _wait_for(lambda: len([w for w in _api(www, "workers")["workers"] if w["connected_to"]]) == 3, 90,
                  "three workers to connect", procs)
        assert {w["name"] for w in _api(www, "workers")["workers"]} == set(MACHINES)

        # 1. A forced tiny soak (one iteration) on every worker: three rows, three bundles.
        res = run_cli("fleet", "force", str(fleet), "--iterations", "1", "--reason", "test")
        assert res.returncode == 0, res.stderr
        t0 = time.monotonic()

        def three_rows():
            try:
                return len(query_runs(history_url, None)) >= 3 and all(
                    b["complete"] for b in _api(www, "builds")["builds"])
            except Exception:  # noqa: BLE001 - not created yet
                return False

        _wait_for(three_rows, 240, "three runs in the shared history", procs)
        t_round1 = time.monotonic() - t0
        rows = query_runs(history_url, None)
        assert sorted(r.hostname for r in rows) == sorted(MACHINES)
        assert all(r.scenario == "tiny" and r.verdict == "inconclusive" and r.soak_id for r in rows)
        for r in rows:
            bundle = tmp_path / "bundles" / r.hostname / "1"
            assert (bundle / "pack.json").is_file() and (bundle / "runs" / r.run_id / "journal.jsonl").is_file()
            assert list((bundle / "reports" / r.run_id).glob("*.tar.gz")), r.run_id
            assert r.report_path == str((bundle / "reports" / r.run_id / "report.json").resolve())
        builders = {b["builderid"]: b["name"] for b in _api(www, "builders")["builders"]}
        for b in _api(www, "builds")["builds"]:
            name = builders[b["builderid"]]
            assert b["results"] == WARNINGS, b  # the verdict is inconclusive (exit 11; probes are off)
            # each worker's build carries that machine's expected properties, from the fleet file
            (full,) = _api(www, f"builds/{b['buildid']}?property=*")["builds"]
            assert full["properties"]["expect_compositor"][0] == MACHINES[name]["compositor"]
            steps = {s["name"]: s["results"] for s in _api(www, f"builds/{b['buildid']}/steps")["steps"]}
            # the record step flags a machine whose GPU or driver is not what the fleet file expects
            # (the stand-in NVML is an RTX 4090 with 550.54.14: box-b expects an A4000 with 555)
            assert steps["record"] == (WARNINGS if name == "box-b" else SUCCESS), (name, steps)

        # 2. A longer soak on box-c; its whole host (worker and soak) is SIGSTOPped mid-run.
        t1 = time.time()
        res = run_cli("fleet", "force", str(fleet), "box-c", "--iterations", "20")
        assert res.returncode == 0, res.stderr
        _wait_for(lambda: _soak_started(workers, "box-c", t1), 120, "box-c's soak to start its run", procs)
        stopped = _tree(procs["box-c"])
        assert len(stopped) >= 3  # the worker daemon, the soak, its run
        t_stop = time.time()
        for q in stopped:
            q.send_signal(signal.SIGSTOP)

        def host_stopped():
            try:
                return [r for r in query_runs(history_url, {"machine": "box-c"}) if r.verdict == HOST_STOPPED]
            except Exception:  # noqa: BLE001
                return []

        (row,) = _wait_for(host_stopped, 60, "host stopped responding to be recorded", procs)
        t_detect = time.time() - t_stop
        assert row.scenario == "tiny" and row.status == HOST_STOPPED
        # the time of the last event: when the master last heard from box-c (before the stop, give
        # or take the answer to a ping that was in flight)
        assert t1 <= row.ended_at <= t_stop + 1.5, (t1, row.ended_at, t_stop)
        note = json.loads(Path(row.report_path).read_text())
        assert note["machine"] == "box-c" and "no answer from the worker" in note["reasons"][0]
        # the other machines' rows are untouched; the build is marked for retry by Buildbot
        assert len(query_runs(history_url, None)) == 4
        box_c = next(k for k, v in builders.items() if v == "box-c")
        _wait_for(lambda: any(b["builderid"] == box_c and b["number"] == 2 and b["complete"]
                              for b in _api(www, "builds")["builds"]), 30, "box-c's build to end", procs)
        (b2,) = [b for b in _api(www, "builds")["builds"] if b["builderid"] == box_c and b["number"] == 2]
        assert b2["results"] == RETRY, b2  # Buildbot runs it again when the worker is back

        # 3. box-a's host goes away mid-soak (power cut: the worker and everything under it are
        # SIGKILLed; its connection closes): recorded too, at once, with the time last heard from.
        t2 = time.time()
        res = run_cli("fleet", "force", str(fleet), "box-a", "--iterations", "20")
        assert res.returncode == 0, res.stderr
        _wait_for(lambda: _soak_started(workers, "box-a", t2), 120, "box-a's soak to start its run", procs)
        t_kill = time.time()
        for q in _tree(procs["box-a"]):
            q.kill()

        def box_a_stopped():
            try:
                return [r for r in query_runs(history_url, {"machine": "box-a"}) if r.verdict == HOST_STOPPED]
            except Exception:  # noqa: BLE001
                return []

        (row_a,) = _wait_for(box_a_stopped, 30, "box-a's lost connection to be recorded",
                             {k: v for k, v in procs.items() if k != "box-a"})
        assert t2 <= row_a.ended_at <= t_kill + 1.5, (t2, row_a.ended_at, t_kill)
        assert "connection was lost" in json.loads(Path(row_a.report_path).read_text())["reasons"][0]

        # 4. The fleet's answer from the shared history: status and view.
        res = run_cli("fleet", "status", str(fleet), env=secret_env)
        assert res.returncode == 0 and "HOST STOPPED RESPONDING" in res.stdout, res.stdout + res.stderr
        res = run_cli("fleet", "view", str(fleet), "--out", str(tmp_path / "fleet.html"), env=secret_env)
        assert res.returncode == 0, res.stderr
        page = (tmp_path / "fleet.html").read_text()
        assert "host stopped responding" in page and "box-b" in page
        assert len(query_runs(history_url, None)) == 5  # three runs, two hosts that stopped
        # the database password is in no log or file of the master (Buildbot logs its steps' arguments)
        for secret in secret_env.values():
            leaks = [p for p in master.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
            assert not leaks, leaks
        print(f"\nfleet test ({'PostgreSQL' if '://' in history_url else 'SQLite'}): first round {t_round1:.0f} s, "
              f"host stop detected in {t_detect:.1f} s, "
              f"total {time.monotonic() - t_test:.0f} s")
    finally:
        _end(procs)
    for name, p in procs.items():
        assert p.poll() is not None, f"{name} still running"
