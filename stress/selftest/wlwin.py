"""Wayland clients selftest puts on its own compositor (``--display sway``), each in its own process,
the Wayland counterparts of :mod:`stress.selftest.xwin` (same names, same ``ready`` line, held until
stdin closes): ``python -m stress.selftest.wlwin NAME ARGS``.

- :data:`OVERLAY`: the screen turning black or freezing. A ``zwlr_layer_shell_v1`` surface on the
  *overlay* layer, anchored to every edge of the output: a wlroots compositor draws that layer above
  every window, fullscreen ones included, as X draws its Composite overlay window. ``black`` fills it
  with black; ``frozen`` with the screen as it was at that moment (captured through ``grim`` first),
  never updated, so a window mapped later never becomes visible.
- :data:`BUSY_WINDOW`: the browser-like part of the clean control's background load: a 160x100
  ``xdg_toplevel`` (app_id ``stress-busy``; selftest's sway config floats it into the bottom-right
  corner, away from the probe's window) that redraws every 40 ms, and is closed and mapped again
  every 2 s.

Plain wire protocol through :mod:`stress.probes.wl_client` (no libwayland, no toolkit).
"""
from __future__ import annotations

import select
import struct
import subprocess
import sys
import time

import numpy as np

from stress.probes.wl_client import Connection, Globals, WaylandError, Window, _string, paint, shm_buffer, socket_path

OVERLAY, BUSY_WINDOW = "overlay", "busy-window"     # the names xwin uses for the same clients
BUSY_APP_ID = "stress-busy"
BUSY_SIZE = (160, 100)
LAYER_OVERLAY = 3
ANCHOR_ALL = 1 | 2 | 4 | 8        # top, bottom, left, right
TIMEOUT_S = 5.0


def _held() -> bool:
    """True while our stdin is open (selftest closes it to end the client)."""
    return not select.select([sys.stdin], [], [], 0)[0]


def _snapshot(timeout: float) -> np.ndarray:
    """The whole desktop as it is now, through grim (wlr-screencopy)."""
    from stress.probes.capture import _ppm_to_array

    proc = subprocess.run(["grim", "-t", "ppm", "-"], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"cannot read the screen: grim: {proc.stderr.decode(errors='replace').strip()[:200]}")
    return _ppm_to_array(proc.stdout)


def overlay(mode: str) -> int:
    """Cover the whole output with an overlay-layer surface, black or the screen as it is now."""
    path = socket_path()
    if not path:
        raise SystemExit("WAYLAND_DISPLAY is not set")
    snap = _snapshot(TIMEOUT_S) if mode == "frozen" else None
    deadline = time.monotonic() + TIMEOUT_S
    c = Connection(path, TIMEOUT_S)
    g = Globals(c, deadline)
    g.require("wl_compositor", "wl_shm", "zwlr_layer_shell_v1")
    compositor, shm, shell = g.bind("wl_compositor", 4), g.bind("wl_shm", 1), g.bind("zwlr_layer_shell_v1", 1)
    surface = c.new_id("wl_surface")
    c.request(compositor, 0, struct.pack("<I", surface))
    layer = c.new_id("zwlr_layer_surface_v1")
    # get_layer_surface(id, surface, output: null = the compositor's choice, layer, namespace)
    c.request(shell, 0, struct.pack("<IIII", layer, surface, 0, LAYER_OVERLAY) + _string("stress-selftest"))
    c.request(layer, 0, struct.pack("<II", 0, 0))              # set_size: 0 x 0 = the anchored extent
    c.request(layer, 1, struct.pack("<I", ANCHOR_ALL))         # set_anchor
    c.request(layer, 2, struct.pack("<i", -1))                 # set_exclusive_zone: over every panel too
    c.request(surface, 6)                                      # commit: ask for the configure
    size = None
    for obj, op, payload in c.events(deadline):
        if obj == layer and op == 0:                           # configure(serial, width, height)
            serial, w, h = struct.unpack_from("<III", payload)
            c.request(layer, 6, struct.pack("<I", serial))     # ack_configure
            size = (w, h)
            break
        if obj == layer and op == 1:
            raise SystemExit("the compositor closed the overlay surface")
    if size is None:
        raise SystemExit("the compositor did not configure the overlay surface in time")
    w, h = size
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    if snap is not None:
        sh, sw = min(h, snap.shape[0]), min(w, snap.shape[1])
        rgb[:sh, :sw] = snap[:sh, :sw]
    buffer, _ = shm_buffer(c, shm, rgb)
    c.request(surface, 1, struct.pack("<Iii", buffer, 0, 0))   # attach
    c.request(surface, 2, struct.pack("<iiii", 0, 0, w, h))    # damage
    c.request(surface, 6)                                      # commit
    c.roundtrip(time.monotonic() + TIMEOUT_S)
    print("ready", flush=True)
    try:
        while _held():
            for _ in c.events(time.monotonic() + 0.1):        # nothing to answer: layer surfaces get no pings
                pass
    except WaylandError:
        return 1                                               # the compositor went away: nothing left to hold
    c.close()
    return 0


def _frame(n: int) -> np.ndarray:
    w, h = BUSY_SIZE
    rgb = np.full((h, w, 3), 40, dtype=np.uint8)
    for k in range(12):
        x = (n * 7 + k * 13) % w
        rgb[k * 8:k * 8 + 8, x:x + 20] = ((n * 9) % 256, k * 20, 128)
    return rgb


def busy_window() -> int:
    """Redraw every 40 ms; close and map again every 2 s (a browser-like client)."""
    path = socket_path()
    if not path:
        raise SystemExit("WAYLAND_DISPLAY is not set")
    n = 0
    first = True
    try:
        while _held():
            win = Window(path, _frame(n), title=BUSY_APP_ID, timeout=TIMEOUT_S)
            if first:
                print("ready", flush=True)
                first = False
            c = win.conn
            buffer, mem = shm_buffer(c, win.shm, _frame(n), keep=True)
            assert mem is not None
            until = time.monotonic() + 2.0
            while time.monotonic() < until and _held():
                n += 1
                paint(mem, _frame(n))
                c.request(win.surface, 1, struct.pack("<Iii", buffer, 0, 0))
                c.request(win.surface, 2, struct.pack("<iiii", 0, 0, *BUSY_SIZE))
                c.request(win.surface, 6)
                win.dispatch(0.04)
            mem.close()
            win.close()
    except WaylandError as exc:
        if first:
            raise SystemExit(f"cannot map the window: {exc}") from None
        return 1
    return 0


def main(argv: list[str]) -> int:
    name, args = (argv[0], argv[1:]) if argv else ("", [])
    if name == OVERLAY and len(args) == 1 and args[0] in ("black", "frozen"):
        return overlay(args[0])
    if name == BUSY_WINDOW and not args:
        return busy_window()
    print(f"usage: python -m stress.selftest.wlwin {OVERLAY} black|frozen | {BUSY_WINDOW}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
