"""Real compositors for tests, each from Debian's packages, headless and software-rendered, on private
sockets: its own ``XDG_RUNTIME_DIR`` (a fresh directory under /tmp), its own ``WAYLAND_DISPLAY``, a
private D-Bus session bus where it needs one, bounded start-up waits, and torn down afterwards.
A missing package makes the test skip with the package to install.

- :func:`xvfb_composited` - Xvfb with a compositing manager (``picom``, else ``xcompmgr``): windows
  are redirected and painted by the compositor, not straight onto the root.
- :func:`sway` - wlroots (``WLR_BACKENDS=headless``, ``WLR_RENDERER=pixman``) with Xwayland; grim works.
- :func:`weston` - ``--backend=headless-backend.so --use-pixman --debug`` (``--debug`` exposes the
  screenshooter protocol that ``weston-screenshooter`` uses).
- :func:`mutter` - ``--headless --virtual-monitor WxH --wayland`` on a private bus, with Xwayland.
- :func:`kwin` - ``kwin_wayland --virtual`` on a private bus (``KWIN_SCREENSHOT_NO_PERMISSION_CHECKS=1``
  so that its ScreenShot2 D-Bus interface answers a test client without a .desktop file).

sway refuses to run as root; when the tests run as root it runs as ``nobody``.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from xvfb import XServer, xvfb

START_TIMEOUT = 30.0   # seconds a compositor gets to open its socket on this shared 2-core machine


@dataclass
class Compositor:
    """A running compositor the test started, and the environment its clients need."""

    name: str                      # "sway", "weston", "mutter", "kwin_wayland", "picom", ...
    proc: subprocess.Popen
    env_vars: dict[str, str]       # WAYLAND_DISPLAY / DISPLAY / XDG_RUNTIME_DIR / DBUS_SESSION_BUS_ADDRESS
    runtime_dir: Path | None = None
    width: int = 640
    height: int = 480
    log: Path | None = None
    helpers: list[subprocess.Popen] = field(default_factory=list)   # bus daemon, X server...
    xserver: XServer | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("WAYLAND_DISPLAY", "DISPLAY", "XDG_SESSION_TYPE", "DBUS_SESSION_BUS_ADDRESS", "SWAYSOCK"):
            env.pop(key, None)
        env.update(self.env_vars)
        return env

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Freeze the compositor (SIGSTOP): clients connect, then wait for answers that never come."""
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:] if self.log else ""
        except OSError:
            return ""


def require(*programs: str, package: str) -> None:
    missing = [p for p in programs if not shutil.which(p) and not os.path.exists(p)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install -y --no-install-recommends {package})")


def _runtime_dir(owner: int | None = None) -> Path:
    d = Path(tempfile.mkdtemp(prefix="stress-xdg-", dir="/tmp"))
    os.chmod(d, 0o700)
    if owner is not None:
        os.chown(d, owner, owner)
    return d


def _wait_socket(path: Path, proc: subprocess.Popen, what: str, log: Path, timeout: float = START_TIMEOUT) -> None:
    """Until ``path`` accepts a connection; raises with the log's tail when the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}: {log.read_text(errors='replace')[-800:]}")
        if path.exists():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(path))
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not open {path} within {timeout:g} s: {log.read_text(errors='replace')[-800:]}")


def _wait_file(path: Path, proc: subprocess.Popen, what: str, log: Path, timeout: float = START_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text().strip()
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}: {log.read_text(errors='replace')[-800:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not write {path} within {timeout:g} s: {log.read_text(errors='replace')[-800:]}")


@contextlib.contextmanager
def dbus_session(runtime_dir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A private D-Bus session bus (``dbus-daemon --session --print-address``), ended afterwards."""
    require("dbus-daemon", package="dbus-daemon")
    proc = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1",
                             f"--address=unix:path={runtime_dir}/bus"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        import select
        if not select.select([proc.stdout], [], [], 10)[0]:
            raise RuntimeError("dbus-daemon did not print its address within 10 s")
        address = proc.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"dbus-daemon exited with status {proc.wait()}")
        yield address, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start(argv: list[str], env: dict[str, str], log: Path, **kw) -> subprocess.Popen:
    fh = open(log, "wb")
    try:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)
    finally:
        fh.close()


def _teardown(comp: Compositor) -> None:
    comp.kill()
    # The compositor's own children (Xwayland, weston-keyboard, desktop-shell) are in its session.
    try:
        os.killpg(comp.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for h in comp.helpers:
        if h.poll() is None:
            h.kill()
        try:
            h.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    if comp.runtime_dir is not None:
        shutil.rmtree(comp.runtime_dir, ignore_errors=True)


@contextlib.contextmanager
def xvfb_composited(width: int = 640, height: int = 480, manager: str | None = None) -> Iterator[Compositor]:
    """Xvfb plus a compositing manager (picom's xrender backend, or xcompmgr)."""
    name = manager or ("picom" if shutil.which("picom") else "xcompmgr")
    require(name, package=name)
    with xvfb(width, height) as x:
        tmp = Path(tempfile.mkdtemp(prefix="stress-cm-"))
        log = tmp / f"{name}.log"
        if name == "picom":
            argv = ["picom", "--backend", "xrender", "--no-fading-openclose", "--config", "/dev/null"]
        else:
            argv = ["xcompmgr", "-n"]   # -n: plain compositing, no shadows, so pixels stay exact
        proc = _start(argv, x.env(), log)
        comp = Compositor(name, proc, {"DISPLAY": x.display}, runtime_dir=tmp, width=width, height=height,
                          log=log, xserver=x)
        try:
            _wait_cm(x, proc, name, log)
            yield comp
        finally:
            _teardown(comp)


def _wait_cm(x: XServer, proc: subprocess.Popen, name: str, log: Path) -> None:
    """Until the compositing manager owns the _NET_WM_CM_S0 selection (it composites from then on)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}: {log.read_text(errors='replace')[-800:]}")
        if _cm_selection_owned(x.display):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not take the compositing selection within {START_TIMEOUT:g} s")


def _cm_selection_owned(display: str) -> bool:
    import ctypes
    x11 = ctypes.CDLL("libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XGetSelectionOwner.restype = ctypes.c_ulong
    x11.XGetSelectionOwner.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    d = x11.XOpenDisplay(display.encode())
    if not d:
        return False
    try:
        return x11.XGetSelectionOwner(d, x11.XInternAtom(d, b"_NET_WM_CM_S0", 0)) != 0
    finally:
        x11.XCloseDisplay(d)


SWAY_CONFIG = """\
output HEADLESS-1 resolution {w}x{h} position 0 0 bg #2a5d8f solid_color
default_border none
default_floating_border none
xwayland {xwayland}
exec sh -c '{allow}echo "$DISPLAY" > {dir}/display'
"""


@contextlib.contextmanager
def sway(width: int = 640, height: int = 480, xwayland: bool = True) -> Iterator[Compositor]:
    """sway 1.7 on the headless wlroots backend with the pixman renderer (and Xwayland, started at once)."""
    require("sway", package="sway")
    if xwayland:
        require("Xwayland", package="xwayland")
    uid = 65534 if os.geteuid() == 0 else None   # sway refuses to run as root
    rt = _runtime_dir(uid)
    log = rt / "sway.log"
    cfg = rt / "config"
    # Xwayland lets in only sway's own user; the tests' user (root, when sway runs as nobody) is added.
    allow = ""
    if uid is not None:
        require("xhost", package="x11-xserver-utils")
        allow = f"xhost +si:localuser:{pwd.getpwuid(os.geteuid()).pw_name} >/dev/null 2>&1; "
    cfg.write_text(SWAY_CONFIG.format(w=width, h=height, dir=rt, allow=allow,
                                      xwayland="force" if xwayland else "disable"))
    if uid is not None:
        os.chown(cfg, uid, uid)
        os.chmod(rt, 0o755)    # root's probe clients connect anyway; sway (nobody) must reach its files
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SWAYSOCK",
                                                              "DBUS_SESSION_BUS_ADDRESS")}
    env.update(XDG_RUNTIME_DIR=str(rt), HOME=str(rt), WLR_BACKENDS="headless", WLR_RENDERER="pixman",
               WLR_LIBINPUT_NO_DEVICES="1", WLR_HEADLESS_OUTPUTS="1")
    kw = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
    if uid is not None:
        log.touch()
        os.chown(log, uid, uid)
    proc = _start(["sway", "--config", str(cfg)], env, log, **kw)
    comp = Compositor("sway", proc, {"XDG_RUNTIME_DIR": str(rt), "XDG_SESSION_TYPE": "wayland"},
                      runtime_dir=rt, width=width, height=height, log=log)
    try:
        sock = _first_wayland_socket(rt, proc, log)
        comp.env_vars["WAYLAND_DISPLAY"] = sock
        if xwayland:
            disp = _wait_file(rt / "display", proc, "sway", log)
            if disp:
                comp.env_vars["DISPLAY"] = disp
        yield comp
    finally:
        _teardown(comp)


def _first_wayland_socket(rt: Path, proc: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        socks = sorted(p.name for p in rt.glob("wayland-*") if not p.name.endswith(".lock"))
        if socks:
            _wait_socket(rt / socks[0], proc, proc.args[0], log)
            return socks[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args[0]} opened no Wayland socket: {log.read_text(errors='replace')[-800:]}")


@contextlib.contextmanager
def weston(width: int = 640, height: int = 480) -> Iterator[Compositor]:
    """weston 10 on its headless backend with the pixman renderer."""
    require("weston", package="weston")
    rt = _runtime_dir()
    log = rt / "weston.log"
    ini = rt / "weston.ini"
    ini.write_text("[core]\nidle-time=0\n[shell]\nanimation=none\nstartup-animation=none\n"
                   "background-color=0xff2a5d8f\npanel-position=none\nlocking=false\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(XDG_RUNTIME_DIR=str(rt), HOME=str(rt))
    proc = _start(["weston", "--backend=headless-backend.so", "--use-pixman", "--debug", f"--config={ini}",
                   f"--width={width}", f"--height={height}", "--socket=wayland-stress", "--idle-time=0"],
                  env, log)
    comp = Compositor("weston", proc, {"XDG_RUNTIME_DIR": str(rt), "WAYLAND_DISPLAY": "wayland-stress",
                                       "XDG_SESSION_TYPE": "wayland"}, runtime_dir=rt, width=width,
                      height=height, log=log)
    try:
        _wait_socket(rt / "wayland-stress", proc, "weston", log)
        yield comp
    finally:
        _teardown(comp)


@contextlib.contextmanager
def mutter(width: int = 640, height: int = 480) -> Iterator[Compositor]:
    """mutter 43 as a headless Wayland compositor with one virtual monitor, on a private bus."""
    require("mutter", package="mutter")
    rt = _runtime_dir()
    log = rt / "mutter.log"
    with dbus_session(rt) as (bus, bus_proc):
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        env.update(XDG_RUNTIME_DIR=str(rt), HOME=str(rt), DBUS_SESSION_BUS_ADDRESS=bus,
                   XDG_CONFIG_HOME=str(rt / "config"), GSETTINGS_BACKEND="memory")
        proc = _start(["mutter", "--headless", "--virtual-monitor", f"{width}x{height}", "--wayland",
                       "--wayland-display=wayland-stress"], env, log)
        comp = Compositor("mutter", proc, {"XDG_RUNTIME_DIR": str(rt), "WAYLAND_DISPLAY": "wayland-stress",
                                           "DBUS_SESSION_BUS_ADDRESS": bus, "XDG_SESSION_TYPE": "wayland"},
                          runtime_dir=rt, width=width, height=height, log=log)
        try:
            _wait_socket(rt / "wayland-stress", proc, "mutter", log)
            yield comp
        finally:
            _teardown(comp)


KWIN_COPY = Path(tempfile.gettempdir()) / "stress-kwin" / "kwin_wayland"   # same comm as the original


def _kwin_binary() -> str:
    """kwin_wayland carries file capabilities (cap_sys_nice) that a container refuses to exec with
    ("Operation not permitted"); a plain copy without them runs."""
    src = shutil.which("kwin_wayland")
    if src is None:
        pytest.skip("kwin_wayland not installed (apt-get install -y --no-install-recommends kwin-wayland)")
    try:
        if subprocess.run([src, "--version"], capture_output=True, timeout=20).returncode == 0:
            return src
    except PermissionError:
        pass
    if not KWIN_COPY.exists() or KWIN_COPY.stat().st_size != os.path.getsize(src):
        KWIN_COPY.parent.mkdir(exist_ok=True)
        tmp = KWIN_COPY.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, KWIN_COPY)
    return str(KWIN_COPY)


@contextlib.contextmanager
def kwin(width: int = 640, height: int = 480) -> Iterator[Compositor]:
    """KWin 5.27 (``kwin_wayland --virtual``) on a private bus, Qt's offscreen platform for its own UI.

    Its screenshot effect needs OpenGL compositing: Mesa's llvmpipe provides it without a GPU."""
    binary = _kwin_binary()
    rt = _runtime_dir()
    log = rt / "kwin.log"
    with dbus_session(rt) as (bus, bus_proc):
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        env.update(XDG_RUNTIME_DIR=str(rt), HOME=str(rt), DBUS_SESSION_BUS_ADDRESS=bus,
                   XDG_CONFIG_HOME=str(rt / "config"), QT_QPA_PLATFORM="offscreen",
                   KWIN_SCREENSHOT_NO_PERMISSION_CHECKS="1")
        proc = _start([binary, "--virtual", "--width", str(width), "--height", str(height), "--socket",
                       "wayland-stress", "--no-lockscreen", "--no-global-shortcuts", "--no-kactivities"], env, log)
        comp = Compositor("kwin_wayland", proc, {"XDG_RUNTIME_DIR": str(rt), "WAYLAND_DISPLAY": "wayland-stress",
                                                 "DBUS_SESSION_BUS_ADDRESS": bus, "XDG_SESSION_TYPE": "wayland"},
                          runtime_dir=rt, width=width, height=height, log=log)
        try:
            _wait_socket(rt / "wayland-stress", proc, "kwin_wayland", log)
            _wait_dbus_object(bus, "org.kde.KWin", "/org/kde/KWin/ScreenShot2", "CaptureArea", proc, log)
            yield comp
        finally:
            _teardown(comp)


def _wait_dbus_object(bus: str, name: str, path: str, member: str, proc: subprocess.Popen, log: Path,
                      timeout: float = START_TIMEOUT) -> None:
    """Until ``name`` on the bus exports ``path`` with ``member`` (KWin loads its plugins after it
    takes its name)."""
    deadline = time.monotonic() + timeout
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=bus)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with status {proc.returncode}: {log.read_text(errors='replace')[-800:]}")
        out = subprocess.run(["gdbus", "introspect", "--session", "--dest", name, "--object-path", path],
                             capture_output=True, text=True, env=env, timeout=10)
        if member in out.stdout:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not export {path} within {timeout:g} s")


WAYLAND_FIXTURES = {"sway": sway, "weston": weston, "mutter": mutter, "kwin": kwin}
