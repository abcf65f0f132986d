"""A real X server for tests: ``Xvfb`` on a free display number, plus helpers to break it.

``with xvfb() as x:`` starts Xvfb with ``-displayfd`` (the server picks a free display number and
says which once it accepts connections: no guessing, no sleeping), yields an :class:`XServer`, and
kills it afterwards. Tests skip with a clear reason only when Xvfb itself is missing.

``cover(x, ...)`` paints a rectangle on the Composite overlay window, which the X server keeps above
every other window, override-redirect ones included: a deterministic stand-in for a compositor that
paints the wrong thing over a window.
"""
from __future__ import annotations

import contextlib
import ctypes.util
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Iterator

import pytest

XVFB = shutil.which("Xvfb")
SKIP_REASON = "Xvfb is not installed (apt-get install -y xvfb)"


@dataclass
class XServer:
    display: str        # ":N"
    proc: subprocess.Popen
    width: int
    height: int

    def env(self) -> dict[str, str]:
        """An environment whose X display is this server (and no Wayland session)."""
        env = dict(os.environ, DISPLAY=self.display)
        env.pop("WAYLAND_DISPLAY", None)
        env.pop("XDG_SESSION_TYPE", None)
        return env

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped server cannot die of SIGKILL later otherwise
            self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Freeze the server (SIGSTOP): clients connect, then hang waiting for replies."""
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.contextmanager
def throttled(server: XServer, stopped_s: float = 0.01, running_s: float = 0.0005) -> Iterator[None]:
    """A slow display path: the server stopped (SIGSTOP) ``stopped_s`` out of every
    ``stopped_s + running_s`` seconds, so every client request waits; resumed for good on exit."""
    import threading

    done = threading.Event()

    def duty() -> None:
        while not done.is_set():
            server.stop()
            done.wait(stopped_s)
            server.cont()
            done.wait(running_s)

    th = threading.Thread(target=duty, daemon=True)
    th.start()
    try:
        yield
    finally:
        done.set()
        th.join(5)
        if server.alive:
            server.cont()


def require_xvfb() -> None:
    if XVFB is None:
        pytest.skip(SKIP_REASON)


@contextlib.contextmanager
def xvfb(width: int = 640, height: int = 480, depth: int = 24, timeout: float = 15.0,
         args: tuple[str, ...] = ()) -> Iterator[XServer]:
    """Start Xvfb on a free display (``args``: more of its options); skip the test if Xvfb is not installed."""
    require_xvfb()
    rfd, wfd = os.pipe()
    proc = subprocess.Popen(
        [XVFB, "-displayfd", str(wfd), "-screen", "0", f"{width}x{height}x{depth}", "-nolisten", "tcp",
         "-noreset", "+extension", "Composite", *args],
        pass_fds=(wfd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(wfd)
    try:
        number = b""
        deadline = time.monotonic() + timeout
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                raise RuntimeError(f"Xvfb did not start within {timeout:g} s")
            chunk = os.read(rfd, 16)
            if not chunk:
                err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
                raise RuntimeError(f"Xvfb exited with status {proc.wait()}: {err}")
            number += chunk
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(rfd)
    server = XServer(display=f":{int(number)}", proc=proc, width=width, height=height)
    try:
        yield server
    finally:
        server.kill()
        if proc.stderr:
            proc.stderr.close()


# --------------------------------------------------------------------------------------------
# Windows that tests put on the screen, each in its own process (like a real other client).

_COVER = r"""
import ctypes, sys, time
x11 = ctypes.CDLL("libX11.so.6"); xc = ctypes.CDLL("libXcomposite.so.1"); xext = ctypes.CDLL("libXext.so.6")
x11.XOpenDisplay.restype = ctypes.c_void_p; x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
x11.XDefaultRootWindow.restype = ctypes.c_ulong; x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
xc.XCompositeGetOverlayWindow.restype = ctypes.c_ulong
xc.XCompositeGetOverlayWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
class Rect(ctypes.Structure):
    _fields_ = [("x", ctypes.c_short), ("y", ctypes.c_short), ("w", ctypes.c_ushort), ("h", ctypes.c_ushort)]
xext.XShapeCombineRectangles.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                         ctypes.POINTER(Rect), ctypes.c_int, ctypes.c_int, ctypes.c_int]
x11.XSetWindowBackground.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
x11.XClearWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
x11.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
d = x11.XOpenDisplay(None)
if not d:
    sys.exit("cannot open display")
cow = xc.XCompositeGetOverlayWindow(d, x11.XDefaultRootWindow(d))
x, y, w, h, pixel = (int(a) for a in sys.argv[1:6])
rect = Rect(x, y, w, h)
xext.XShapeCombineRectangles(d, cow, 0, 0, 0, ctypes.byref(rect), 1, 0, 0)  # ShapeBounding, ShapeSet
xext.XShapeCombineRectangles(d, cow, 2, 0, 0, None, 0, 0, 0)               # ShapeInput: empty
x11.XSetWindowBackground(d, cow, pixel)
x11.XClearWindow(d, cow)
x11.XSync(d, 0)
print("ready", flush=True)
sys.stdin.read()  # hold the overlay until the test closes our stdin
"""


def cover_available() -> str | None:
    """Why :func:`cover` cannot run here, or None."""
    for lib, package in (("X11", "libx11-6"), ("Xcomposite", "libxcomposite1"), ("Xext", "libxext6")):
        if not ctypes.util.find_library(lib):
            return f"lib{lib} is not installed (Debian package {package})"
    return None


@contextlib.contextmanager
def cover(server: XServer, x: int, y: int, w: int, h: int, rgb: tuple[int, int, int] = (255, 0, 0)) -> Iterator[None]:
    """Paint an opaque rectangle above every window (Composite overlay) while the block runs."""
    why = cover_available()
    if why:
        pytest.skip(why)
    pixel = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]  # TrueColor 24-bit visual
    proc = subprocess.Popen([sys.executable, "-c", _COVER, str(x), str(y), str(w), str(h), str(pixel)],
                            env=server.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"cover window did not start: {proc.stderr.read() if proc.stderr else ''}")
        yield
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# A minimal external image viewer (Tk), so the viewer probe can be tested without installing one.
TK_VIEWER = r"""
import sys, tkinter
path = sys.argv[1]
root = tkinter.Tk()
root.title("tkview " + path.rsplit("/", 1)[-1])
photo = tkinter.PhotoImage(file=path)
tkinter.Label(root, image=photo, borderwidth=0).pack()
root.mainloop()
"""
