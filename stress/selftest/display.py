"""The display selftest owns, and can stop, kill and restart: an Xvfb on a free display number
(``--display xvfb``), or a headless sway, a real Wayland compositor (``--display sway``). selftest
never touches the user's session: every fault goes into a process started here.

``Xvfb -displayfd`` picks a free number and writes it once it accepts connections (no guessing, no
sleeping). ``-retro`` paints the classic root weave, so a screenshot of the empty desktop is neither
black nor one flat colour (a black root would already fail the screenshot probe at baseline).
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

from stress.errors import ExitCode, StressError

START_TIMEOUT = 20.0
KINDS = ("xvfb", "sway")


def _argv(display: str | None, fd: int | None, size: str) -> list[str]:
    xvfb = shutil.which("Xvfb")
    if not xvfb:
        raise StressError("selftest needs Xvfb to own a display (apt-get install -y xvfb)", ExitCode.ENVIRONMENT)
    where = [display] if display else ["-displayfd", str(fd)]
    return [xvfb, *where, "-screen", "0", f"{size}x24", "-nolisten", "tcp", "-noreset", "-retro",
            "+extension", "Composite"]


@dataclass
class OwnDisplay:
    """An X server this process started. ``pids`` lists every server pid it ever ran (restarts)."""

    display: str
    proc: subprocess.Popen
    size: str = "640x480"
    pids: list[int] = field(default_factory=list)
    clients = "stress.selftest.xwin"                       # its overlay and busy-window clients
    probe_kinds = ("screenshot", "decode", "display")      # the probes of selftest's scenario on it

    @property
    def pid(self) -> int:
        return self.proc.pid

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base, DISPLAY=self.display)
        for key in ("WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "SWAYSOCK"):
            env.pop(key, None)
        return env

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)   # a stopped server must be able to die
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        """The end of the trial: the server (whichever pid it is now) is gone."""
        self.kill()

    def restart(self) -> None:
        """Kill the server (if still running) and start a new one on the same display number."""
        self.kill()
        self.proc = _spawn(_argv(self.display, None, self.size))
        self.pids.append(self.proc.pid)
        _wait_ready(self.display, self.proc)


def _spawn(argv: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_ready(display: str, proc: subprocess.Popen, timeout: float = START_TIMEOUT) -> None:
    """Until the server's socket accepts a connection (restart on a known number)."""
    import socket

    path = f"/tmp/.X11-unix/X{display.lstrip(':')}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Xvfb {display} exited with status {proc.returncode} on restart")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise RuntimeError(f"Xvfb {display} did not accept connections within {timeout:g} s of its restart")


def start_xvfb(size: str = "640x480", timeout: float = START_TIMEOUT) -> OwnDisplay:
    rfd, wfd = os.pipe()
    try:
        proc = _spawn(_argv(None, wfd, size), pass_fds=(wfd,))
    finally:
        os.close(wfd)
    try:
        number = b""
        deadline = time.monotonic() + timeout
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                raise StressError(f"Xvfb did not start within {timeout:g} s", ExitCode.ENVIRONMENT)
            chunk = os.read(rfd, 16)
            if not chunk:
                raise StressError(f"Xvfb exited with status {proc.wait()} at start", ExitCode.ENVIRONMENT)
            number += chunk
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(rfd)
    return OwnDisplay(display=f":{int(number)}", proc=proc, size=size, pids=[proc.pid])


# ---- a real compositor: sway on wlroots' headless backend, pixman renderer ----

SWAY_CONFIG = """\
# written by gpu-stress selftest for its own headless sway
output HEADLESS-1 resolution {w}x{h} position 0 0 bg {weave} tile
default_border none
default_floating_border none
xwayland disable
for_window [app_id="{busy}"] floating enable, move position {bx} {by}
"""
SWAY_NEEDS = (("sway", "sway"), ("swaybg", "swaybg"), ("grim", "grim"))
NOBODY = 65534


def _weave(path: str) -> None:
    """A 4x4 black-and-white stipple to tile the background with (Xvfb -retro's root weave): an empty
    desktop is neither black nor one flat colour."""
    from PIL import Image

    img = Image.new("RGB", (4, 4))
    img.putdata([(255, 255, 255) if (x + y) % 2 else (0, 0, 0) for y in range(4) for x in range(4)])
    img.save(path)


@dataclass
class OwnSway:
    """A sway this process started in a private ``XDG_RUNTIME_DIR``, without Xwayland: the probes reach
    it only over Wayland (grim for the screenshot, a native window for the display round trip). As
    root it runs as ``nobody`` (sway refuses root); root's clients still reach its socket."""

    runtime_dir: str
    proc: subprocess.Popen
    socket: str = ""
    size: str = "640x480"
    pids: list[int] = field(default_factory=list)
    clients = "stress.selftest.wlwin"
    probe_kinds = ("screenshot", "decode", "display-wayland")

    @property
    def display(self) -> str:
        return self.socket

    @property
    def pid(self) -> int:
        return self.proc.pid

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        for key in ("DISPLAY", "SWAYSOCK", "DBUS_SESSION_BUS_ADDRESS"):
            env.pop(key, None)
        env.update(XDG_RUNTIME_DIR=self.runtime_dir, WAYLAND_DISPLAY=self.socket, XDG_SESSION_TYPE="wayland")
        return env

    alive = OwnDisplay.alive
    signal = OwnDisplay.signal
    kill = OwnDisplay.kill      # the compositor only (a crash): its swaybg loses its connection and exits

    def close(self) -> None:
        """The end of the trial: sway and what it started (swaybg), its runtime directory."""
        self.kill()
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def restart(self) -> None:
        """Kill sway (if still running) and start a new one on the same Wayland socket."""
        self.kill()
        self.proc = _spawn_sway(self.runtime_dir)
        self.pids.append(self.proc.pid)
        name = _wait_wayland(self.runtime_dir, self.proc, want=self.socket)
        if name != self.socket:
            raise RuntimeError(f"sway restarted on {name}, not {self.socket}")


def _spawn_sway(rt: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SWAYSOCK", "DBUS_SESSION_BUS_ADDRESS")}
    env.update(XDG_RUNTIME_DIR=rt, HOME=rt, WLR_BACKENDS="headless", WLR_RENDERER="pixman",
               WLR_LIBINPUT_NO_DEVICES="1", WLR_HEADLESS_OUTPUTS="1")
    kw: dict = {}
    if os.geteuid() == 0:
        kw = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    log = open(os.path.join(rt, "sway.log"), "ab")
    try:
        return subprocess.Popen([shutil.which("sway") or "sway", "--config", os.path.join(rt, "config")], env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, **kw)
    finally:
        log.close()


def _wait_wayland(rt: str, proc: subprocess.Popen, want: str | None = None, timeout: float = START_TIMEOUT) -> str:
    """The name of the Wayland socket ``proc`` listens on in ``rt``, once it accepts connections from it."""
    from stress.hw.display_id import peer_pid

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = ""
            try:
                with open(os.path.join(rt, "sway.log"), "rb") as fh:
                    tail = fh.read()[-300:].decode(errors="replace").strip().splitlines()[-1:]
            except (OSError, IndexError):
                pass
            raise RuntimeError(f"sway exited with status {proc.returncode}" + (f": {tail[0]}" if tail else ""))
        names = [want] if want else sorted(n for n in os.listdir(rt) if n.startswith("wayland-")
                                           and not n.endswith(".lock"))
        for name in names:
            if peer_pid(os.path.join(rt, name)) == proc.pid:
                return name
        time.sleep(0.05)
    raise RuntimeError(f"sway opened no Wayland socket in {rt} within {timeout:g} s")


def start_sway(size: str = "640x480", timeout: float = START_TIMEOUT) -> OwnSway:
    import tempfile

    for exe, package in SWAY_NEEDS:
        if not shutil.which(exe):
            raise StressError(f"selftest --display sway needs {exe} (apt-get install -y {package})", ExitCode.ENVIRONMENT)
    w, h = (int(v) for v in size.split("x"))
    rt = tempfile.mkdtemp(prefix="stress-selftest-sway-")
    owner = NOBODY if os.geteuid() == 0 else None
    weave = os.path.join(rt, "weave.png")
    _weave(weave)
    from stress.selftest.wlwin import BUSY_APP_ID, BUSY_SIZE

    with open(os.path.join(rt, "config"), "w", encoding="utf-8") as fh:
        fh.write(SWAY_CONFIG.format(w=w, h=h, weave=weave, busy=BUSY_APP_ID, bx=w - BUSY_SIZE[0], by=h - BUSY_SIZE[1]))
    if owner is not None:
        for name in ("", "config", "weave.png"):
            os.chown(os.path.join(rt, name), owner, owner)
    os.chmod(rt, 0o700)
    proc = _spawn_sway(rt)
    try:
        name = _wait_wayland(rt, proc, timeout=timeout)
    except RuntimeError as exc:
        proc.kill()
        proc.wait()
        shutil.rmtree(rt, ignore_errors=True)
        raise StressError(f"selftest could not start sway: {exc}", ExitCode.ENVIRONMENT) from None
    d = OwnSway(runtime_dir=rt, proc=proc, socket=name, size=size, pids=[proc.pid])
    try:
        _wait_background(d, timeout)
    except RuntimeError as exc:
        d.close()
        raise StressError(f"selftest's sway did not draw its background: {exc}", ExitCode.ENVIRONMENT) from None
    return d


def _wait_background(d: OwnSway, timeout: float) -> None:
    """Until swaybg (which sway starts after its socket is up) has drawn the weave: the first baseline
    screenshot must not meet sway's plain grey instead (a flat frame fails the screenshot probe)."""
    from stress.probes.capture import _ppm_to_array

    deadline = time.monotonic() + timeout
    why = "no capture"
    while time.monotonic() < deadline:
        r = subprocess.run(["grim", "-t", "ppm", "-"], env=d.env(), capture_output=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, check=False)
        if r.returncode == 0:
            frame = _ppm_to_array(r.stdout)
            if int(frame.max()) - int(frame.min()) > 128:
                return
            why = "the desktop stayed one flat colour"
        else:
            why = r.stderr.decode(errors="replace").strip()[:200] or f"grim exit status {r.returncode}"
        time.sleep(0.05)
    raise RuntimeError(f"{why} for {timeout:g} s")


def start_display(kind: str = "xvfb", size: str = "640x480") -> OwnDisplay | OwnSway:
    """The display of one trial: ``xvfb`` or ``sway`` (:data:`KINDS`)."""
    if kind == "sway":
        return start_sway(size)
    if kind == "xvfb":
        return start_xvfb(size)
    raise ValueError(f"unknown display kind {kind!r}; choose from {', '.join(KINDS)}")
