"""The run history: metrics derived from run directories, a real SQLite file, schema migrations,
filters and trends, and the ``history`` command in a real subprocess.

Run directories here are synthetic (written with the real Journal, in the documented event shapes)
so that every expected number is known exactly.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from stress.errors import StressError
from stress.history import (LEGACY_VERSION, MIGRATIONS, SCHEMA_REVISION, HistoryError, find_run, open_db,
                            parse_filter, query_runs, record_run, summarize_run, trends, try_record_run)
from stress.history.compare import compare_runs
from stress.journal import Journal, write_json_atomic
from stress.rundata import build_run_json
from tests.conftest import run_cli

STAGES = {"text_encode": 0.1, "base": 0.8, "vae_decode": 0.1}


def make_run(root: Path, run_id: str, *, image_times: list[float], verdict: str = "not-reproduced",
             scenario: str = "demo", driver: str = "550.54.14", hostname: str = "box",
             gpu: str = "NVIDIA GeForce RTX 4090", kernel: str = "6.8.0-45-generic",
             probe_latencies: dict[tuple[str, str], list[float]] | None = None, probe_failures: int = 0,
             xids: int = 0, mem_used: list[int] | None = None, status: str = "finished", t0: float = 1.79e9,
             gap_after: int | None = None, reports: Path | None = None, failed_images: int = 0,
             probe_metrics: dict[tuple[str, str], dict] | None = None) -> Path:
    """A run directory as the runner leaves it: journal, environment.json, run.json (and a report)."""
    rd = root / run_id
    rd.mkdir(parents=True)
    env = {"host": {"hostname": hostname}, "os": {"release": kernel}, "python": {"version": "3.11.9"},
           "gpu": {"driver": driver, "cuda_driver": "12.4", "gpus": [{"index": 0, "name": gpu}]},
           "libraries": {"torch": "2.5.1", "diffusers": "0.31.0", "compel": None}}
    write_json_atomic(rd / "environment.json", env)
    write_json_atomic(rd / "scenario.resolved.json", {"name": scenario})
    t = t0
    with Journal(rd / "journal.jsonl", fsync=False) as j:
        j.append("run_start", t=t, run_id=run_id, scenario=scenario, scenario_sha256="ab" * 32, argv=[],
                 stress_version="0", pid=1, resumed=False)
        j.append("environment", t=t, env=env)
        j.append("plan", t=t, images=len(image_times) + failed_images, batches=len(image_times), steps=2)
        for (phase, kind), lats in (probe_latencies or {}).items():
            for rep, lat in enumerate(lats):
                j.append("probe", t=t, phase=phase, kind=kind, rep=rep, status="ok", latency_s=lat,
                         metrics=dict((probe_metrics or {}).get((phase, kind), {})))
        for n in range(probe_failures):
            j.append("probe", t=t, phase="after", kind="screenshot", rep=n, status="fail", latency_s=None,
                     metrics={}, reason="black frame")
        j.append("phase", t=t, phase="workload", state="start")
        t += 7.0  # model loading: not part of throughput
        j.append("worker_ready", t=t, worker=0, pid=2, load_s=7.0, device="cuda", dtype="fp16")
        for i, dt in enumerate(image_times):
            j.append("image_start", t=t, index=i, seed=i, width=64, height=64)
            t += dt
            j.append("image", t=t, index=i, seed=i, width=64, height=64, outcome="ok",
                     timings={k: round(dt * f, 6) for k, f in STAGES.items()})
            if gap_after is not None and i == gap_after:
                t += 100.0  # e.g. a model reload between images: not part of throughput either
            for m in (mem_used or [])[i:i + 1]:
                j.append("nvml", t=t, gpu=0, mu=m, mt=24 << 30)
        for k in range(failed_images):
            i = len(image_times) + k
            j.append("image_start", t=t, index=i, seed=i, width=64, height=64)
            j.append("image", t=t, index=i, seed=i, width=64, height=64, outcome="crash", error="worker died")
        for _ in range(xids):
            j.append("xid", t=t, gpu=0, xid=79, category="fallen-off-bus", description="", source="kernel-log",
                     raw="NVRM: Xid 79")
        j.append("phase", t=t, phase="workload", state="end")
        if status != "incomplete":
            code = {"reproduced": 10, "not-reproduced": 0, "inconclusive": 11, "error": 12}[verdict]
            j.append("verdict", t=t, verdict=verdict, reasons=[f"synthetic {verdict}"], exit_code=code, details={})
            j.append("run_end", t=t + 1, status=status, images_ok=len(image_times), images_failed=failed_images,
                     wall_s=round(t + 1 - t0, 3))
    write_json_atomic(rd / "run.json", build_run_json(rd))
    if reports is not None:
        write_json_atomic(reports / run_id / "report.json", {"run_id": run_id, "verdict": verdict})
    return rd


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "reports" / "history.db"


def test_summary_metrics_are_derived_exactly(tmp_path):
    times = [2.0, 4.0, 3.0, 5.0]
    rd = make_run(tmp_path, "r1", image_times=times, gap_after=1, xids=2, mem_used=[5 << 30, 9 << 30, 7 << 30],
                  probe_latencies={("baseline", "screenshot"): [0.1, 0.3, 0.2],
                                   ("after", "screenshot"): [0.5, 0.9, 0.7, 0.6]},
                  probe_failures=3, failed_images=1, reports=tmp_path / "reports")
    s = summarize_run(rd, tmp_path / "reports" / "r1")
    m = s.metrics
    assert s.run_id == "r1" and s.scenario == "demo" and s.verdict == "not-reproduced" and s.status == "finished"
    assert (s.hostname, s.gpu, s.driver, s.cuda_driver, s.kernel) == ("box", "NVIDIA GeForce RTX 4090", "550.54.14",
                                                                       "12.4", "6.8.0-45-generic")
    assert s.libraries == {"torch": "2.5.1", "diffusers": "0.31.0"}  # missing ones are dropped
    assert s.images_ok == 4 and s.images_failed == 1 and m["images_failed"] == 1
    assert s.samples["image_s"] == pytest.approx(times)
    assert m["image_s_median"] == pytest.approx(3.5)
    assert m["stage_s_median:base"] == pytest.approx(0.8 * 3.5)
    # 4 images in 14 s of image time: the 7 s of loading and the 100 s gap do not count.
    assert m["images_per_min"] == pytest.approx(4 * 60 / 14.0, rel=1e-4)
    assert m["probe_latency_median:baseline:screenshot"] == pytest.approx(0.2)
    assert m["probe_latency_median:after:screenshot"] == pytest.approx(0.65)
    assert s.samples["probe_latency_s:after:screenshot"] == [0.5, 0.9, 0.7, 0.6]
    assert m["probe_failures"] == 3 and m["probe_failures:after"] == 3
    assert m["xid_events"] == 2 and m["gpu_mem_used_peak_bytes"] == 9 << 30 and m["load_s"] == 7.0
    assert s.report_path == str((tmp_path / "reports" / "r1" / "report.json").resolve())


def test_a_redefined_probe_latency_is_its_own_metric_and_never_compared_with_the_old(tmp_path):
    # display-wayland's latency was timed from the mapping commit (about 1 ms on sway) and is now timed
    # from the connection (about 3 ms): the new one says so, and gets its own metric.
    old = make_run(tmp_path, "old", image_times=[1.0],
                   probe_latencies={("after", "display-wayland"): [0.001, 0.0011, 0.0009, 0.001]})
    new = make_run(tmp_path, "new", image_times=[1.0],
                   probe_latencies={("after", "display-wayland"): [0.003, 0.0031, 0.0029, 0.003]},
                   probe_metrics={("after", "display-wayland"): {"latency_from": "connect"}})
    a, b = summarize_run(old), summarize_run(new)
    assert "probe_latency_median:after:display-wayland" in a.metrics
    assert "probe_latency_median:after:display-wayland@connect" not in a.metrics
    assert b.metrics["probe_latency_median:after:display-wayland@connect"] == pytest.approx(0.003)
    assert "probe_latency_median:after:display-wayland" not in b.metrics
    rows = {r["metric"]: r for r in compare_runs([a], [b])["metrics"]}
    for name in ("probe_latency_median:after:display-wayland", "probe_latency_median:after:display-wayland@connect"):
        assert rows[name]["basis"] == "one side only" and not rows[name]["significant"], rows[name]


def test_summary_of_an_interrupted_run_and_a_non_run(tmp_path):
    rd = make_run(tmp_path, "cut", image_times=[1.0], status="incomplete")
    s = summarize_run(rd)
    assert s.status == "incomplete" and s.verdict is None and s.images_ok == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(StressError, match="not a run directory"):
        summarize_run(tmp_path / "empty")


def test_record_run_is_idempotent_per_run_id(tmp_path, db):
    rd = make_run(tmp_path / "a", "r1", image_times=[1.0, 1.0], reports=tmp_path / "reports")
    first = record_run(rd, tmp_path / "reports" / "r1", db, soak_id="soak-1", soak_iteration=3)
    second = record_run(rd, None, db)  # again, e.g. after `gpu-stress report`: same row, membership kept
    assert first == second
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        row = conn.execute("SELECT soak_id, soak_iteration, report_path, verdict FROM runs").fetchone()
        assert row == ("soak-1", 3, str((tmp_path / "reports" / "r1" / "report.json").resolve()), "not-reproduced")
        n_metrics = conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    record_run(rd, None, db)
    with sqlite3.connect(db) as conn:  # metrics are replaced, not appended
        assert conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == n_metrics
    run = find_run(db, "r1")
    assert run is not None and run.samples["image_s"] == [1.0, 1.0]


def test_try_record_run_turns_failures_into_a_warning(tmp_path, db):
    (tmp_path / "nothing").mkdir()
    warning = try_record_run(tmp_path / "nothing", None, db)
    assert warning and "not a run directory" in warning


def _make_v1(path: Path) -> None:
    """A history file exactly as the first released schema left it, with one recorded run."""
    conn = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO runs (run_id, recorded_at, started_at, hostname, driver, scenario, verdict, exit_code, "
                 "status, images_ok, images_failed, images_per_min, image_s_median, run_dir) "
                 "VALUES ('old-run', 1.7e9, 1.7e9, 'box', '535.104', 'demo', 'reproduced', 10, 'finished', 5, 0, "
                 "12.5, 4.8, '/gone')")
    conn.close()


def test_migrating_a_v1_file_to_the_current_schema(tmp_path, db):
    db.parent.mkdir(parents=True)
    _make_v1(db)
    with open_db(db):
        pass
    with sqlite3.connect(db) as conn:   # through the legacy steps to 3, then Alembic to the newest revision
        assert LEGACY_VERSION == 3 and conn.execute("PRAGMA user_version").fetchone()[0] == LEGACY_VERSION + 1
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_REVISION,)]
        cols = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
        assert {"libraries", "soak_id", "soak_iteration", "cuda_driver", "python", "machine_id", "compositor"} <= cols
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(runs)")}
        assert {"runs_scenario", "runs_driver", "runs_hostname", "runs_machine_id"} <= indexes
    old = find_run(db, "old-run")
    # the v1 columns were carried into the v2 metrics table
    assert old is not None and old.metrics == {"images_per_min": 12.5, "image_s_median": 4.8}
    assert old.verdict == "reproduced" and old.driver == "535.104" and old.soak_id is None
    # the migrated file takes new runs like a fresh one, and migrating again changes nothing
    record_run(make_run(tmp_path, "new-run", image_times=[2.0]), None, db)
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY id")] == ["old-run", "new-run"]
    assert [r.run_id for r in query_runs(db, {"scenario": "demo"})] == ["old-run", "new-run"]


def test_a_newer_or_foreign_database_is_refused_cleanly(tmp_path):
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {LEGACY_VERSION + 2}")   # past the Alembic-managed 4
    conn.close()
    with pytest.raises(HistoryError, match="newer than this gpu-stress"):
        with open_db(newer):
            pass
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(HistoryError, match="not a usable history database"):
        with open_db(junk):
            pass
    res = run_cli("history", "--db", str(junk))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1


def test_filters_globs_and_trends(tmp_path, db):
    runs = tmp_path / "runs"
    verdicts = ["reproduced", "not-reproduced", "reproduced", "inconclusive"]
    for i, v in enumerate(verdicts):
        record_run(make_run(runs, f"a{i}", image_times=[1.0 + i], verdict=v, driver="555.42.02", t0=1.79e9 + i), None, db)
    record_run(make_run(runs, "b0", image_times=[1.0], driver="550.54.14", hostname="other", t0=1.78e9), None, db)
    assert [r.run_id for r in query_runs(db, {"driver": "555.*"})] == ["a0", "a1", "a2", "a3"]
    assert [r.run_id for r in query_runs(db, {"machine": "other"})] == ["b0"]
    assert [r.run_id for r in query_runs(db, parse_filter("driver=555.42.02,verdict=reproduced"))] == ["a0", "a2"]
    assert [r.run_id for r in query_runs(db, None, limit=2)] == ["a2", "a3"]  # the newest two, oldest first
    with pytest.raises(StressError, match="KEY=VALUE"):
        parse_filter("colour=blue")
    groups = {g["driver"]: g for g in trends(query_runs(db))}
    g = groups["555.42.02"]
    assert g["runs"] == 4 and g["incidence"]["reproduced"] == 2 and g["incidence"]["conclusive"] == 3
    assert g["incidence"]["frequency"] == "sometimes" and g["image_s_median"] == pytest.approx(2.5)
    assert groups["550.54.14"]["machine"] == "other"


def test_history_command(tmp_path, db):
    record_run(make_run(tmp_path / "runs", "x1", image_times=[2.0, 2.0], verdict="reproduced"), None, db)
    record_run(make_run(tmp_path / "runs", "x2", image_times=[1.0], scenario="other", t0=1.8e9), None, db)
    res = run_cli("history", "--db", str(db), "--scenario", "demo", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [r["run_id"] for r in data["runs"]] == ["x1"]
    assert data["runs"][0]["metrics"]["images_per_min"] == pytest.approx(30.0)
    assert data["trends"][0]["incidence"]["frequency"] == "once"
    res = run_cli("history", "--db", str(db))
    assert res.returncode == 0 and "x1" in res.stdout and "x2" in res.stdout and "trends:" in res.stdout
    res = run_cli("history", "--db", str(tmp_path / "none.db"))
    assert res.returncode == 2 and "no history database" in res.stderr and "Traceback" not in res.stderr
