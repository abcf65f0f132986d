"""Windows selftest puts on its own display, each in its own process (like a real other client).

- :data:`OVERLAY`: the screen turning black or freezing. It paints the Composite overlay window, which
  the X server keeps above every other window (override-redirect ones included), over the whole
  screen: ``black`` paints it black; ``frozen`` paints it with the screen as it was at that moment and
  never updates it, so a window mapped later never becomes visible.
- :data:`FLOOD`: a client that keeps the X server busy with large server-side copies, so every other
  client's requests wait behind them: selftest's first slow display path, no longer injected (its
  effect depended on the flooding clients getting the CPU; stress.selftest.stopper replaced it);
  kept for ``benchmarks/bench_slow_path.py --flood``, which compares the two.
- :data:`BUSY_WINDOW`: the browser-like part of the clean-run control's background load: a small
  window in the top-left corner (away from the centred probe window) that redraws every 40 ms and is
  unmapped and mapped again every 2 s.

Xlib through ctypes (no extra package); Tk for the busy window (the display probe needs Tk anyway).
"""
from __future__ import annotations

import ctypes.util
import subprocess
import sys

OVERLAY = r"""
import ctypes, sys
x11 = ctypes.CDLL("libX11.so.6"); xc = ctypes.CDLL("libXcomposite.so.1")
vp, ul, ui, i = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_uint, ctypes.c_int
x11.XOpenDisplay.restype = vp; x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
x11.XDefaultRootWindow.restype = ul; x11.XDefaultRootWindow.argtypes = [vp]
x11.XDefaultScreen.argtypes = [vp]
for f in ("XDisplayWidth", "XDisplayHeight", "XDefaultDepth"):
    getattr(x11, f).argtypes = [vp, i]
xc.XCompositeGetOverlayWindow.restype = ul; xc.XCompositeGetOverlayWindow.argtypes = [vp, ul]
x11.XGetImage.restype = vp; x11.XGetImage.argtypes = [vp, ul, i, i, ui, ui, ul, i]
x11.XCreatePixmap.restype = ul; x11.XCreatePixmap.argtypes = [vp, ul, ui, ui, ui]
x11.XCreateGC.restype = vp; x11.XCreateGC.argtypes = [vp, ul, ul, vp]
x11.XPutImage.argtypes = [vp, ul, vp, vp, i, i, i, i, ui, ui]
x11.XSetWindowBackground.argtypes = [vp, ul, ul]
x11.XSetWindowBackgroundPixmap.argtypes = [vp, ul, ul]
x11.XClearWindow.argtypes = [vp, ul]
x11.XSync.argtypes = [vp, i]
d = x11.XOpenDisplay(None)
if not d:
    sys.exit("cannot open display")
root = x11.XDefaultRootWindow(d); scr = x11.XDefaultScreen(d)
w, h = x11.XDisplayWidth(d, scr), x11.XDisplayHeight(d, scr)
mode = sys.argv[1]
snap = None
if mode == "frozen":   # the screen as it is now, before the overlay hides it
    snap = x11.XGetImage(d, root, 0, 0, w, h, 0xFFFFFFFF, 2)   # AllPlanes, ZPixmap
    if not snap:
        sys.exit("cannot read the screen")
cow = xc.XCompositeGetOverlayWindow(d, root)
if snap:
    pm = x11.XCreatePixmap(d, root, w, h, x11.XDefaultDepth(d, scr))
    gc = x11.XCreateGC(d, pm, 0, None)
    x11.XPutImage(d, pm, gc, snap, 0, 0, 0, 0, w, h)
    x11.XSetWindowBackgroundPixmap(d, cow, pm)
else:
    x11.XSetWindowBackground(d, cow, 0)
x11.XClearWindow(d, cow)
x11.XSync(d, 0)
print("ready", flush=True)
sys.stdin.read()   # hold the overlay until our stdin is closed
"""

# The earlier slow display path (benchmarks only): a client that keeps the X server busy with server-side copies of a SIDE x SIDE
# pixmap (BATCH per round trip), the way an expensive composition path would. The server is
# single-threaded: every other client's request waits its turn behind them.
FLOOD = r"""
import ctypes, sys
x11 = ctypes.CDLL("libX11.so.6")
vp, ul, ui, i = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_uint, ctypes.c_int
x11.XOpenDisplay.restype = vp; x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
x11.XDefaultRootWindow.restype = ul; x11.XDefaultRootWindow.argtypes = [vp]
x11.XDefaultScreen.argtypes = [vp]; x11.XDefaultDepth.argtypes = [vp, i]
x11.XCreatePixmap.restype = ul; x11.XCreatePixmap.argtypes = [vp, ul, ui, ui, ui]
x11.XCreateGC.restype = vp; x11.XCreateGC.argtypes = [vp, ul, ul, vp]
x11.XCopyArea.argtypes = [vp, ul, ul, vp, i, i, ui, ui, i, i]
x11.XFillRectangle.argtypes = [vp, ul, vp, i, i, ui, ui]
x11.XSync.argtypes = [vp, i]
d = x11.XOpenDisplay(None)
if not d:
    sys.exit("cannot open display")
side, batch = int(sys.argv[1]), int(sys.argv[2])
root = x11.XDefaultRootWindow(d); depth = x11.XDefaultDepth(d, x11.XDefaultScreen(d))
a = x11.XCreatePixmap(d, root, side, side, depth); b = x11.XCreatePixmap(d, root, side, side, depth)
gc = x11.XCreateGC(d, a, 0, None)
x11.XFillRectangle(d, a, gc, 0, 0, side, side)
x11.XSync(d, 0)
print("ready", flush=True)
sys.stdin.readline()   # armed before the phase, it floods from the "go" line on: no start-up delay in the phase
while True:
    for _ in range(batch):
        x11.XCopyArea(d, a, b, gc, 0, 0, side, side, 0, 0)
    x11.XSync(d, 0)
"""

BUSY_WINDOW = r"""
import sys, tkinter
root = tkinter.Tk()
root.geometry("160x100+0+0")
root.overrideredirect(False)
c = tkinter.Canvas(root, width=160, height=100, highlightthickness=0)
c.pack()
n = [0]
def draw():
    n[0] += 1
    c.delete("all")
    for k in range(12):
        x = (n[0] * 7 + k * 13) % 160
        c.create_rectangle(x, k * 8, x + 20, k * 8 + 8, fill="#%02x%02x%02x" % ((n[0] * 9) % 256, k * 20, 128))
    root.after(40, draw)
def remap():
    root.withdraw(); root.update_idletasks(); root.deiconify()
    root.after(2000, remap)
root.after(40, draw); root.after(2000, remap)
print("ready", flush=True)
root.mainloop()
"""


def overlay_available() -> str | None:
    """Why the overlay window cannot run here, or None."""
    for lib, package in (("X11", "libx11-6"), ("Xcomposite", "libxcomposite1")):
        if not ctypes.util.find_library(lib):
            return f"lib{lib} is not installed (Debian package {package})"
    return None


def start_client(source: str, args: list[str], env: dict[str, str], timeout: float = 15.0) -> subprocess.Popen:
    """Start one of the scripts above and wait for its ``ready`` line (bounded)."""
    import select

    proc = subprocess.Popen([sys.executable, "-c", source, *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    ready = select.select([proc.stdout], [], [], timeout)[0]
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        stop_client(proc)
        err = proc.stderr.read()[-300:] if proc.stderr else ""
        raise RuntimeError(f"window client did not start: {err.strip() or 'no ready line'}")
    return proc


def stop_client(proc: subprocess.Popen) -> None:
    try:
        if proc.stdin:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
