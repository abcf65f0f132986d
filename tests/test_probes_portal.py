"""The xdg-desktop-portal Screenshot backend: real portals on a private D-Bus session bus next to a real
sway, and each way a portal can fail, sorted (no interface, no answer, refused, success with no image).

On Debian bookworm, xdg-desktop-portal 1.16 exports ``org.freedesktop.portal.Screenshot`` only when an
``Access`` backend is present as well, and xdg-desktop-portal-wlr provides none: with -wlr alone the
interface is missing, which is what a plain sway user has (docs/probes.md).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

import compositors
from stress.probes.capture import CaptureError, PortalCapturer, Unsupported, portal_image

pytestmark = pytest.mark.compositor

XDP = "/usr/libexec/xdg-desktop-portal"
XDPW = "/usr/libexec/xdg-desktop-portal-wlr"


@contextlib.contextmanager
def portal_on_sway():
    """sway, a private bus, PipeWire (-wlr will not start without it), -wlr and the portal frontend."""
    for path, pkg in ((XDP, "xdg-desktop-portal"), (XDPW, "xdg-desktop-portal-wlr"), ("pipewire", "pipewire")):
        compositors.require(path, package=pkg)
    with compositors.sway(xwayland=False) as comp, compositors.dbus_session(comp.runtime_dir) as (bus, _):
        # Only -wlr's portal description, whatever else is installed here (-gtk would add Access).
        portals = comp.runtime_dir / "portals"
        portals.mkdir()
        shutil.copy("/usr/share/xdg-desktop-portal/portals/wlr.portal", portals)
        env = dict(comp.env(), DBUS_SESSION_BUS_ADDRESS=bus, XDG_CURRENT_DESKTOP="sway",
                   XDG_DESKTOP_PORTAL_DIR=str(portals))
        procs = []
        try:
            for argv in (["pipewire"], [XDPW], [XDP]):
                procs.append(subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
                time.sleep(0.3 if argv != [XDP] else 0)
            _wait_name(env, "org.freedesktop.portal.Desktop", procs[-1])
            yield comp, env, procs[-1]
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGCONT)   # a stopped one must be able to die
                    p.kill()
                p.wait(timeout=10)


def _wait_name(env: dict, name: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args[0]} exited with status {proc.returncode}"
        out = subprocess.run(["gdbus", "call", "--session", "--dest", "org.freedesktop.DBus", "--object-path",
                              "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.NameHasOwner", name],
                             capture_output=True, text=True, env=env, timeout=10)
        if "true" in out.stdout:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not appear on the bus within {timeout:g} s")


@pytest.fixture
def portal(monkeypatch):
    with portal_on_sway() as (comp, env, xdp):
        for key in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR"):
            monkeypatch.delenv(key, raising=False)
        for key in ("WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR"):
            monkeypatch.setenv(key, env[key])
        yield comp, xdp


def test_portal_without_a_screenshot_interface_is_unsupported(portal):
    with pytest.raises(Unsupported, match="no Screenshot interface"):
        PortalCapturer(5.0).monitors()


def test_stopped_portal_is_a_failure_within_the_timeout(portal):
    comp, xdp = portal
    xdp.send_signal(signal.SIGSTOP)   # the bus takes the call, the portal never answers
    try:
        t0 = time.monotonic()
        with pytest.raises(CaptureError, match="timed out|did not answer"):
            PortalCapturer(1.5).monitors()
        assert time.monotonic() - t0 < 5
    finally:
        xdp.send_signal(signal.SIGCONT)


def test_no_bus_at_all_is_unsupported(monkeypatch, tmp_path):
    if not shutil.which("gdbus"):
        pytest.skip("gdbus is not installed (libglib2.0-bin)")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    with pytest.raises(Unsupported, match="no reachable D-Bus session bus"):
        PortalCapturer(3.0).monitors()


def test_portal_answers_are_sorted(tmp_path):
    """The Response signal's outcomes, with real files where the portal points to one."""
    good = tmp_path / "shot.png"
    Image.fromarray(np.full((4, 6, 3), 77, dtype=np.uint8)).save(good)
    assert portal_image(0, good.as_uri()).shape == (4, 6, 3)
    assert not good.exists()          # the probe leaves nothing in the user's Pictures
    with pytest.raises(Unsupported, match="refused"):
        portal_image(1, None)
    with pytest.raises(CaptureError, match="backend failed"):
        portal_image(2, None)
    with pytest.raises(CaptureError, match="success but gave no image"):
        portal_image(0, None)
    with pytest.raises(CaptureError, match="unreadable"):
        portal_image(0, (tmp_path / "missing.png").as_uri())
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(CaptureError, match="unreadable"):
        portal_image(0, junk.as_uri())
    assert os.listdir(tmp_path) == []
