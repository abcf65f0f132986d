"""The probes' building blocks: frame checks, comparison, patterns, config, the child harness."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from stress.analysis import verdict
from stress.journal import Journal, RunDir
from stress.probes.capture import parse_portal_response
from stress.probes.common import compare, frame_stats, make_pattern
from stress.probes.config import ProbesConfig
from stress.probes.phases import _run_kind, probe_env, run_phase, session_type


def test_frame_stats_black_flat_and_content():
    black = np.zeros((10, 20, 4), dtype=np.uint8)
    assert frame_stats(black, 3) | {"mean": None} == {"flat": True, "black": True, "mean": None,
                                                      "min": [0, 0, 0], "max": [0, 0, 0]}
    grey = np.full((10, 20, 3), 90, dtype=np.uint8)
    grey[0, 0] = 92  # within the tolerance: still one flat colour
    st = frame_stats(grey, 3)
    assert st["flat"] and not st["black"]
    grey[5, 5] = 200
    assert not frame_stats(grey, 3)["flat"]
    near_black = np.full((4, 4, 3), 2, dtype=np.uint8)
    assert frame_stats(near_black, 3)["black"] and not frame_stats(near_black, 1)["black"]


def test_compare_counts_differing_pixels_and_largest_difference():
    a = np.zeros((10, 10, 3), dtype=np.uint8)
    b = a.copy()
    b[:5, :2] = (0, 9, 0)    # 10 pixels off by 9
    b[9, 9] = (1, 1, 1)      # within tolerance 2
    assert compare(a, b, 2) == {"fraction": 0.10, "max_diff": 9}
    assert compare(a, b, 0)["fraction"] == pytest.approx(0.11)
    assert compare(a, b[:9], 2)["fraction"] == 1.0  # wrong size: everything differs


def test_pattern_is_deterministic_and_differs_per_seed():
    a, b, c = make_pattern(64, 48, 1), make_pattern(64, 48, 1), make_pattern(64, 48, 2)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    diff = compare(a, c, 0)["fraction"]
    assert 0.2 < diff < 0.3  # only the noise quarter changes between probes
    assert not frame_stats(a, 3)["flat"]


def test_portal_response_parsing():
    line = ("/org/freedesktop/portal/desktop/request/1_42/stressab12: org.freedesktop.portal.Request.Response "
            "(uint32 0, {'uri': <'file:///home/u/Pictures/Screenshot%20from%20now.png'>})")
    assert parse_portal_response(line, "stressab12") == (0, "file:///home/u/Pictures/Screenshot%20from%20now.png")
    assert parse_portal_response(line, "stressother") is None
    cancelled = "/org/freedesktop/portal/desktop/request/1_42/tok: org.freedesktop.portal.Request.Response (uint32 1, @a{sv} {})"
    assert parse_portal_response(cancelled, "tok") == (1, None)


def test_session_type_and_display_override(monkeypatch):
    assert session_type({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}) == "wayland"
    assert session_type({"XDG_SESSION_TYPE": "wayland"}) == "wayland"
    assert session_type({"DISPLAY": ":1"}) == "x11"
    assert session_type({}) == "none"
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    env = probe_env(ProbesConfig(display=":7"))
    assert env["DISPLAY"] == ":7" and session_type(env) == "x11"
    # The child finds this very package even when it is not installed.
    assert (Path(env["PYTHONPATH"].split(os.pathsep)[0]) / "stress" / "probes" / "child.py").is_file()


@pytest.mark.parametrize("kw, message", [
    ({"kinds": ["viewer"]}, "needs viewer_command"),
    ({"kinds": ["viewer"], "viewer_command": ["feh"]}, "must contain '{path}'"),
    ({"timeout": 3, "display_wait": 5}, "must be shorter than timeout"),
    ({"phases": ["after"]}, "must include 'baseline'"),
    ({"kinds": ["decode", "decode"]}, "lists a probe kind twice"),
])
def test_config_rejects_inconsistent_settings(kw, message):
    with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("(", r"\(")):
        ProbesConfig(**kw)


def test_config_defaults_keep_their_names():
    c = ProbesConfig()
    assert (c.phases, c.kinds, c.repetitions, c.timeout, c.keep_screenshots, c.slowdown_ratio, c.alpha) == (
        ["baseline", "during", "after", "after-exit"], ["screenshot", "decode", "display"], 5, 20.0,
        "failed", 1.5, 0.01)


def test_a_crashing_child_is_recorded_with_its_stderr(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    # An unknown kind makes the real child process die with a KeyError before it reports.
    results = list(_run_kind("no-such-kind", "after", 0, ProbesConfig(repetitions=2), rd, [],
                             probe_env(ProbesConfig()), "none"))
    assert [r["rep"] for r in results] == [0, 1]
    assert all(r["status"] == "error" for r in results)
    assert "exited with status 1 before reporting: KeyError: 'no-such-kind'" in results[0]["reason"]
    assert "Traceback" in results[0]["metrics"]["stderr_tail"]
    assert "no-such-kind" in (rd.logs / "probes.log").read_text()


def test_no_display_records_unavailable_once_and_still_decodes(tmp_path, monkeypatch):
    rd = RunDir(tmp_path / "run").create()
    j = Journal(rd.journal, fsync=False)
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(var, raising=False)
    config = ProbesConfig(repetitions=2, timeout=10)
    events = run_phase("baseline", config, rd, j, [])
    got = [(e["kind"], e["status"], e["reason"]) for e in events]
    assert got == [("screenshot", "unavailable", "no display"), ("decode", "ok", None),
                   ("decode", "ok", None), ("display", "unavailable", "no display")]
    assert Path(rd.root / "probes/reference/reference.json").is_file()
    v = verdict(events, config)
    assert v["verdict"] == "inconclusive" and v["exit_code"] == 11
    assert any(r.startswith("screenshot: unavailable (no display)") for r in v["reasons"])


def test_phase_not_configured_runs_nothing(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    j = Journal(rd.journal, fsync=False)
    assert run_phase("during", ProbesConfig(phases=["baseline", "after"]), rd, j, []) == []
    assert run_phase("baseline", ProbesConfig(enabled=False), rd, j, []) == []
    assert j.count == 0


def test_wayland_without_a_backend_is_unsupported_not_black(tmp_path, monkeypatch):
    import compositors

    rd = RunDir(tmp_path / "run").create()
    j = Journal(rd.journal, fsync=False)
    with compositors.weston() as comp:
        for var in ("DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
            monkeypatch.delenv(var, raising=False)
        for key, value in comp.env_vars.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no weston-screenshooter, no gdbus
        config = ProbesConfig(repetitions=3, kinds=["screenshot", "display"], timeout=10)
        events = run_phase("baseline", config, rd, j, [])
    assert [(e["kind"], e["status"]) for e in events] == [("screenshot", "unsupported"), ("display", "unsupported")]
    assert events[0]["reason"] == ("no screenshot backend works on weston (weston-screenshooter is not installed "
                                   "(package weston); gdbus is not installed (package libglib2.0-bin))")
    assert "needs X11 or XWayland" in events[1]["reason"]
    assert verdict(events, config)["verdict"] == "inconclusive"


def test_wayland_socket_that_is_gone_is_a_failure_not_unsupported(tmp_path, monkeypatch):
    """WAYLAND_DISPLAY names a compositor that is not there (it died): a failure of the desktop."""
    rd = RunDir(tmp_path / "run").create()
    j = Journal(rd.journal, fsync=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-stress-test-none")
    monkeypatch.delenv("DISPLAY", raising=False)
    events = run_phase("after", ProbesConfig(repetitions=2, kinds=["screenshot"], timeout=10), rd, j, [])
    assert [e["status"] for e in events] == ["fail", "fail"]
    assert "the Wayland compositor is gone" in events[0]["reason"] and events[0]["metrics"]["connect_failed"]


def test_the_wayland_window_answers_its_compositor_while_a_capture_runs():
    """display-wayland's capture (grim: 15-50 ms) runs while a thread keeps dispatching the window's
    events (a tiling compositor shows a new window only once its configure is acknowledged); the
    capture's frame is returned, and a connection lost meanwhile is the probe's error, not a hang."""
    import threading
    import time

    from stress.probes.display_wayland import grab_answering
    from stress.probes.wl_client import WaylandError

    class Win:
        def __init__(self, fail_after: int | None = None):
            self.calls, self.during, self.fail_after = 0, 0, fail_after
            self.capturing = threading.Event()

        def dispatch(self, seconds: float) -> None:
            self.calls += 1
            self.during += self.capturing.is_set()
            if self.fail_after is not None and self.calls > self.fail_after:
                raise WaylandError("the compositor closed the connection")
            time.sleep(seconds)

    class Cap:
        def __init__(self, win):
            self.win = win

        def grab(self, region):
            self.win.capturing.set()
            time.sleep(0.1)
            self.win.capturing.clear()
            return np.full((2, 2, 3), 7, dtype=np.uint8)

    win = Win()
    frame = grab_answering(Cap(win), {"left": 0}, win)
    assert frame.shape == (2, 2, 3) and int(frame[0, 0, 0]) == 7
    assert win.during >= 10, win.during                 # answered all through the 100 ms capture
    calls = win.calls
    time.sleep(0.05)
    assert win.calls == calls                           # and stopped with it
    lost = Win(fail_after=3)
    with pytest.raises(WaylandError, match="closed the connection"):
        grab_answering(Cap(lost), {}, lost)


def test_a_buffer_that_cannot_reach_the_compositor_leaves_no_fd_or_mapping(tmp_path):
    import socket

    from stress.probes.wl_client import Connection, WaylandError, shm_buffer, shm_memory

    path = str(tmp_path / "wayland-0")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        c = Connection(path, timeout=1.0)
        peer, _ = server.accept()
        peer.close()                                  # the compositor went away
        before = set(os.listdir("/proc/self/fd"))
        rgb = make_pattern(64, 64, 3)
        memory = shm_memory(rgb)
        with pytest.raises(WaylandError, match="connection lost"):
            for _ in range(50):                       # the first sends may still be buffered
                shm_buffer(c, 2, rgb, memory=memory)
                memory = shm_memory(rgb)
        assert memory[1].closed                       # its mapping is unmapped, and its fd closed:
        assert set(os.listdir("/proc/self/fd")) == before
        c.close()
    finally:
        server.close()
