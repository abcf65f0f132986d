"""The display selftest owns: an Xvfb it starts on a free display number, and can stop, kill and
restart. selftest never touches the user's session: every fault goes into a process started here.

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
