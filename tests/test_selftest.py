"""gpu-stress selftest: its pure parts (fault classes, the reason categories against the verdict's own
sentences, detection times, the confusion matrix and targets), the NVML stand-in's control file, and a
reduced real selftest: real Xvfb, real runs on the tiny models, real injection, the run's own verdict."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stress.analysis import verdict
from stress.probes.config import ProbesConfig
from stress.selftest import fake_nvml
from stress.selftest.faults import (CATEGORY_PATTERNS, FAULTS, QUICK, parse_classes, plan_trials, reason_categories,
                                   scenario_phases)
from stress.selftest.inject import MODESET_LINE, XID_LINE, corrupt_file
from stress.selftest.results import detection_time, markdown, screen, summarize, trial_result

from xvfb import require_xvfb

ROOT = Path(__file__).resolve().parent.parent
CFG = ProbesConfig(kinds=["screenshot", "decode", "display"])


def _probe(phase, kind, status="ok", latency=0.01, rep=0, t=0.0, reason=None, **metrics):
    if kind == "decode" and status == "ok":
        metrics.setdefault("ref_s_per_mp", latency)
    return {"ev": "probe", "t": t, "phase": phase, "visit": 0, "kind": kind, "rep": rep, "status": status,
            "latency_s": latency if status == "ok" else None, "metrics": metrics, "reason": reason}


def _healthy(phase, lat=None, t=0.0):
    lat = lat or {}
    return [_probe(phase, k, latency=lat.get(k, [0.010 + 0.0003 * i for i in range(5)])[i], rep=i, t=t)
            for k in ("screenshot", "decode", "display") for i in range(5)]


_WORK = [{"ev": "phase", "t": 5.0, "phase": "workload", "state": "start"}]


def _reasons_for(extra: list[dict], phase_events: list[dict] | None = None) -> list[str]:
    events = _healthy("baseline") + _WORK + (phase_events if phase_events is not None else _healthy("after")) + extra
    v = verdict(events, CFG, context={"device": "cpu", "load": {}})
    assert v["verdict"] == "reproduced", v
    return v["reasons"]


def _fails(kind, status, n=5, **metrics):
    return [_probe("after", kind, status, rep=i, reason="cannot open display :9", **metrics) for i in range(n)]


# Each category against a sentence the verdict itself writes for that fault.
VERDICT_CASES = {
    "unresponsive": lambda: _reasons_for([], _healthy("after")[5:] + _fails("screenshot", "timeout", 1)),
    "display-exited": lambda: _reasons_for([{"ev": "host", "t": 9.0, "dsgone": [[41, "Xvfb", "x-server"]]}]),
    "display-restarted": lambda: _reasons_for([{"ev": "host", "t": 9.0, "dsgone": [[41, "Xvfb", "x-server"]]},
                                               {"ev": "host", "t": 10.0, "dsnew": [[42, "Xvfb", "x-server"]]}]),
    "black": lambda: _reasons_for([], _healthy("after")[5:] + _fails("screenshot", "fail", black_frames=2)),
    "frozen": lambda: _reasons_for([], _healthy("after")[:10] + _fails("display", "fail", mismatch=True,
                                                                        never_visible=True, mismatch_fraction=1.0)),
    "slow": lambda: _reasons_for([], _healthy("after") + [
        _probe("after-exit", k, latency=0.05 + 0.001 * i if k == "display" else 0.01, rep=i)
        for k in ("screenshot", "decode", "display") for i in range(5)]),
    "outputs-corrupted": lambda: _reasons_for([], _healthy("after")[:5] + _healthy("after")[10:] + [
        _probe("after", "decode", "fail", rep=i, reason="outputs/00000.jpg: file sha256 differs from the one "
               "recorded when it was saved") for i in range(5)]),
    "driver-xid": lambda: _reasons_for([{"ev": "xid", "t": 9.0, "gpu": 0, "xid": 119, "category": "gsp",
                                         "description": "GSP RPC Timeout", "source": "kernel-log"}]),
    "driver-modeset": lambda: _reasons_for([{"ev": "kmsg", "t": 9.0, "line": MODESET_LINE,
                                             "cls": "nvkms-idle-timeout"}]),
    "gpu-lost": lambda: _reasons_for([{"ev": "source", "t": 9.0, "src": "nvml", "gpu": 0, "status": "unavailable",
                                       "reason": "gpu lost: GPU is lost"}]),
}


@pytest.mark.parametrize("category", list(CATEGORY_PATTERNS))
def test_each_category_matches_the_verdicts_own_sentence(category):
    reasons = VERDICT_CASES[category]()
    assert category in reason_categories(reasons), reasons


def test_every_fault_class_expects_a_known_category_and_a_probe_phase():
    assert set(QUICK) <= set(FAULTS)
    for f in FAULTS.values():
        assert f.expected in CATEGORY_PATTERNS and f.phase in ("during", "after", "after-exit")
    # a clean run's ordinary reason names nothing
    assert reason_categories(["no probe regressed against baseline (screenshot in after; 15 probes)"]) == []
    # an unrelated fault's reason does not count for another class
    assert reason_categories(["after: screenshot returned all-black frames in 5/5 probes"]) == ["black"]


def _one_outlier_p(n: int) -> float:
    """p of the verdict's one-sided test for n slowed probes against n baseline ones of which one was
    slower than every slowed probe (a baseline probe the loaded host delayed)."""
    from stress.stats import mann_whitney

    slowed = [0.050 + 0.001 * i for i in range(n)]
    base = [0.010 + 0.001 * i for i in range(n - 1)] + [0.200]
    return mann_whitney(slowed, base, "greater")


def test_selftest_repetitions_are_the_fewest_that_survive_one_outlier():
    """selftest's scenario probes REPETITIONS times per kind and phase: the fewest with which a clear
    slowdown stays significant at the verdict's alpha with one outlying baseline probe (5, the fewest
    that can reach it at all, allow one overlapping pair only)."""
    import yaml

    from stress.selftest.trial import REPETITIONS, scenario_text

    alpha = ProbesConfig().alpha
    assert _one_outlier_p(REPETITIONS) < alpha
    assert all(_one_outlier_p(n) >= alpha for n in range(5, REPETITIONS))
    probes = yaml.safe_load(scenario_text(("baseline", "after", "after-exit")))["probes"]
    cfg = ProbesConfig.model_validate(probes)
    assert cfg.repetitions == REPETITIONS and cfg.phases == ["baseline", "after", "after-exit"]
    assert cfg.alpha == alpha and cfg.timeout == 4


def test_slow_severities_stop_the_server_longer_with_short_run_windows():
    """The slow path's severities: the X server stopped longer in every period at each step, with run
    windows of half a millisecond, shorter than a probe's timed interval (about a millisecond on Xvfb):
    with longer run windows the timed interval fits inside one and measures nothing (the first duty
    cycles' finding, docs/selftest.md)."""
    windows = [FAULTS[c].stop for c in ("slow-light", "slow-medium", "slow-heavy")]
    stops = [s for s, _ in windows]
    assert stops == sorted(stops) and len(set(stops)) == 3
    assert all(p - s <= 0.5 for s, p in windows)
    assert all(f.stop is None for f in FAULTS.values() if f.expected != "slow")


def test_stop_windows_refuse_a_stop_that_is_not_inside_its_period():
    from stress.selftest.stopper import StopWindows

    for stop, period in ((0, 3), (3, 3), (4, 3)):
        with pytest.raises(ValueError, match="must be within the period"):
            StopWindows(1, stop, period)


def test_parse_classes():
    assert parse_classes(None) == list(FAULTS)
    assert parse_classes(None, quick=True) == list(QUICK)
    assert parse_classes("slow,stall,slow-heavy") == ["slow-light", "slow-medium", "slow-heavy", "stall"]
    with pytest.raises(ValueError, match="unknown fault class 'sloow'"):
        parse_classes("stall,sloow")


def test_after_exit_is_probed_only_when_a_class_is_injected_there():
    assert scenario_phases(list(QUICK)) == ("baseline", "after")
    assert scenario_phases(["stall", "slow-light"]) == ("baseline", "after", "after-exit")
    assert scenario_phases([]) == ("baseline", "after")
    assert scenario_phases(["stall"], "after-exit") == ("baseline", "after", "after-exit")
    assert scenario_phases(["slow-light"], "after") == ("baseline", "after")


def test_clean_runs_are_spread_among_the_fault_trials():
    p = plan_trials(["a", "b"], 3, 3)
    assert len(p) == 9 and p.count(("a", 2)) == 1 and sum(n == "clean" for n, _ in p) == 3
    assert [i for i, (n, _) in enumerate(p) if n == "clean"] == [2, 5, 8]
    assert plan_trials([], 0, 2) == [("clean", 0), ("clean", 1)]
    assert plan_trials(["a"], 2, 0) == [("a", 0), ("a", 1)]


def test_detection_time_is_the_first_sign_after_the_injection():
    base = _healthy("baseline", t=1.0)
    later = [_probe("after", "display", latency=0.0105, t=11.0),          # normal: not a sign
             _probe("after", "screenshot", "ok", latency=0.5, t=12.5),      # 1.5x+ its baseline median
             _probe("after", "display", "timeout", t=13.0)]
    assert detection_time(base + later, 10.0) == pytest.approx(2.5)
    assert detection_time(base + later[:1], 10.0) is None
    assert detection_time(base + [{"ev": "xid", "t": 10.25, "xid": 119}], 10.0) == pytest.approx(0.25)
    assert detection_time(base + [_probe("after", "display", "timeout", t=9.0)], 10.0) is None   # before injection


def _trial(fault, i, v, reasons, detect=1.0):
    return trial_result(fault, i, phase="after", verdict={"verdict": v, "reasons": reasons, "exit_code": 0},
                        t_inject=100.0, detect_s=detect, run_dir=None, wall_s=30.0)


def test_confusion_matrix_targets_and_renderings():
    black = "after: screenshot returned all-black frames in 5/5 probes"
    trials = [_trial("black", i, "reproduced", [black], detect=0.4 + i) for i in range(19)]
    trials.append(_trial("black", 19, "reproduced", ["after: screenshot timed out in 1/5 probes (limit 4 s)"]))
    trials += [_trial("clean", i, "not-reproduced", ["no probe regressed"], None) for i in range(3)]
    s = summarize(trials, machine={"cpu": "x", "cores": 2, "load1_start": 1.0}, display="xvfb", started="t",
                  wall_s=9.0, options={})
    c = s["classes"]["black"]
    assert (c["trials"], c["verdicts"]["reproduced"], c["reason_names_class"], c["detected"]) == (20, 20, 19, 19)
    assert c["detection_rate"] == 0.95 and c["target_met"] and c["detect_s"]["median"] == pytest.approx(9.4)
    assert c["missed"] == [{"trial": 19, "verdict": "reproduced", "reasons": trials[19]["reasons"], "error": None}]
    assert s["clean"]["false_alarms"] == 0 and s["passed"]
    json.dumps(s)
    md = markdown(s)
    assert "| black | after | 20 | 20 | 0 | 0 | 0 | 19 | 19/20 | 76%-99% | 9.4 / 18.4 | met |" in md
    assert "| 3 | 0 | 0%-56% | 0 | 3 | 0 | 0% |" in md
    # the intervals: 95% Wilson, as a run's incidence; the observed rate is what the target judges
    assert c["detection_ci95"] == [0.7639, 0.9911] and s["clean"]["false_alarm_ci95"] == [0.0, 0.5615]
    assert s["pooled"] == {"trials": 20, "detected": 19, "detection_rate": 0.95, "detection_ci95": [0.7639, 0.9911]}
    assert "| **every class** | | 20 |" in md
    assert "19/20  detected [76%-99%]" in screen(s) and "0/3   false alarms [0%-56%]" in screen(s)
    # one more miss (18/20 = 90%) and one false alarm: both targets missed
    trials[0] = _trial("black", 0, "inconclusive", ["whatever"])
    trials.append(_trial("clean", 3, "reproduced", ["after: display round trip latency median 30 ms vs 10 ms"]))
    s = summarize(trials, machine={}, display="xvfb", started="t", wall_s=9.0, options={})
    assert not s["passed"] and len(s["missed"]) == 2 and s["clean"]["false_alarms"] == 1
    assert "targets MISSED" in screen(s) and "MISSED: inconclusive 1" in screen(s)


def test_corrupt_file_breaks_the_recorded_hash(tmp_path):
    import hashlib

    p = tmp_path / "a.jpg"
    p.write_bytes(bytes(range(256)) * 8)
    before = hashlib.sha256(p.read_bytes()).hexdigest()
    corrupt_file(p)
    assert hashlib.sha256(p.read_bytes()).hexdigest() != before and p.stat().st_size == 2048
    corrupt_file(p, truncate=True)
    assert p.stat().st_size == 1024


def test_kernel_lines_are_what_the_parsers_classify():
    from stress.hw.kernel_log import classify_line
    from stress.hw.xid import parse_xid_line

    assert parse_xid_line(XID_LINE).xid == 119
    assert classify_line(MODESET_LINE).id == "nvkms-idle-timeout"


def test_nvml_stand_in_loses_its_gpu_through_the_control_file(tmp_path, monkeypatch):
    control = tmp_path / "nvml-control"
    control.write_text("ok\n")
    monkeypatch.setenv(fake_nvml.CONTROL_ENV, str(control))
    monkeypatch.setitem(fake_nvml._control, "checked", 0.0)
    try:
        fake_nvml.nvmlInit()
        h = fake_nvml.nvmlDeviceGetHandleByIndex(0)
        assert fake_nvml.nvmlDeviceGetName(h)
        control.write_text("lost\n")
        fake_nvml._control["checked"] = 0.0
        with pytest.raises(fake_nvml.NVMLError_GpuIsLost):
            fake_nvml.nvmlDeviceGetName(h)
    finally:
        fake_nvml._default.lost.discard(0)
        fake_nvml._control["seen"] = ""
        fake_nvml._default.initialized = 0


def test_reduced_real_selftest(tmp_path, model_cache):
    """Two classes, one trial each (at once, each on its own Xvfb), real injection into a real run and its
    real verdict (about a minute)."""
    require_xvfb()
    env = dict(os.environ, PYTHONPATH=str(ROOT), STRESS_CACHE=str(model_cache))
    out = tmp_path / "st"
    proc = subprocess.run([sys.executable, "-m", "stress", "selftest", "--classes", "black,xid", "--trials", "1",
                           "--clean", "0", "--jobs", "2", "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    s = json.loads((out / "selftest.json").read_text())
    assert proc.returncode == (0 if s["passed"] else 14), proc.stderr[-2000:]
    for name in ("black", "xid"):
        (t,) = [t for t in s["trials"] if t["fault"] == name]
        assert t["injected"] and t["error"] is None, t
        assert t["verdict"] == "reproduced" and t["detected"], t
        assert t["detect_s"] is not None and 0 <= t["detect_s"] < 30
    assert proc.returncode == 0
    assert "black          1/1" in proc.stdout and "targets met" in proc.stdout
    assert (out / "selftest.md").read_text().count("| met |") == 2


def _state(pid: int, want: str) -> str:
    """The process state letter, waited for (a signal is delivered asynchronously) for at most 5 s."""
    import time

    deadline = time.monotonic() + 5
    while True:
        st = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if st in want or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def test_injectors_act_on_selftests_own_server_and_leave_nothing_running(tmp_path):
    """stall stops and resumes the X server selftest started; the slow path's clients are armed
    before the phase, flood from start() and are gone after stop(); kill ends the server."""
    require_xvfb()
    from stress.selftest.display import start_xvfb
    from stress.selftest.inject import Injector, Target

    d = start_xvfb()
    try:
        target = Target(d, tmp_path, tmp_path / "kernel.log", tmp_path / "nvml-control")
        stall = Injector(FAULTS["stall"], target)
        stall.start()
        assert _state(d.pid, "T") == "T"
        stall.stop()
        assert _state(d.pid, "RS") in "RS"
        slow = Injector(FAULTS["slow-light"], target)
        slow.arm()
        helper = slow._windows.proc
        assert helper.poll() is None and _state(d.pid, "RS") in "RS"     # armed: waits, stops nothing
        slow.start()
        assert _state(d.pid, "T") == "T"                                 # stopped most of the time
        slow.stop()
        assert helper.poll() is not None and slow._windows is None
        assert _state(d.pid, "RS") in "RS" and "stopped 3 of every 3.5 ms" in slow.note
        (tmp_path / "outputs").mkdir()
        (tmp_path / "outputs" / "a.jpg").write_bytes(bytes(range(256)) * 4)
        corrupt = Injector(FAULTS["corrupt"], target)
        corrupt.start()
        assert corrupt.note == "1 output(s) corrupted"
        kill = Injector(FAULTS["kill"], target)
        kill.start()
        assert not d.alive()
    finally:
        d.kill()


def _display_probes(env: dict, tmp: Path, reps: int = 8) -> list[dict]:
    """``reps`` display round-trip probes (the probes' own child, selftest's probe settings), each
    result with ``wall_s``: the whole probe, what the probe timeout bounds. Bounded: 60 s in all."""
    import time

    cfg = ProbesConfig(kinds=["display"], repetitions=reps, timeout=4, display_wait=2)
    req = tmp / "req.json"
    req.write_text(json.dumps({"kind": "display", "phase": "after-exit", "visit": 0, "reps": list(range(reps)),
                               "config": cfg.model_dump(mode="json"), "run_dir": str(tmp), "images": [],
                               "session": "x11"}))
    proc = subprocess.Popen([sys.executable, "-m", "stress.probes.child", str(req)], env=dict(env, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    import threading

    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    out: list[dict] = []
    try:
        last = time.monotonic()
        for line in proc.stdout:
            now = time.monotonic()
            res = json.loads(line)
            if "rep" in res:
                out.append(dict(res, wall_s=now - last))
            last = now
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    return out


def test_slow_light_slows_the_servers_round_trips_within_the_probe_timeout(tmp_path):
    """The lightest slow class, injected into a real Xvfb, makes the display probe's round trip at least
    ``slowdown_ratio`` times its median without it (measured 2.6x-3.5x on an idle Xvfb), and every whole
    probe stays inside the 4 s probe timeout (a slow path, not a stall)."""
    require_xvfb()
    from stress.selftest.display import start_xvfb
    from stress.selftest.inject import Injector, Target

    d = start_xvfb()
    try:
        before = _display_probes(d.env(), tmp_path)
        slow = Injector(FAULTS["slow-light"], Target(d, tmp_path, tmp_path / "k.log", tmp_path / "nvml"))
        slow.arm()
        slow.start()
        try:
            during = _display_probes(d.env(), tmp_path)
        finally:
            slow.stop()
        after = _display_probes(d.env(), tmp_path, reps=3)
    finally:
        d.kill()
    import statistics

    for rs in (before, during, after):
        assert len(rs) in (8, 3) and all(r["status"] == "ok" for r in rs), rs
        assert max(r["wall_s"] for r in rs) < 4.0, rs
    med = [statistics.median(r["latency_s"] for r in rs) for rs in (before, during, after)]
    assert med[1] >= ProbesConfig().slowdown_ratio * med[0], med
    assert med[2] < ProbesConfig().slowdown_ratio * med[0] * 2, med      # resumed: no longer stopped
    assert "stopped 3 of every 3.5 ms" in slow.note


def test_background_load_and_window_clients_run_as_modules_and_end(tmp_path):
    """The clean control's load (a spinning process, fsync'd disk writes, the browser-like window) and
    the overlay client are processes of our own modules (python -m stress.selftest.load / xwin): each
    starts on selftest's own Xvfb and none is left running; a wrong argument is one usage line."""
    require_xvfb()
    import subprocess
    import sys
    import time

    from stress.selftest.display import start_xvfb
    from stress.selftest.load import BackgroundLoad
    from stress.selftest.xwin import OVERLAY, start_client, stop_client

    d = start_xvfb()
    try:
        with BackgroundLoad(tmp_path, d.env()) as load:
            procs = list(load.procs)
            deadline = time.monotonic() + 10
            while not (tmp_path / "disk-load.bin").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(procs) == 3 and all(p.poll() is None for p in procs)
            assert (tmp_path / "disk-load.bin").exists()
        assert all(p.poll() is not None for p in procs)
        frozen = start_client(OVERLAY, ["frozen"], d.env())
        stop_client(frozen)
        assert frozen.returncode == 0
    finally:
        d.kill()
    for module in ("stress.selftest.xwin", "stress.selftest.wlwin", "stress.selftest.load", "stress.selftest.stopper"):
        r = subprocess.run([sys.executable, "-m", module, "nonsense"], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and r.stderr.strip().startswith("usage:") and "Traceback" not in r.stderr


def test_rejudge_wayland_latency_bad_folder_is_one_line(tmp_path):
    """The benchmark that re-judges sway trials, given a folder selftest did not write: exit 2, one line."""
    script = ROOT / "benchmarks" / "rejudge_wayland_latency.py"
    (tmp_path / "selftest.json").write_text("{not json")
    for folder in (tmp_path / "missing", tmp_path):
        r = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"{folder}: no readable selftest.json"), r.stderr
