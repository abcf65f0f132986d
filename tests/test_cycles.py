"""Desktop cycles inside a scenario (stress/cycles.py, stress/cycle_actions.py): the `cycles:` section,
the refusals before a run (one line, exit 3 / 2, nothing run), display off/on on a real Xvfb (which
has no DPMS extension: the X screen saver blanks it, read back through XScreenSaverQueryInfo), and a
run end to end on the tiny models with a display off/on between images and an idle period after the
workload, each journalled and followed by probes that the judge compares with baseline."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from stress import cycle_actions as act
from stress.analysis import verdict
from stress.cycles import CycleSpec, refusal
from stress.errors import ExitCode, ScenarioError
from stress.probes.config import ProbesConfig
from stress.record import load
from stress.scenario import load_scenarios
from tests.conftest import run_cli
from tests.xvfb import xvfb

SCENARIO = """\
name: cycles
model:
  base: builtin:tiny-sdxl
  device: cpu
steps: 2
images: 2
resolutions: [64x64]
prompt: "a lighthouse"
probes:
  kinds: [screenshot, display]
  phases: [baseline, after]
  repetitions: 2
  timeout: 4
  display_wait: 2
  slowdown_ratio: 1000      # timing noise on a shared machine is not what this test is about
monitors:
  enabled: false
"""


def _write(tmp_path: Path, cycles: str, images: int = 2) -> Path:
    p = tmp_path / "cycles.yaml"
    p.write_text(SCENARIO.replace("images: 2", f"images: {images}") + "cycles:\n" + cycles)
    return p


def test_the_cycles_section(tmp_path):
    (sc,) = load_scenarios(_write(tmp_path, "  - {after_image: 1, do: dpms_off_on, off_s: 0.5}\n"
                                            "  - {after: workload, do: idle, seconds: 3}\n"))
    a, b = sc.cycles
    assert (a.do, a.after_image, a.off_s, a.seconds, a.at) == ("display_off_on", 1, 0.5, None, "after image 1")
    assert (b.do, b.after, b.seconds, b.at) == ("idle", "workload", 3.0, "after the workload")
    assert CycleSpec.model_validate(a.model_dump(mode="json")) == a      # round trip (scenario.resolved.json)
    assert CycleSpec(do="suspend", after="workload").seconds == 30.0
    for cycles, what in [("  - {do: idle, seconds: 1}\n", "give exactly one of after_image"),
                         ("  - {after: workload, do: idle, off_s: 1}\n", "off_s is for display_off_on and vt_switch"),
                         ("  - {after_image: 5, do: idle}\n", "runs after image 5, but the scenario makes 2"),
                         ("  - {after: workload, do: reboot}\n", "cycles[0].do")]:
        with pytest.raises(ScenarioError) as exc:
            load_scenarios(_write(tmp_path, cycles))
        line = str(exc.value)
        assert what in line and "cycles.yaml:" in line, line


def _run(tmp_path: Path, scen: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli("run", str(scen), "--out", str(tmp_path / "art"), "--reports", str(tmp_path / "rep"),
                   "--no-history", "--quiet", *args, env=env, timeout=300)


def test_suspend_is_refused_with_one_line_before_anything_runs(tmp_path):
    scen = _write(tmp_path, "  - {after: workload, do: suspend, seconds: 5}\n")
    missing = act.suspend_missing()
    res = _run(tmp_path, scen)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert "cycles[0] (suspend after the workload): refused: " in res.stderr and "nothing was run" in res.stderr
    if missing:       # this machine cannot suspend itself (here: no /dev/rtc0): exit 3, naming why
        assert res.returncode == int(ExitCode.ENVIRONMENT), res.stderr
        assert "cannot suspend and wake itself here: " + "; ".join(missing) in res.stderr
        # the opt-in does not make a machine that cannot suspend suspend (and is never tried where it could)
        again = _run(tmp_path, scen, "--allow-suspend")
        assert again.returncode == int(ExitCode.ENVIRONMENT) and "cannot suspend" in again.stderr
    else:             # a machine that could: the opt-in is missing, exit 2
        assert res.returncode == int(ExitCode.BAD_INPUT) and "--allow-suspend" in res.stderr
    assert not (tmp_path / "art").exists()          # nothing was run, nothing half-written


def test_vt_switch_and_wayland_display_off_are_refused_where_impossible():
    spec = CycleSpec(do="vt_switch", after="workload")
    missing = act.vt_missing()
    if not missing:
        pytest.skip("this machine could switch VTs; the test never does")
    why, code = refusal(spec, {})
    assert why == "a VT switch needs " + "; ".join(missing) and code == ExitCode.ENVIRONMENT
    why, code = refusal(CycleSpec(do="display_off_on", after="workload"), {"PATH": "/usr/bin:/bin"})
    assert why.startswith("no display to switch off") and code == ExitCode.ENVIRONMENT
    assert refusal(CycleSpec(do="idle", after="workload"), {}) is None


def test_a_failed_cycle_makes_the_verdict_inconclusive():
    probes = [{"ev": "probe", "phase": ph, "kind": "screenshot", "rep": r, "status": "ok", "latency_s": 0.01,
               "visit": 0} for ph in ("baseline", "cycle", "after") for r in range(5)]
    cyc = {"ev": "cycle", "index": 0, "do": "display_off_on", "at": "after image 1", "state": "end",
           "status": "error", "reason": "xset did not answer within 10 s"}
    cfg = ProbesConfig(kinds=["screenshot"], phases=["baseline", "after"])
    ok = verdict(probes, cfg)
    assert ok["verdict"] == "not-reproduced" and "in cycle, after" in ok["reasons"][0]
    v = verdict(probes + [cyc], cfg)
    assert v["verdict"] == "inconclusive"
    assert v["reasons"] == ["cycle 0 (display_off_on after image 1) error: xset did not answer within 10 s; "
                            "the desktop was not checked after it"]
    bad = [dict(p, status="timeout", latency_s=None) if p["phase"] == "cycle" else p for p in probes]
    assert verdict(bad, cfg)["reasons"][0].startswith("cycle: screenshot timed out in 5/5 probes")


@pytest.mark.x11
def test_display_off_on_on_xvfb_blanks_it_and_reads_it_back():
    with xvfb(160, 120) as x:
        env = x.env()
        assert act.display_method(env) == ("screensaver", "")        # Xvfb has no DPMS extension
        method, why = act.display_method(env, "dpms")
        assert method is None and "has no DPMS extension" in why
        res = act.perform(CycleSpec(do="display_off_on", after="workload", off_s=0.2), env)
        assert res["status"] == "ok" and res["method"] == "screensaver", res
        assert res["readback"] == {"during": "on", "after": "off"}   # blanked while off, back after
        assert "no DPMS extension" in res["reason"]


@pytest.mark.x11
@pytest.mark.slow
def test_cycles_run_end_to_end_with_probes_after_each(tmp_path, model_cache):
    if not shutil.which("xsetroot"):
        pytest.skip("xsetroot is not installed (apt-get install x11-xserver-utils)")
    scen = _write(tmp_path, "  - {after_image: 1, do: dpms_off_on, off_s: 0.5}\n"
                            "  - {after: workload, do: idle, seconds: 1}\n")
    with xvfb(320, 240) as x:
        # a patterned root: a flat one fails the screenshot probe at baseline already
        subprocess.run(["xsetroot", "-mod", "4", "4", "-fg", "white", "-bg", "#404040"], env=x.env(), check=True)
        env = {k: v for k, v in x.env().items() if k in ("DISPLAY",)}
        env.update(STRESS_CACHE=str(model_cache), WAYLAND_DISPLAY="", XDG_SESSION_TYPE="")
        res = _run(tmp_path, scen, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    (run_dir,) = (tmp_path / "art").iterdir()
    rec = load(run_dir)
    ends = {c["index"]: c for c in rec.cycles}
    assert ends[0]["do"] == "display_off_on" and ends[0]["status"] == "ok" and ends[0]["method"] == "screensaver"
    assert ends[0]["readback"] == {"during": "on", "after": "off"}
    assert ends[1]["do"] == "idle" and ends[1]["status"] == "ok" and ends[1]["s"] >= 1.0
    events = [json.loads(ln) for ln in (run_dir / "journal.jsonl").read_text().splitlines()]
    order = [(e["ev"], e.get("index", e.get("phase")), e.get("state")) for e in events
             if e["ev"] in ("cycle", "image") or (e["ev"] == "phase" and e["phase"] != "baseline")]
    # after the first image and before the second; after the workload and before the `after` probes
    assert order.index(("image", 0, None)) < order.index(("cycle", 0, "start")) < order.index(("cycle", 0, "end")) \
        < order.index(("image", 1, None))
    assert order.index(("phase", "workload", "end")) < order.index(("cycle", 1, "start")) \
        < order.index(("phase", "after", "start"))
    probes = [(p["visit"], p["kind"], p["status"]) for p in rec.probes if p["phase"] == "cycle"]
    assert sorted(probes) == sorted((v, k, "ok") for v in (0, 1) for k in ("screenshot", "display") for _ in range(2))
    v = rec.verdict
    assert v["verdict"] == "not-reproduced", v["reasons"]
    assert "cycle" in v["details"]["phases"] and "in cycle, after" in v["reasons"][0]


@pytest.mark.compositor
def test_display_off_on_on_sway_and_refused_on_weston():
    import compositors

    with compositors.sway(320, 240, xwayland=False) as comp:
        env = comp.env()
        assert act.display_method(env) == ("sway", "")
        res = act.perform(CycleSpec(do="display_off_on", after="workload", off_s=0.2), env)
        assert res["method"] == "sway" and res["readback"]["after"] == "on", res
        # sway 1.7's headless backend answers "success" to `output * dpms off` and leaves the output on:
        # the read-back (swaymsg -t get_outputs) catches it, and the cycle is not recorded as done
        if res["readback"]["during"] == "off":
            assert res["status"] == "ok", res
        else:
            assert res["status"] == "error" and "the cycle did not take effect" in res["reason"], res
    with compositors.weston(320, 240) as comp:
        why, code = refusal(CycleSpec(do="display_off_on", after="workload"), comp.env())
        assert "only sway has a command to switch outputs off" in why and "weston" in why
        assert code == ExitCode.ENVIRONMENT
