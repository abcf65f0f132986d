"""Soaks: incidence statistics, the state directory, recovery after a kill or a reboot, retention,
the free-disk floor, locking, JUnit output, and (slow) a real soak of the tiny pipeline that is
SIGKILLed halfway, stopped by a filling disk, and resumed without losing or duplicating a run.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stress.events import LEDGER
from scipy.stats import binomtest

from stress.errors import StressError
from stress.history import query_runs
from stress.journal import Journal, read_journal
from stress.junit import case_from_verdict, to_xml, write_soak_junit
from stress.soak import JOURNAL_FILE, Soak, SoakHarnessError, classify_run, prepare_state, replay
from stress.stats import frequency_word, incidence, wilson_interval
from stress.units import parse_size
from tests.conftest import ROOT, run_cli
from tests.test_history import make_run

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


@pytest.fixture
def scen(tmp_path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return p


# ---------------------------------------------------------------------------------------------
# Incidence and small parsers
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (1, 50), (37, 120)])
def test_wilson_interval_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(ref.low, abs=1e-12) and high == pytest.approx(ref.high, abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_rejects_nonsense():
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_incidence_counts_only_conclusive_verdicts():
    inc = incidence(["reproduced", "not-reproduced", "inconclusive", "error", "not-reproduced", None])
    assert (inc["reproduced"], inc["conclusive"], inc["inconclusive"], inc["error"]) == (1, 3, 1, 1)
    assert inc["rate"] == pytest.approx(1 / 3) and inc["frequency"] == "once"
    assert inc["ci95"] == pytest.approx(list(wilson_interval(1, 3)))
    assert incidence(["inconclusive"])["ci95"] is None and incidence([])["frequency"] == "unknown"
    assert [frequency_word(k, n) for k, n in ((0, 5), (1, 5), (3, 5), (5, 5), (1, 1), (2, 2))] == \
        ["never", "once", "sometimes", "always", "once", "always"]


def test_parse_size():
    assert parse_size("5GiB") == 5 << 30 and parse_size("5G") == 5 << 30 and parse_size("500MB") == 500_000_000
    assert parse_size("0") == 0 and parse_size("1.5KiB") == 1536 and parse_size("123") == 123
    with pytest.raises(StressError, match="not a size"):
        parse_size("lots")


# ---------------------------------------------------------------------------------------------
# Synthetic state directories (the real Soak class; no child process is started)
# ---------------------------------------------------------------------------------------------

def new_state(tmp_path: Path, scen: Path, **opts) -> tuple[Path, dict]:
    opts = {"iterations": 2, "reports": str(tmp_path / "reports"), "history": str(tmp_path / "history.db"),
            "min_free_bytes": 0, **opts}
    state, cfg, _ = prepare_state(tmp_path / "state", [scen], opts)
    return state, cfg


def add_events(state: Path, *events: dict) -> None:
    with Journal(state / JOURNAL_FILE, fsync=False, vocabulary=LEDGER) as j:
        for ev in events:
            ev = dict(ev)
            j.append(ev.pop("ev"), **ev)


def finished_iteration(state: Path, i: int, verdict: str = "not-reproduced", **kw) -> Path:
    folder = state / "iterations" / f"{i:04d}-1"
    rd = make_run(folder, f"run{i}", image_times=[1.0, 1.0], verdict=verdict, t0=1.79e9 + i * 100, **kw)
    for sub in ("outputs", "probes"):
        (rd / sub).mkdir()
        (rd / sub / "x.jpg").write_bytes(b"\xff" * 1000)
    add_events(state, {"ev": "iteration_start", "iteration": i, "attempt": 1, "scenario": "tiny", "slot": 0,
                       "folder": f"iterations/{i:04d}-1", "boot_id": "b0", "resume_run": None},
               {"ev": "iteration_end", "iteration": i, "attempt": 1, "scenario": "tiny", "run_id": rd.name,
                "run_dir": f"iterations/{i:04d}-1/{rd.name}", "verdict": verdict, "reasons": [f"synthetic {verdict}"],
                "exit_code": {"reproduced": 10, "not-reproduced": 0}[verdict], "status": "finished",
                "wall_s": 3.0, "started_at": 1.79e9 + i * 100})
    return rd


def test_classify_run(tmp_path):
    assert classify_run(None)["state"] == "none"
    assert classify_run(make_run(tmp_path, "done", image_times=[1.0]))["state"] == "finished"
    assert classify_run(make_run(tmp_path, "cut", image_times=[1.0], status="interrupted",
                                 verdict="inconclusive"))["state"] == "interrupted"
    c = classify_run(make_run(tmp_path, "killed", image_times=[1.0], status="incomplete"))
    assert c["state"] == "incomplete" and "no run_end" in c["why"]


def test_a_run_that_finished_while_the_soak_was_down_is_adopted_not_redone(tmp_path, scen):
    state, cfg = new_state(tmp_path, scen, iterations=1)
    folder = state / "iterations" / "0001-1"
    rd = make_run(folder, "adopt-me", image_times=[1.0], verdict="reproduced")
    add_events(state, {"ev": "iteration_start", "iteration": 1, "attempt": 1, "scenario": "tiny", "slot": 0,
                       "folder": "iterations/0001-1", "boot_id": "b0", "resume_run": None})
    res = Soak(state, stream=None).run()
    assert res.status == "stopped-reproduced" and res.exit_code == 10
    ends = [e for e in read_journal(state / JOURNAL_FILE).events if e["ev"] == "iteration_end"]
    assert len(ends) == 1 and ends[0]["adopted"] and ends[0]["run_id"] == rd.name
    assert not list(state.glob("iterations/0001-2"))  # nothing was run again
    hist = query_runs(tmp_path / "history.db", {"soak": cfg["soak_id"]})
    assert [(r.run_id, r.soak_iteration) for r in hist] == [("adopt-me", 1)]
    # A rerun of the finished soak has nothing left to do and records nothing new.
    res2 = Soak(state, stream=None).run()
    assert res2.exit_code == 10 and len(replay(state).finished) == 1
    assert res.summary["incidence"]["reproduced"] == 1


def test_a_reboot_during_a_run_is_recorded_as_such(tmp_path, scen):
    state, cfg = new_state(tmp_path, scen, iterations=None, duration_s=60.0)
    cfg["deadline"] = time.time() - 1  # the night is over: no new iteration starts
    (state / "soak.json").write_text(json.dumps(cfg))
    folder = state / "iterations" / "0001-1"
    make_run(folder, "cut-by-reboot", image_times=[1.0], status="incomplete")
    add_events(state, {"ev": "iteration_start", "iteration": 1, "attempt": 1, "scenario": "tiny", "slot": 0,
                       "folder": "iterations/0001-1", "boot_id": "boot-before", "resume_run": None})
    res = Soak(state, stream=None, boot_id_fn=lambda: "boot-after").run()
    assert res.status == "completed" and res.exit_code == 11  # no iteration finished: nothing learnt
    (intr,) = res.summary["interruptions"]
    assert intr["rebooted"] and intr["harness"] and "rebooted during the run" in intr["reason"]
    assert "no run_end" in intr["cause"]
    run_json = json.loads((folder / "cut-by-reboot" / "run.json").read_text())
    assert run_json["status"] == "incomplete" and run_json["missing"]


def test_a_torn_last_line_in_the_soak_journal_loses_nothing_after_it(tmp_path, scen):
    state, cfg = new_state(tmp_path, scen, iterations=None, duration_s=60.0)
    cfg["deadline"] = time.time() - 1
    (state / "soak.json").write_text(json.dumps(cfg))
    finished_iteration(state, 1)
    with open(state / JOURNAL_FILE, "ab") as fh:  # power loss in the middle of writing an event
        fh.write(b'{"ev":"iteration_start","t":1795369000.0,"itera')
    assert read_journal(state / JOURNAL_FILE).torn_tail
    res = Soak(state, stream=None).run()
    contents = read_journal(state / JOURNAL_FILE)
    assert not contents.torn_tail and len(contents.bad_lines) == 1
    assert [e["ev"] for e in contents.events][-2:] == ["soak_start", "soak_end"]
    assert res.status == "completed" and len(res.summary["iterations"]) == 1


def test_attempts_that_cannot_run_stop_the_soak(tmp_path, scen):
    state, _ = new_state(tmp_path, scen, max_failures=2)
    for attempt in (1, 2):
        add_events(state, {"ev": "iteration_start", "iteration": 1, "attempt": attempt, "scenario": "tiny",
                           "slot": 0, "folder": f"iterations/0001-{attempt}", "boot_id": "b0", "resume_run": None},
                   {"ev": "iteration_interrupted", "iteration": 1, "attempt": attempt, "scenario": "tiny",
                    "reason": "the run's supervisor ended with exit status 1", "cause": "", "harness": True})
    res = Soak(state, stream=None).run()
    assert res.status == "harness-errors" and res.exit_code == 13
    assert replay(state).failures_in_a_row == 0  # a restart after a harness stop gets a fresh budget


def test_runs_whose_supervisor_fails_are_recorded_and_stop_the_soak(tmp_path, scen):
    """Real child processes that cannot run their scenario (its frozen copy was damaged)."""
    state, cfg = new_state(tmp_path, scen, max_failures=2)
    cfg["scenarios"][0]["resolved"]["steps"] = 0
    (state / "soak.json").write_text(json.dumps(cfg))
    res = Soak(state, stream=None).run()
    assert res.status == "harness-errors" and res.exit_code == 13
    intr = res.summary["interruptions"]
    assert [(e["iteration"], e["attempt"], e["harness"]) for e in intr] == [(1, 1, True), (1, 2, True)]
    assert "exit status 13" in intr[0]["cause"] and "cannot be read back" in intr[0]["cause"]
    assert res.summary["iterations"] == []


def test_retention_keeps_the_newest_and_the_first_reproduction(tmp_path, scen):
    state, _ = new_state(tmp_path, scen, iterations=4, keep=2)
    rds = [finished_iteration(state, 1, "reproduced")] + [finished_iteration(state, i) for i in (2, 3, 4)]
    res = Soak(state, stream=None).run()
    assert res.status == "stopped-reproduced"  # stop-on reproduced, and iteration 1 reproduced
    whole = [rd.name for rd in rds if (rd / "outputs").exists()]
    assert whole == ["run1", "run3", "run4"]
    thin = rds[1]
    assert not (thin / "probes").exists()
    assert (thin / "journal.jsonl").exists() and (thin / "run.json").exists() and (thin / "logs").exists() is False
    (ev,) = [e for e in read_journal(state / JOURNAL_FILE).events if e["ev"] == "thinned"]
    assert ev["run_dir"].endswith("run2") and ev["freed_bytes"] == 2000
    Soak(state, stream=None).run()  # retention is idempotent
    assert len([e for e in read_journal(state / JOURNAL_FILE).events if e["ev"] == "thinned"]) == 1


def test_free_disk_floor_between_iterations(tmp_path, scen):
    res = run_cli("soak", str(scen), "--iterations", "3", "--state", str(tmp_path / "s"), "--min-free-disk", "5GiB",
                  "--reports", str(tmp_path / "reports"), "--junit", str(tmp_path / "j.xml"),
                  env={"STRESS_FAKE_FREE_BYTES": str(4 << 30)})
    assert res.returncode == 13, res.stderr
    assert "below the floor of 5.0 GiB" in res.stdout and "Traceback" not in res.stderr
    assert not (tmp_path / "s" / "iterations").exists()
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.get("errors") == "1" and root.find(".//testcase[@name='soak harness']/error") is not None


def test_a_second_soak_on_the_same_state_is_refused(tmp_path, scen):
    state, _ = new_state(tmp_path, scen)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, f"{other.pid}\n".encode(), 0)
        with pytest.raises(SoakHarnessError, match=f"another soak \\(pid {other.pid}\\)"):
            Soak(state, stream=None).run()
        # The owner is gone but its run still holds the lock: the next soak waits for it.
        other.kill()
        other.wait()
        threading.Timer(0.6, lambda: os.close(fd)).start()
        t0 = time.monotonic()
        state_cfg = json.loads((state / "soak.json").read_text())
        state_cfg["deadline"] = time.time() - 1  # nothing to do once the lock is ours
        (state / "soak.json").write_text(json.dumps(state_cfg))
        res = Soak(state, stream=None, lock_wait_s=10).run()
        assert time.monotonic() - t0 >= 0.5 and res.status != "interrupted"
    finally:
        other.kill()


@pytest.mark.parametrize("args, message", [
    ([], "give scenario files"),
    (["{scen}", "--iterations", "0"], "at least 1"),
    (["{scen}", "--state", "{tmp}/st"], "say how long to soak"),
    (["{scen}", "--duration", "soon"], "--duration 'soon'"),
    (["missing.yaml", "--iterations", "1"], "no such scenario file"),
    (["--resume", "{tmp}"], "no soak there"),
    (["{scen}", "--resume", "{tmp}"], "not both"),
    (["{scen}", "--iterations", "1", "--min-free-disk", "plenty"], "not a size"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, scen, args, message):
    res = run_cli("soak", *[a.format(scen=scen, tmp=tmp_path) for a in args], cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "st").exists()  # nothing half-made


def test_state_mismatch_and_a_damaged_state_file(tmp_path, scen):
    state, _ = new_state(tmp_path, scen)
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("name: tiny", "name: other"))
    res = run_cli("soak", str(other), "--iterations", "1", "--state", str(state))
    assert res.returncode == 2 and "holds a soak of tiny" in res.stderr
    (state / "soak.json").write_text("{ half a file")
    res = run_cli("soak", "--resume", str(state))
    assert res.returncode == 13 and "cannot be read" in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------------------------------------------------
# JUnit
# ---------------------------------------------------------------------------------------------

def test_junit_maps_verdicts_and_is_well_formed(tmp_path):
    summary = {
        "soak_id": "s1", "status": "completed", "scenarios": ["a", "b"],
        "incidence": incidence(["reproduced", "not-reproduced"]),
        "iterations": [
            {"iteration": 1, "scenario": "a", "verdict": "reproduced", "reasons": ["after: screenshot black\x07"],
             "wall_s": 12.5, "started_at": 1.79e9, "run_id": "r1", "status": "finished"},
            {"iteration": 2, "scenario": "b", "verdict": "not-reproduced", "reasons": [], "wall_s": 10.0,
             "run_id": "r2", "status": "finished"},
            {"iteration": 3, "scenario": "a", "verdict": "inconclusive", "reasons": ["no display"], "wall_s": 1.0,
             "run_id": "r3", "status": "finished"},
            {"iteration": 4, "scenario": "b", "verdict": "error", "reasons": ["worker died (SIGSEGV)"], "wall_s": 2.0,
             "run_id": "r4", "status": "finished"},
        ],
        "interruptions": [{"iteration": 5, "attempt": 1, "scenario": "a", "reason": "the soak was killed", "t": 1.79e9}],
    }
    path = tmp_path / "out" / "junit.xml"
    write_soak_junit(path, summary)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("5", "1", "1", "2")
    assert float(root.get("time")) == pytest.approx(25.5)
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"a", "b"} and suites["a"].get("tests") == "3"
    for s in suites.values():
        for attr in ("timestamp", "hostname", "time", "failures", "errors", "skipped"):
            assert s.get(attr) is not None
    fail = root.find(".//testcase[@name='iteration 0001']/failure")
    assert fail is not None and fail.get("type") == "reproduced" and "screenshot black?" in fail.text
    assert root.find(".//testcase[@name='iteration 0004']/error").get("message").startswith("error: worker died")
    assert root.find(".//testcase[@name='iteration 0003']/skipped").get("message") == "inconclusive: no display"
    assert root.find(".//testcase[@name='iteration 0002']/*") is None or \
        root.find(".//testcase[@name='iteration 0002']/failure") is None
    assert root.find(".//testcase[@name='iteration 0005 attempt 1 (interrupted)']/skipped") is not None
    assert case_from_verdict("x", "c", None, [], None).outcome == "error"
    assert b"<?xml" in to_xml({"empty": []})


# ---------------------------------------------------------------------------------------------
# The real thing (slow): the tiny pipeline in real subprocesses
# ---------------------------------------------------------------------------------------------

def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _run_started(state: Path, folder: str) -> bool:
    return any("worker_start" in p.read_text() for p in (state / "iterations" / folder).glob("*/journal.jsonl"))


def _soak_cmd(scen: Path, tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "stress", "soak", str(scen), "--iterations", "2", "--state", str(tmp_path / "state"),
            "--reports", str(tmp_path / "reports"), "--history", str(tmp_path / "history.db"),
            "--junit", str(tmp_path / "junit.xml"), "--keep", "1", "--min-free-disk", "1GiB", "--stop-on", "never"]


@pytest.mark.slow
def test_soak_survives_sigkill_and_a_full_disk_and_loses_or_duplicates_nothing(tmp_path, scen, model_cache):
    state = tmp_path / "state"
    free = tmp_path / "free-bytes"
    free.write_text(str(100 << 30))
    env = dict(os.environ, PYTHONPATH=str(ROOT), STRESS_CACHE=str(model_cache), STRESS_FAKE_FREE_BYTES=f"@{free}")
    cmd = _soak_cmd(scen, tmp_path)

    # 1. Iteration 1 finishes; the soak is SIGKILLed while iteration 2's run is going.
    soak = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _run_started(state, "0002-1"), 240, "iteration 2 to start")
    finally:
        soak.kill()
        soak.communicate()
    first = [e for e in read_journal(state / JOURNAL_FILE).events if e["ev"] == "iteration_end"]
    assert [e["iteration"] for e in first] == [1]

    # 2. Rerun: the interrupted iteration runs again; the disk fills up during it: a clean stop.
    soak = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _run_started(state, "0002-2"), 240, "iteration 2 to start again")
        free.write_text(str(100 << 20))
        out, err = soak.communicate(timeout=120)
    finally:
        soak.kill()
    assert soak.returncode == 13, err
    assert "below the floor" in out and "Traceback" not in err

    # 3. Space is back: the same command carries on and finishes iteration 2.
    free.write_text(str(100 << 30))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 11, res.stderr  # probes disabled: every verdict is inconclusive
    events = read_journal(state / JOURNAL_FILE).events
    ends = [e for e in events if e["ev"] == "iteration_end"]
    assert [e["iteration"] for e in ends] == [1, 2]  # nothing lost, nothing duplicated
    assert ends[0]["run_id"] == first[0]["run_id"] and ends[1]["attempt"] == 3
    intr = [e for e in events if e["ev"] == "iteration_interrupted"]
    assert [(e["iteration"], e["attempt"]) for e in intr] == [(2, 1), (2, 2)]
    assert "killed during the run" in intr[0]["reason"] and not intr[0]["harness"]
    assert "free-space floor" in intr[1]["reason"] and not intr[1]["harness"]
    for e in intr:  # the interrupted runs say so in their own record
        assert json.loads((state / e["run_dir"] / "run.json").read_text())["status"] in ("interrupted", "incomplete")

    # Retention (--keep 1): only the last run directory keeps its outputs.
    run_dirs = [state / e["run_dir"] for e in sorted([*ends, *intr], key=lambda e: e["t"])]
    assert [(d / "outputs").exists() for d in run_dirs] == [False, False, False, True]
    assert all((d / "journal.jsonl").exists() and (d / "run.json").exists() for d in run_dirs)

    # The history holds exactly the two finished runs, tagged with the soak.
    soak_id = json.loads((state / "soak.json").read_text())["soak_id"]
    hist = query_runs(tmp_path / "history.db", {"soak": soak_id})
    assert sorted((r.soak_iteration, r.run_id) for r in hist) == [(1, ends[0]["run_id"]), (2, ends[1]["run_id"])]
    assert all(r.verdict == "inconclusive" and r.metrics["images_ok"] == 1 for r in hist)
    for r in hist:  # each finished iteration has its report, and the history points at it
        assert r.report_path and Path(r.report_path).is_file(), r.report_path

    # JUnit: one case per iteration, plus the two interrupted attempts (skipped).
    root = ET.parse(tmp_path / "junit.xml").getroot()
    names = [c.get("name") for c in root.iter("testcase")]
    assert names == ["iteration 0001", "iteration 0002", "iteration 0002 attempt 1 (interrupted)",
                     "iteration 0002 attempt 2 (interrupted)"]
    assert root.get("skipped") == "4" and root.get("failures") == "0" and root.get("errors") == "0"
    assert all(float(c.get("time")) >= 0 for c in root.iter("testcase"))

    # compare reads the two real runs (from the history and from a run directory).
    # --all: without it a metric equal in both runs is not listed, and two tiny runs on a quiet machine
    # can have the same images/min to the history's precision (a CI run found exactly that)
    res = run_cli("compare", ends[0]["run_id"], str(state / ends[1]["run_dir"]), "--db", str(tmp_path / "history.db"),
                  "--all")
    assert res.returncode == 0 and "images_per_min" in res.stdout, res.stderr


@pytest.mark.slow
def test_ctrl_c_stops_the_soak_cleanly(tmp_path, scen, model_cache):
    state = tmp_path / "state"
    env = dict(os.environ, PYTHONPATH=str(ROOT), STRESS_CACHE=str(model_cache))
    cmd = _soak_cmd(scen, tmp_path)
    cmd[cmd.index("--min-free-disk") + 1] = "0"
    soak = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _run_started(state, "0001-1"), 240, "iteration 1 to start")
        soak.send_signal(signal.SIGINT)
        out, err = soak.communicate(timeout=120)
    finally:
        soak.kill()
    assert soak.returncode == 130, err
    summary = json.loads((state / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["iterations"] == []
    (intr,) = summary["interruptions"]
    assert intr["reason"] == "the soak was stopped (SIGINT)" and not intr["harness"]
    run = json.loads((state / intr["run_dir"] / "run.json").read_text())
    assert run["status"] == "interrupted"  # the run itself recorded the interruption cleanly
