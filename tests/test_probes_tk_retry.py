"""The display round trip's Tk connection is retried as the mss capturer's is: a refusal that a busy X
server gives now and then costs a retry, a dead server still fails (after ~0.3 s), a stopped one still
times out. Real Xvfb, real Tk, in real child processes."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from stress.journal import Journal, RunDir
from stress.probes.config import ProbesConfig
from stress.probes.phases import run_phase
from tests.conftest import ROOT
from tests.test_probes_x11 import needs_tk
from tests.xvfb import xvfb

pytestmark = [pytest.mark.x11, needs_tk]

# A child that opens the probe's Tk root through the probe's own opener and says how it went.
OPEN_TK = r"""
import json, sys, time, tkinter
from stress.probes.display import open_tk
delays = tuple(json.loads(sys.argv[1])) if len(sys.argv) > 1 else None
t = time.monotonic()
try:
    root, n = open_tk(tkinter, delays) if delays else open_tk(tkinter)
    root.destroy()
    print(json.dumps({"ok": True, "attempts": n, "s": time.monotonic() - t}), flush=True)
except tkinter.TclError as exc:
    print(json.dumps({"ok": False, "attempts": exc.attempts, "error": str(exc), "s": time.monotonic() - t}), flush=True)
"""


def _child(display: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, DISPLAY=display, PYTHONPATH=str(ROOT))
    env.pop("WAYLAND_DISPLAY", None)
    return subprocess.Popen([sys.executable, "-c", OPEN_TK, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout: float = 20) -> dict:
    import json

    out, err = proc.communicate(timeout=timeout)
    assert out.strip(), err
    return json.loads(out.strip().splitlines()[-1])


def test_a_refused_connection_is_retried_and_succeeds():
    # -maxclients 64 and 80 idle connections fill every client slot: the server refuses the next
    # client (Tk: "couldn't connect to display"), as a busy one does now and then. The slots are
    # freed only once the probe's first attempt was refused (its stderr says so).
    with xvfb(160, 120, args=("-maxclients", "64")) as x:
        path = f"/tmp/.X11-unix/X{x.display[1:]}"
        holders = []
        for _ in range(80):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            holders.append(s)
        time.sleep(0.2)
        proc = _child(x.display, "[0.5, 0.5, 0.5]")   # the same rule, with time for this test to react
        try:
            seen = []                     # Xlib says "Maximum number of clients reached" first
            while not any(ln.startswith("tk: ") for ln in seen) and len(seen) < 20:
                seen.append(proc.stderr.readline() or "(end of output)")
            assert "tk: connection attempt 1 refused (couldn't connect to display" in seen[-1], seen
        finally:
            for s in holders:
                s.close()
        res = _result(proc)
    assert res["ok"] is True and res["attempts"] >= 2, res


def test_a_dead_server_still_fails_after_the_retries():
    with xvfb(160, 120) as x:
        x.kill()                          # its socket stays; every connection is refused
        res = _result(_child(x.display))  # the probe's own schedule: 3 retries over 0.3 s
    assert res["ok"] is False and res["attempts"] == 4, res
    assert "couldn't connect to display" in res["error"]
    assert 0.29 <= res["s"] < 5, res


def test_a_stopped_server_is_still_a_timeout_and_a_healthy_one_is_one_attempt(tmp_path):
    rd = RunDir(tmp_path / "run").create()
    with xvfb(320, 240) as x, Journal(rd.journal, fsync=False) as j:
        config = ProbesConfig(display=x.display, kinds=["display"], repetitions=1, timeout=1.5, display_wait=0.5)
        x.stop()          # connections are accepted by the kernel, then never answered: no refusal to retry
        try:
            t0 = time.monotonic()
            stopped = run_phase("after", config, rd, j, [])
            took = time.monotonic() - t0
        finally:
            x.cont()
        healthy = run_phase("after", config, rd, j, [], visit=1)
    assert [e["status"] for e in stopped] == ["timeout"] and took < 15
    assert [e["status"] for e in healthy] == ["ok"], healthy[0]["reason"]
    assert healthy[0]["metrics"]["connect_attempts"] == 1


def test_only_refusals_are_retried(capsys):
    from stress.probes.capture import connect_retry

    calls = []

    def refuse_twice():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionRefusedError("refused")
        return "conn"

    assert connect_retry(refuse_twice, ConnectionRefusedError, "x", (0.01, 0.01, 0.01)) == ("conn", 3)
    assert capsys.readouterr().err.count("x: connection attempt") == 2

    def broken():
        calls.append(0)
        raise ValueError("not a refusal")

    calls.clear()
    with pytest.raises(ValueError):
        connect_retry(broken, ConnectionRefusedError, "x", (0.01, 0.01))
    assert len(calls) == 1       # anything but a refusal is the probe's finding: never retried
