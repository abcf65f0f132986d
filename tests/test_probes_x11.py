"""Compositor probes against a real X server (Xvfb), in real probe child processes."""
from __future__ import annotations

import importlib
import shutil
import sys
import threading
import time

import pytest
from PIL import Image

from stress.analysis import verdict
from stress.journal import Journal, RunDir, read_journal
from stress.probes.config import ProbesConfig
from stress.probes.phases import run_phase
from xvfb import TK_VIEWER, cover, xvfb

pytestmark = pytest.mark.x11


def _tk_missing() -> str | None:
    try:
        importlib.import_module("_tkinter")  # the C part is what a Python without Tk lacks
    except ImportError as exc:
        return f"this Python has no tkinter ({exc}); install libtk8.6 / python3-tk"
    return None


needs_tk = pytest.mark.skipif(_tk_missing() is not None, reason=str(_tk_missing()))


@pytest.fixture
def xserver():
    with xvfb(640, 480) as x:
        yield x


@pytest.fixture
def run(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    with Journal(rd.journal, fsync=False) as j:
        yield rd, j


def cfg(x, **kw) -> ProbesConfig:
    base = dict(display=x.display, repetitions=2, timeout=8.0, display_wait=2.5)
    base.update(kw)
    return ProbesConfig(**base)


def png_output(rd: RunDir, index: int = 0, size=(96, 64)) -> dict:
    """A real output image and the record the runner would write for it."""
    import hashlib

    img = Image.radial_gradient("L").resize(size).convert("RGB")
    rel = f"outputs/{index:05d}-s1-{size[0]}x{size[1]}.png"
    img.save(rd.root / rel)
    data = (rd.root / rel).read_bytes()
    return {"index": index, "path": rel, "outcome": "ok", "width": size[0], "height": size[1],
            "sha256": hashlib.sha256(data).hexdigest(),
            "pixel_sha256": hashlib.sha256(Image.open(rd.root / rel).convert("RGB").tobytes()).hexdigest()}


def test_empty_root_is_flagged_as_black_frames(xserver, run):
    rd, j = run
    events = run_phase("baseline", cfg(xserver, kinds=["screenshot"]), rd, j, [])
    assert [e["status"] for e in events] == ["fail", "fail"]
    for e in events:
        assert e["metrics"]["black_frames"] == 2  # the whole desktop and its one monitor
        assert "all black" in e["reason"]
        assert e["latency_s"] > 0
        for rel in e["metrics"]["kept"]:  # keep_screenshots=failed keeps them, as PNG
            assert Image.open(rd.root / rel).size == (640, 480)
    # The journal holds exactly what run_phase returned.
    assert [e for e in read_journal(rd.journal).events if e["ev"] == "probe"] == events


@needs_tk
def test_clean_round_trip_matches_and_keeps_nothing(xserver, run):
    rd, j = run
    events = run_phase("baseline", cfg(xserver, kinds=["display"], repetitions=3), rd, j, [])
    assert [e["status"] for e in events] == ["ok"] * 3, [e["reason"] for e in events]
    for e in events:
        m = e["metrics"]
        assert m["mismatch"] is False and m["mismatch_fraction"] == 0.0
        assert m["connect_attempts"] == 1   # a healthy, idle server accepts the first connection
        assert 0 < e["latency_s"] < 1.0 and m["hidden_s"] is not None
        assert m["size"] == "256x256" and m["at"] == [192, 112]  # centred on the screen
        assert "kept" not in m
    assert not any(p.suffix == ".png" for p in rd.probes.iterdir())


@needs_tk
def test_window_covered_by_another_window_is_a_mismatch(xserver, run):
    rd, j = run
    config = cfg(xserver, kinds=["display"], display_wait=1.0)
    baseline = run_phase("baseline", config, rd, j, [])
    # Another window above ours over its top-left quarter (our window sits at 192,112, 256x256).
    with cover(xserver, 192, 112, 128, 128, rgb=(255, 0, 0)):
        after = run_phase("after", config, rd, j, [])
    assert [e["status"] for e in baseline] == ["ok", "ok"]
    assert [e["status"] for e in after] == ["fail", "fail"]
    for e in after:
        assert e["metrics"]["mismatch"] is True and e["metrics"]["never_visible"] is False
        assert e["metrics"]["mismatch_fraction"] == pytest.approx(0.25, abs=0.01)
        assert e["metrics"]["max_diff"] == 255
        assert "25.0% of pixels differ" in e["reason"]
        shown, gap, captured = 256, 4, Image.open(rd.root / e["metrics"]["kept"][0])
        assert captured.size == (3 * shown + 2 * gap, shown)  # shown | captured | difference
    v = verdict(read_journal(rd.journal).events, config)
    assert v["verdict"] == "reproduced" and v["exit_code"] == 10
    assert "after: display round trip mismatched in 2/2 probes (up to 25% of pixels differ)" in v["reasons"]


@needs_tk
def test_frozen_screen_window_never_appears(xserver, run):
    rd, j = run
    # The whole screen painted black above every window: what a hung compositor shows.
    with cover(xserver, 0, 0, 640, 480, rgb=(0, 0, 0)):
        events = run_phase("after", cfg(xserver, kinds=["display"], repetitions=1, display_wait=0.4), rd, j, [])
    assert events[0]["status"] == "fail"
    assert events[0]["metrics"]["never_visible"] is True
    assert "never appeared" in events[0]["reason"]


@needs_tk
def test_display_server_killed_while_a_phase_runs(xserver, run):
    rd, j = run
    config = cfg(xserver, kinds=["display", "screenshot"], repetitions=3)
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(events=run_phase("after", config, rd, j, [])))
    t0 = time.monotonic()
    worker.start()
    while time.monotonic() - t0 < 20 and not any(e.get("ev") == "probe" for e in read_journal(rd.journal).events):
        time.sleep(0.01)
    xserver.kill()  # the display server dies under the running phase
    worker.join(60)
    assert not worker.is_alive()
    events = out["events"]
    assert [(e["kind"], e["rep"]) for e in events] == [("display", r) for r in range(3)] + [
        ("screenshot", r) for r in range(3)]
    assert events[0]["status"] == "ok"
    # Everything after the kill is recorded as a failure of the desktop, not lost or hung.
    later = events[-3:]
    assert all(e["status"] == "fail" for e in later), [(e["status"], e["reason"]) for e in later]
    assert all("display" in e["reason"] for e in later)
    assert time.monotonic() - t0 < 30


def test_stopped_display_server_is_a_timeout(xserver, run):
    rd, j = run
    config = cfg(xserver, kinds=["screenshot"], timeout=1.5, display_wait=0.5)
    xserver.stop()  # clients connect, then wait forever for the server's answer
    try:
        t0 = time.monotonic()
        events = run_phase("after", config, rd, j, [])
        took = time.monotonic() - t0
    finally:
        xserver.cont()
    assert [e["status"] for e in events] == ["timeout", "timeout"]
    assert "no result within 1.5 s" in events[0]["reason"]
    assert took < 15  # bounded: each probe by its timeout, plus a child's start
    # Once the server runs again, so do the probes.
    again = run_phase("after", config, rd, j, [], visit=1)
    assert [e["status"] for e in again] == ["fail", "fail"] and "black" in again[0]["reason"]


@needs_tk
@pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool is not installed (apt-get install -y xdotool)")
def test_external_viewer_shows_the_output(xserver, run):
    rd, j = run
    rec = png_output(rd)
    config = cfg(xserver, kinds=["viewer"], repetitions=1, display_wait=5.0,
                 viewer_command=[sys.executable, "-c", TK_VIEWER, "{path}"])
    (e,) = run_phase("after", config, rd, j, [rec])
    assert e["status"] == "ok", e["reason"]
    assert e["metrics"]["image"] == rec["path"]
    assert e["metrics"]["window"]["width"] >= 96 and not e["metrics"]["flat"]
    assert 0 < e["latency_s"] < 5


def test_missing_viewer_is_unsupported_once(xserver, run):
    rd, j = run
    config = cfg(xserver, kinds=["viewer"], repetitions=3, viewer_command=["no-such-viewer-xyz", "{path}"])
    events = run_phase("after", config, rd, j, [])
    assert len(events) == 1
    reason = events[0]["reason"]
    assert events[0]["status"] == "unsupported" and ("no-such-viewer-xyz" in reason or "xdotool" in reason)


@needs_tk
def test_baseline_and_after_on_a_healthy_display_is_not_reproduced(xserver, run):
    rd, j = run
    rec = png_output(rd, size=(200, 120))
    # A large slowdown ratio: this test is about the whole path, not about timing noise on CI.
    config = cfg(xserver, kinds=["display", "decode"], repetitions=2, slowdown_ratio=50,
                 display_image="latest-output")
    run_phase("baseline", config, rd, j, [])
    run_phase("during", config, rd, j, [rec], visit=0)
    run_phase("after", config, rd, j, [rec])
    events = read_journal(rd.journal).events
    during = [e for e in events if e.get("phase") == "during" and e["kind"] == "display"]
    assert during and all(e["metrics"]["source"] == rec["path"] for e in during)
    v = verdict(events, config)
    assert v["verdict"] == "not-reproduced", v["reasons"]
    assert v["exit_code"] == 0
    assert v["details"]["phases"]["after"]["display"]["n1"] == 2
