"""The probes against real compositors (tests/compositors.py): Xvfb with a compositing manager, sway,
weston, KWin and mutter, each headless and software-rendered, started and ended by the test.

Each compositor shows one other client's window (a desktop is never empty), then the probe children
run exactly as in a real run: screenshot, decode and the display round trips (Tk on X11/Xwayland,
the native wl_shm client on Wayland), plus the failure paths: the compositor killed under a running
phase, stopped (SIGSTOP), and the verdict those give.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

import compositors
from stress.analysis import verdict
from stress.journal import Journal, RunDir, read_journal
from stress.probes.common import make_pattern
from stress.probes.config import ProbesConfig
from stress.probes.phases import run_phase
from xvfb import TK_VIEWER

pytestmark = pytest.mark.compositor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tk() -> bool:
    try:
        importlib.import_module("_tkinter")
        return True
    except ImportError:
        return False


FIXTURES = {"xvfb+picom": lambda: compositors.xvfb_composited(manager="picom"),
            "xvfb+xcompmgr": lambda: compositors.xvfb_composited(manager="xcompmgr"),
            "sway": compositors.sway, "weston": compositors.weston, "kwin": compositors.kwin,
            "mutter": compositors.mutter}
# What each compositor can be probed with here, and the capture backend the probes must choose.
KINDS = {"xvfb+picom": (["screenshot", "decode", "display"], "mss"),
         "xvfb+xcompmgr": (["screenshot", "display"], "mss"),
         "sway": (["screenshot", "decode", "display", "display-wayland"], "grim"),
         "weston": (["screenshot", "decode", "display-wayland"], "weston-screenshooter"),
         "kwin": (["screenshot", "decode", "display-wayland"], "kwin")}


@contextmanager
def content(comp: compositors.Compositor, tmp):
    """Another client's window on the desktop, in its own process, until the block ends."""
    env = dict(comp.env(), PYTHONPATH=ROOT)
    if comp.env_vars.get("WAYLAND_DISPLAY"):
        argv = [sys.executable, "-m", "stress.probes.wl_client", "200", "150", "1"]
    else:
        png = tmp / "content.png"
        Image.fromarray(make_pattern(200, 150, 1)).save(png)
        argv = [sys.executable, "-c", TK_VIEWER + "\nprint('ready', flush=True)", str(png)]
        env.pop("WAYLAND_DISPLAY", None)
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if not env.get("WAYLAND_DISPLAY"):
            time.sleep(0.3)   # Tk prints nothing until mainloop; give it its first frame
        else:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        if proc.stdin:
            proc.stdin.close()
        if proc.poll() is None and not env.get("WAYLAND_DISPLAY"):
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def run(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    with Journal(rd.journal, fsync=False) as j:
        yield rd, j


def session(name: str, monkeypatch):
    """Start compositor ``name`` and point this process's environment (which the probe children
    inherit) at it."""
    cm = FIXTURES[name]()
    comp = cm.__enter__()
    for key in ("WAYLAND_DISPLAY", "DISPLAY", "XDG_SESSION_TYPE", "DBUS_SESSION_BUS_ADDRESS", "SWAYSOCK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in comp.env_vars.items():
        monkeypatch.setenv(key, value)
    return cm, comp


@pytest.fixture
def desktop(request, monkeypatch, tmp_path):
    cm, comp = session(request.param, monkeypatch)
    try:
        with content(comp, tmp_path):
            yield request.param, comp
    finally:
        comp.cont()
        cm.__exit__(None, None, None)


def cfg(**kw) -> ProbesConfig:
    base = dict(repetitions=2, timeout=8.0, display_wait=3.0, display_size=128)
    base.update(kw)
    return ProbesConfig(**base)


def png_output(rd: RunDir) -> dict:
    img = Image.radial_gradient("L").resize((96, 64)).convert("RGB")
    rel = "outputs/00000-s1-96x64.png"
    img.save(rd.root / rel)
    import hashlib
    return {"index": 0, "path": rel, "outcome": "ok", "width": 96, "height": 64,
            "sha256": hashlib.sha256((rd.root / rel).read_bytes()).hexdigest(),
            "pixel_sha256": hashlib.sha256(img.tobytes()).hexdigest()}


@pytest.mark.parametrize("desktop", list(KINDS), indirect=True)
def test_every_probe_kind_passes_on_a_healthy_compositor(desktop, run):
    name, comp = desktop
    kinds, backend = KINDS[name]
    if "display" in kinds and not _tk():
        pytest.skip("this Python has no tkinter (libtk8.6 / python3-tk)")
    rd, j = run
    events = run_phase("baseline", cfg(kinds=kinds), rd, j, [png_output(rd)])
    got = {(e["kind"], e["rep"]): e for e in events}
    assert sorted(got) == sorted((k, r) for k in kinds for r in range(2))
    for (kind, rep), e in got.items():
        assert e["status"] == "ok", (name, kind, e["reason"], e["metrics"].get("stderr_tail"))
        assert e["latency_s"] > 0
        if kind != "decode":
            assert e["metrics"]["backend"] == backend
    if "display-wayland" in kinds:
        e = got[("display-wayland", 0)]
        # The window was found where the compositor put it, and it went away once closed.
        assert e["metrics"]["mismatch_fraction"] == 0 and e["metrics"]["hidden_s"] is not None
        # The latency is the whole new window's: from the connection, so it holds the window's set-up and
        # the mapping commit's round trip, and the part from the commit on (the old latency) inside it.
        m = e["metrics"]
        assert m["latency_from"] == "connect"
        assert e["latency_s"] >= m["setup_s"] + m["mapped_s"] - 2e-6      # each rounded to 1 us
        assert 0 < m["commit_visible_s"] <= e["latency_s"] - m["setup_s"] + 2e-6
        if name == "weston":   # weston sends wp_presentation feedback: when that frame reached the screen
            assert 0 < e["metrics"]["presented_s"] < 1.0
    if "screenshot" in kinds:
        assert got[("screenshot", 0)]["metrics"]["black_frames"] == 0
    assert comp.alive


@pytest.mark.parametrize("desktop", ["mutter"], indirect=True)
def test_mutter_without_gnome_shell_has_no_capture_and_says_so(desktop, run):
    rd, j = run
    events = run_phase("baseline", cfg(kinds=["screenshot", "display-wayland", "decode"]), rd, j, [])
    by = {e["kind"]: e for e in events}
    for kind in ("screenshot", "display-wayland"):
        assert by[kind]["status"] == "unsupported"
        assert "mutter offers no screenshot interface" in by[kind]["reason"]
    assert by["decode"]["status"] == "ok"
    v = verdict(events, cfg(kinds=["screenshot", "display-wayland", "decode"]))
    assert v["verdict"] == "inconclusive"


@pytest.mark.parametrize("desktop", ["sway", "weston"], indirect=True)
def test_compositor_killed_while_a_phase_runs(desktop, run):
    name, comp = desktop
    rd, j = run
    config = cfg(kinds=["display-wayland", "screenshot"], repetitions=3)
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(events=run_phase("after", config, rd, j, [])))
    t0 = time.monotonic()
    worker.start()
    while time.monotonic() - t0 < 20 and not any(e.get("ev") == "probe" for e in read_journal(rd.journal).events):
        time.sleep(0.01)
    comp.kill()   # the compositor dies under the running phase
    worker.join(60)
    assert not worker.is_alive()
    events = out["events"]
    assert [(e["kind"], e["rep"]) for e in events] == [("display-wayland", r) for r in range(3)] + [
        ("screenshot", r) for r in range(3)], [(e["kind"], e["status"], e["reason"]) for e in events]
    assert events[0]["status"] == "ok", events[0]["reason"]
    later = events[-3:]
    # Everything after the kill is a failure of the desktop: not lost, not hung, not "unsupported".
    assert all(e["status"] == "fail" for e in later), [(e["status"], e["reason"]) for e in later]
    assert time.monotonic() - t0 < 40


@pytest.mark.parametrize("desktop", ["sway", "weston", "kwin"], indirect=True)
def test_stopped_compositor_is_a_timeout_then_recovers(desktop, run):
    name, comp = desktop
    rd, j = run
    config = cfg(kinds=["screenshot"], timeout=2.0, display_wait=0.5)
    comp.stop()
    try:
        t0 = time.monotonic()
        events = run_phase("after", config, rd, j, [])
        took = time.monotonic() - t0
    finally:
        comp.cont()
    # The capture tool gives up first (its own limit is the probe's time left), or the supervisor
    # kills the probe: either way a failure of the desktop, never "unsupported".
    assert [e["status"] for e in events] in (["fail", "fail"], ["timeout", "timeout"]), events
    assert all("did not answer" in e["reason"] or "did not deliver" in e["reason"] or "no result within"
               in e["reason"] for e in events), [e["reason"] for e in events]
    assert took < 20
    again = run_phase("after", config, rd, j, [], visit=1)
    assert [e["status"] for e in again] == ["ok", "ok"], [e["reason"] for e in again]


@pytest.mark.parametrize("desktop", ["sway"], indirect=True)
def test_verdict_on_sway_healthy_then_stopped(desktop, run):
    name, comp = desktop
    rd, j = run
    config = cfg(kinds=["screenshot", "display-wayland", "decode"], repetitions=2, slowdown_ratio=50,
                 timeout=3.0, display_wait=1.0)
    rec = png_output(rd)
    run_phase("baseline", config, rd, j, [rec])
    run_phase("during", config, rd, j, [rec])
    healthy = verdict(read_journal(rd.journal).events, config)
    assert healthy["verdict"] == "not-reproduced", healthy["reasons"]
    comp.stop()
    try:
        run_phase("after", config, rd, j, [rec])
    finally:
        comp.cont()
    broken = verdict(read_journal(rd.journal).events, config)
    assert broken["verdict"] == "reproduced"
    assert any(r.startswith("after: screenshot ") and "grim did not answer" in r for r in broken["reasons"]), \
        broken["reasons"]
    assert any("Wayland display round trip" in r for r in broken["reasons"]), broken["reasons"]


def test_locate_finds_the_window_and_rejects_a_stale_pattern():
    from stress.probes.display_wayland import locate

    screen = np.full((120, 160, 3), 40, dtype=np.uint8)
    mine, other = make_pattern(32, 32, 5), make_pattern(32, 32, 6)
    screen[50:82, 70:102] = mine
    assert locate(mine, screen, 2) == (70, 50)
    assert locate(other, screen, 2) is None   # an earlier probe's frame never matches
    screen[50:82, 70:102] = other
    assert locate(mine, screen, 2) is None
