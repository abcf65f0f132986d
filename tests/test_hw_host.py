"""Host sampler against real processes: a spawned worker tree, and a real X server (Xvfb) as the
display server to watch."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from stress.hw import host

# A "worker" with two children, like a torch worker with compile/decode helpers.
TREE = """
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(60)
"""


@pytest.fixture
def worker_tree():
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    kids = [int(x) for x in proc.stdout.readline().split()]
    yield proc, kids
    for pid in kids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait()


def test_worker_tree_is_seen(worker_tree) -> None:
    proc, kids = worker_tree
    sampler = host.HostSampler(lambda: [proc.pid], tree_every=1)
    first = sampler.sample(0)
    assert first["mt"] == psutil.virtual_memory().total and first["ma"] > 0 and "su" in first
    assert len(first["ld"]) == 3
    (wk,) = first["wk"]
    assert wk["p"] == proc.pid and wk["n"] == 3 and wk["t"] >= 3 and wk["r"] > 3 * 1_000_000
    second = sampler.sample(1)
    assert "mt" not in second                      # totals only when they change
    os.kill(kids[0], 9)                             # its parent does not reap it: a zombie, counted apart
    assert wait_until(lambda: sampler.sample(2)["wk"][0].get("z") == 1)
    assert sampler.sample(3)["wk"][0]["n"] == 2


def wait_until(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_restarted_worker_is_followed_at_once(worker_tree) -> None:
    proc, _ = worker_tree
    pids = [proc.pid]
    sampler = host.HostSampler(lambda: pids, tree_every=1000)
    assert sampler.sample(1)["wk"][0]["p"] == proc.pid
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pids[:] = [other.pid]                       # the runner restarted its worker
        (wk,) = sampler.sample(2)["wk"]            # not a refresh tick: the change alone triggers it
        assert wk["p"] == other.pid and wk["n"] == 1
    finally:
        other.kill()
        other.wait()


def test_worker_callback_errors_do_not_stop_sampling() -> None:
    def broken() -> list[int]:
        raise RuntimeError("runner bug")
    rec = host.HostSampler(broken).sample(0)
    assert rec["wk"] == [] and rec["ma"] > 0


def test_dead_worker_pid_is_harmless() -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    rec = host.HostSampler(lambda: [p.pid]).sample(0)
    assert rec["wk"] == [{"p": p.pid, "n": 0, "r": 0, "c": 0.0, "t": 0}]


@pytest.mark.parametrize("env,kind", [
    ({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"}, "wayland"),
    ({"WAYLAND_DISPLAY": "wayland-1", "DISPLAY": ":0"}, "wayland"),
    ({"DISPLAY": ":0"}, "x11"),
    ({"XDG_SESSION_TYPE": "x11", "DISPLAY": ":1"}, "x11"),
    ({"XDG_SESSION_TYPE": "tty"}, "tty"),
    ({"XDG_SESSION_TYPE": "tty", "DISPLAY": ":99"}, "x11"),
    ({}, "none"),
])
def test_session_type_from_environment(monkeypatch: pytest.MonkeyPatch, env: dict, kind: str) -> None:
    for k in ("XDG_SESSION_TYPE", "WAYLAND_DISPLAY", "DISPLAY", "XDG_CURRENT_DESKTOP"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = host.display_session()
    assert s["type"] == kind
    assert s["display"] == env.get("DISPLAY") and s["wayland_display"] == env.get("WAYLAND_DISPLAY")


@pytest.mark.x11
@pytest.mark.skipif(not shutil.which("Xvfb"), reason="Xvfb not installed (apt-get install xvfb)")
def test_display_server_is_watched_and_its_loss_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    # -displayfd: a free display number, written once the server accepts connections (a fixed number
    # could meet a stale socket another job's killed server left in /tmp/.X11-unix)
    from xvfb import xvfb as own_xvfb

    with own_xvfb(320, 240) as server:
        _watched_and_lost(monkeypatch, server.display, server.proc)


def _watched_and_lost(monkeypatch: pytest.MonkeyPatch, display: str, xvfb: subprocess.Popen) -> None:
    try:
        monkeypatch.setenv("DISPLAY", display)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
        s = host.display_session()
        assert s["type"] == "x11" and s["display_server"] == "Xvfb"
        sampler = host.HostSampler(rescan_every=1000)
        rec = sampler.sample(0)
        mine = [d for d in rec["ds"] if d["p"] == xvfb.pid]
        assert mine and mine[0]["nm"] == "Xvfb" and mine[0]["ut"] == "x-server" and mine[0]["r"] > 0 and mine[0]["t"] >= 1 and mine[0]["fd"] >= 3
        xvfb.kill()
        xvfb.wait()
        rec = sampler.sample(1)                    # gone between ticks: reported, not a crash
        assert [xvfb.pid, "Xvfb", "x-server"] in rec["dsgone"]   # the server of our DISPLAY: under test
        assert all(d["p"] != xvfb.pid for d in rec["ds"])
    finally:
        if xvfb.poll() is None:
            xvfb.kill()
            xvfb.wait()


def test_cpu_pressure_total_reads_some_total_and_is_none_without_psi(tmp_path) -> None:
    from stress.hw.host import cpu_pressure_total

    f = tmp_path / "cpu"
    f.write_text("some avg10=6.82 avg60=1.42 avg300=1.32 total=11746139000\n"
                 "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert cpu_pressure_total(str(f)) == 11746139000
    f.write_text("garbage\n")
    assert cpu_pressure_total(str(f)) is None
    assert cpu_pressure_total(str(tmp_path / "missing")) is None
