"""Which display processes are under test: the ones behind the probes' display, found from its sockets
(real Xvfb, picom and sway), never every process with a display server's name."""
from __future__ import annotations

import subprocess
import time

import pytest

import compositors
from stress.analysis import monitor_evidence
from stress.hw import display_id, host
from xvfb import xvfb

pytestmark = pytest.mark.compositor


def wait_until(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_only_the_probes_x_server_is_evidence_others_are_context() -> None:
    with xvfb(320, 240) as ours, xvfb(320, 240) as other:
        env = {"DISPLAY": ours.display}
        (ut,) = display_id.under_test(env)
        assert ut["pid"] == ours.proc.pid and ut["name"] == "Xvfb" and ut["role"] == "x-server"
        assert ut["via"].startswith("socket /tmp/.X11-unix/X")
        s = host.display_session(env)
        assert s["display_server"] == "Xvfb" and [p["pid"] for p in s["under_test"]] == [ours.proc.pid]
        assert s["under_test"][0]["version"]                    # Xvfb -version
        assert other.proc.pid in [c["pid"] for c in s["context"]]
        sampler = host.HostSampler(rescan_every=1, display_env=env)
        rec = sampler.sample(0)
        flags = {d["p"]: d.get("ut") for d in rec["ds"]}
        assert flags[ours.proc.pid] == "x-server" and flags[other.proc.pid] is None
        events = [{"ev": "phase", "phase": "workload", "state": "start", "t": 0.0}]
        other.kill()                                           # another job's X server exits
        events.append({"ev": "host", "t": 1.0, **sampler.sample(1)})
        assert [other.proc.pid, "Xvfb"] in events[-1].get("ctxgone", []) and "dsgone" not in events[-1]
        assert monitor_evidence(events)[0] == []               # not evidence
        ours.kill()                                            # the probes' own X server exits
        for tick in range(2, 6):                               # several rescans: reported once
            events.append({"ev": "host", "t": float(tick), **sampler.sample(tick)})
        gone = [item for e in events for item in e.get("dsgone", [])]
        assert gone == [[ours.proc.pid, "Xvfb", "x-server"]]
        regress, _ = monitor_evidence(events + events[-3:])   # a journal replayed twice: one reason
        assert regress == [f"the display process Xvfb (pid {ours.proc.pid}) exited during the run"]


@pytest.mark.parametrize("rescan_every", [1, 20])
def test_restarted_x_server_is_recorded_as_a_restart(rescan_every: int) -> None:
    """Also between the periodic rescans (every 20 ticks by default, 10 s at 2 Hz): once a display
    process under test went away, each tick looks for its successor (selftest's restart class, run
    after run, sometimes ended before the next periodic rescan found the new server)."""
    with xvfb(320, 240) as first:
        n = first.display
        env = {"DISPLAY": n}
        sampler = host.HostSampler(rescan_every=rescan_every, display_env=env)
        sampler.sample(0)
        first.kill()
        rec = sampler.sample(1)
        assert rec["dsgone"] == [[first.proc.pid, "Xvfb", "x-server"]]
        assert "dsnew" not in sampler.sample(2)       # looked again at once: no successor yet
    again = subprocess.Popen(["Xvfb", n, "-screen", "0", "320x240x24", "-nolisten", "tcp"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: display_id.peer_pid(f"/tmp/.X11-unix/X{n[1:]}") == again.pid)
        rec = sampler.sample(3)
        assert rec["dsnew"] == [[again.pid, "Xvfb", "x-server"]]
        events = [{"ev": "phase", "phase": "workload", "state": "start", "t": 0.0},
                  {"ev": "host", "t": 1.0, "dsgone": [[first.proc.pid, "Xvfb", "x-server"]]},
                  {"ev": "host", "t": 2.0, **rec}]
        assert monitor_evidence(events)[0] == [
            f"the display process Xvfb (pid {first.proc.pid}) exited during the run, restarted as pid {again.pid}"]
    finally:
        again.kill()
        again.wait()


def test_compositing_manager_on_the_probes_display_is_under_test() -> None:
    with compositors.xvfb_composited(manager="picom") as comp:
        roles = {p["name"]: p["role"] for p in display_id.under_test(comp.env_vars)}
        assert roles == {"Xvfb": "x-server", "picom": "compositor"}
        s = host.display_session(comp.env_vars)
        assert s["compositor"] == "picom" and s["display_server"] == "Xvfb"


def test_sway_and_its_xwayland_are_under_test_and_their_exit_is_evidence() -> None:
    with compositors.sway() as comp:
        env = comp.env_vars
        assert wait_until(lambda: len(display_id.under_test(env)) == 2), display_id.under_test(env)
        s = host.display_session(env)
        assert s["type"] == "wayland" and s["compositor"] == "sway" and s["display_server"] == "Xwayland"
        by = {p["name"]: p for p in s["under_test"]}
        assert by["sway"]["pid"] == comp.proc.pid and by["sway"]["version"] == "1.7"
        assert by["Xwayland"]["role"] == "x-server" and by["Xwayland"]["via"] == f"Xwayland serving {env['DISPLAY']}"
        assert display_id.compositor_name(env) == "sway"
        sampler = host.HostSampler(rescan_every=1, display_env=env)
        first = sampler.sample(0)
        assert {d["p"]: d.get("ut") for d in first["ds"]}[comp.proc.pid] == "compositor"
        comp.kill()
        recs = [sampler.sample(t) for t in range(1, 4)]
        gone = [item for r in recs for item in r.get("dsgone", [])]
        assert [comp.proc.pid, "sway", "compositor"] in gone
        assert len({item[0] for item in gone}) == len(gone)      # each pid once


def test_no_display_means_nothing_under_test(tmp_path) -> None:
    assert display_id.under_test({}) == []
    assert display_id.under_test({"WAYLAND_DISPLAY": "nope", "XDG_RUNTIME_DIR": str(tmp_path)}) == []
    assert display_id.under_test({"DISPLAY": "remote:0"}) == []
    assert display_id.peer_pid(str(tmp_path / "no-socket")) is None


@pytest.mark.parametrize("fixture,expect", [
    (compositors.weston, ("compositor weston 10", "on weston: decode, screenshot, display-wayland will run",
                          "display (needs X11 or Xwayland (DISPLAY))")),
    (compositors.mutter, ("compositor mutter 4", "on mutter: decode will run",
                          "screenshot (mutter without gnome-shell offers no screenshot interface to clients)")),
])
def test_doctor_names_the_compositor_and_the_probe_kinds_that_work_there(fixture, expect) -> None:
    from conftest import run_cli

    with fixture() as comp:
        env = comp.env()
        r = run_cli("doctor", "--quick", "--json", env={k: env.get(k, "") for k in
                                                        ("WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "DISPLAY",
                                                         "XDG_SESSION_TYPE", "DBUS_SESSION_BUS_ADDRESS")},
                    timeout=120)
    import json

    report = json.loads(r.stdout)
    checks = {c["key"]: c for c in report["checks"]}
    text = checks["display"]["summary"] + " | " + checks["probe-kinds"]["summary"]
    for part in expect:
        assert part in text, text
    assert f"(pid {comp.proc.pid})" in checks["display"]["summary"]


def test_without_a_display_another_jobs_x_server_exiting_is_never_reproduced() -> None:
    """The report from a shared machine: no display at all, another job's Xvfb exits during the run."""
    from stress.analysis import verdict
    from stress.probes.config import ProbesConfig

    with xvfb(320, 240) as other:
        sampler = host.HostSampler(rescan_every=1, display_env={})   # the probes have no display
        events = [{"ev": "phase", "phase": "workload", "state": "start", "t": 0.0},
                  {"ev": "host", "t": 0.5, **sampler.sample(0)}]
        other.kill()
        events += [{"ev": "host", "t": 1.0 + i, **sampler.sample(1 + i)} for i in range(3)]
    assert other.proc.pid in [item[0] for e in events for item in e.get("ctxgone", [])]
    assert not any("dsgone" in e for e in events)
    for phase in ("baseline", "after"):
        for kind in ("screenshot", "display"):
            events.append({"ev": "probe", "phase": phase, "kind": kind, "rep": 0, "status": "unavailable",
                           "reason": "no display", "metrics": {}})
    v = verdict(events, ProbesConfig(kinds=["screenshot", "display"]))
    assert v["verdict"] == "inconclusive", v["reasons"]
    assert not any("exited" in r for r in v["reasons"])


def test_compositing_manager_killed_is_evidence_even_when_pixels_still_match() -> None:
    """On X11 the screen keeps working when picom dies (windows are unredirected): only the monitors
    can tell, and they must, since that compositor is the one under test."""
    with compositors.xvfb_composited(manager="picom") as comp:
        sampler = host.HostSampler(rescan_every=1, display_env=comp.env_vars)
        events = [{"ev": "phase", "phase": "workload", "state": "start", "t": 0.0},
                  {"ev": "host", "t": 0.5, **sampler.sample(0)}]
        comp.kill()
        events += [{"ev": "host", "t": 1.0 + i, **sampler.sample(1 + i)} for i in range(3)]
        assert comp.xserver is not None and comp.xserver.alive
    gone = [item for e in events for item in e.get("dsgone", [])]
    assert gone == [[comp.proc.pid, "picom", "compositor"]]
    assert monitor_evidence(events)[0] == [f"the display process picom (pid {comp.proc.pid}) exited during the run"]
