"""Windows selftest puts on its own display, each in its own process (like a real other client).

Each runs as ``python -m stress.selftest.xwin NAME ARGS`` (:func:`start_client`):

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

OVERLAY, FLOOD, BUSY_WINDOW = "overlay", "flood", "busy-window"   # python -m stress.selftest.xwin NAME ARGS...


def _xlib():
    """libX11 and libXcomposite through ctypes, with the signatures the clients below call."""
    import ctypes

    x11 = ctypes.CDLL("libX11.so.6")
    vp, ul, ui, i = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_uint, ctypes.c_int
    sigs = {"XOpenDisplay": (vp, [ctypes.c_char_p]), "XDefaultRootWindow": (ul, [vp]), "XDefaultScreen": (i, [vp]),
            "XDisplayWidth": (i, [vp, i]), "XDisplayHeight": (i, [vp, i]), "XDefaultDepth": (i, [vp, i]),
            "XGetImage": (vp, [vp, ul, i, i, ui, ui, ul, i]), "XCreatePixmap": (ul, [vp, ul, ui, ui, ui]),
            "XCreateGC": (vp, [vp, ul, ul, vp]), "XPutImage": (i, [vp, ul, vp, vp, i, i, i, i, ui, ui]),
            "XSetWindowBackground": (i, [vp, ul, ul]), "XSetWindowBackgroundPixmap": (i, [vp, ul, ul]),
            "XClearWindow": (i, [vp, ul]), "XSync": (i, [vp, i]), "XCopyArea": (i, [vp, ul, ul, vp, i, i, ui, ui, i, i]),
            "XFillRectangle": (i, [vp, ul, vp, i, i, ui, ui])}
    for name, (res, args) in sigs.items():
        f = getattr(x11, name)
        f.restype, f.argtypes = res, args
    return x11


def _open(x11):
    d = x11.XOpenDisplay(None)
    if not d:
        raise SystemExit("cannot open display")
    return d


def overlay(mode: str) -> int:
    """Paint the Composite overlay window over the whole screen: black (``black``), or with the screen
    as it is now (``frozen``, never updated); hold it until stdin closes."""
    import ctypes

    x11 = _xlib()
    xc = ctypes.CDLL("libXcomposite.so.1")
    xc.XCompositeGetOverlayWindow.restype = ctypes.c_ulong
    xc.XCompositeGetOverlayWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    d = _open(x11)
    root, scr = x11.XDefaultRootWindow(d), x11.XDefaultScreen(d)
    w, h = x11.XDisplayWidth(d, scr), x11.XDisplayHeight(d, scr)
    snap = None
    if mode == "frozen":   # the screen as it is now, before the overlay hides it
        snap = x11.XGetImage(d, root, 0, 0, w, h, 0xFFFFFFFF, 2)   # AllPlanes, ZPixmap
        if not snap:
            raise SystemExit("cannot read the screen")
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
    return 0


def flood(side: int, batch: int) -> int:
    """The earlier slow display path (benchmarks only): keep the X server busy with server-side copies
    of a ``side`` x ``side`` pixmap (``batch`` per round trip), the way an expensive composition path
    would. The server is single-threaded: every other client's request waits its turn behind them.
    Armed before the phase, it floods from the "go" line on: no start-up delay in the phase."""
    x11 = _xlib()
    d = _open(x11)
    root = x11.XDefaultRootWindow(d)
    depth = x11.XDefaultDepth(d, x11.XDefaultScreen(d))
    a, b = x11.XCreatePixmap(d, root, side, side, depth), x11.XCreatePixmap(d, root, side, side, depth)
    gc = x11.XCreateGC(d, a, 0, None)
    x11.XFillRectangle(d, a, gc, 0, 0, side, side)
    x11.XSync(d, 0)
    print("ready", flush=True)
    sys.stdin.readline()
    while True:
        for _ in range(batch):
            x11.XCopyArea(d, a, b, gc, 0, 0, side, side, 0, 0)
        x11.XSync(d, 0)


def busy_window() -> int:
    """A small window in the top-left corner that redraws every 40 ms and is unmapped and mapped again
    every 2 s (the clean control's browser-like load)."""
    import tkinter

    root = tkinter.Tk()
    root.geometry("160x100+0+0")
    root.overrideredirect(False)
    c = tkinter.Canvas(root, width=160, height=100, highlightthickness=0)
    c.pack()
    n = [0]

    def draw() -> None:
        n[0] += 1
        c.delete("all")
        for k in range(12):
            x = (n[0] * 7 + k * 13) % 160
            c.create_rectangle(x, k * 8, x + 20, k * 8 + 8, fill="#%02x%02x%02x" % ((n[0] * 9) % 256, k * 20, 128))
        root.after(40, draw)

    def remap() -> None:
        root.withdraw()
        root.update_idletasks()
        root.deiconify()
        root.after(2000, remap)

    root.after(40, draw)
    root.after(2000, remap)
    print("ready", flush=True)
    root.mainloop()
    return 0


def main(argv: list[str]) -> int:
    name, args = (argv[0], argv[1:]) if argv else ("", [])
    if name == OVERLAY and len(args) == 1:
        return overlay(args[0])
    if name == FLOOD and len(args) == 2:
        return flood(int(args[0]), int(args[1]))
    if name == BUSY_WINDOW and not args:
        return busy_window()
    print(f"usage: python -m stress.selftest.xwin {OVERLAY} black|frozen | {FLOOD} SIDE BATCH | {BUSY_WINDOW}",
          file=sys.stderr)
    return 2


def overlay_available() -> str | None:
    """Why the overlay window cannot run here, or None."""
    for lib, package in (("X11", "libx11-6"), ("Xcomposite", "libxcomposite1")):
        if not ctypes.util.find_library(lib):
            return f"lib{lib} is not installed (Debian package {package})"
    return None


def start_client(name: str, args: list[str], env: dict[str, str], timeout: float = 15.0,
                 module: str = "stress.selftest.xwin") -> subprocess.Popen:
    """Start one of the clients above (or of ``module``: stress.selftest.wlwin's, for a Wayland
    display) in its own process and wait for its ``ready`` line (bounded)."""
    import select

    from stress.proc import child_env

    proc = subprocess.Popen([sys.executable, "-m", module, name, *args], env=child_env(base=env),
                            stdin=subprocess.PIPE,
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
