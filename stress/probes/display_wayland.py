"""Native Wayland display round trip (probe kind ``display-wayland``): known pixels in an
``xdg_toplevel`` from a ``wl_shm`` buffer (:mod:`stress.probes.wl_client`), captured back through the
session's screenshot backend (grim, weston's or KWin's screenshooter, the portal) and compared.

Unlike the ``display`` kind (Tk on X11 or Xwayland), this window goes through the compositor's own
Wayland path. A Wayland client cannot choose where its window goes, so the probe finds the window in
the captured desktop by the seeded noise at the bottom of what it shows (different for every probe,
so a stale frame of an earlier probe can never match), then compares the whole window there.

The latency is a whole new window's (``latency_from: "connect"``): from the connection to the
compositor (its pixels are painted before) through the registry, the configure the compositor sends,
the commit that maps it and its sync, to the start of the first capture that shows it matching (the
capture's own duration, ``capture_s``, is the screenshot probe's concern). Its parts are kept:
``setup_s`` (connection to configured), ``mapped_s`` (the mapping commit's sync), ``commit_visible_s``
(that commit to the matching capture: the latency of gpu-stress before 2026-12, a single round trip
of 0.4-1 ms on sway, which is slowed or not by a compositor stopped for most of every few
milliseconds depending on where it falls between two stops: 3/10 and 2/10, then 9/10 and 8/10 of
slow-light and slow-medium detected; docs/validation.md, fifth and sixth rounds). Where the compositor sends
``wp_presentation`` feedback, the time from that commit to the presented frame is recorded too
(``presented_s``; weston 10 does, sway 1.7 headless and KWin 5.27 here do not). Then the window is
closed and its place must stop showing it (a frozen compositor keeps showing it).
"""
from __future__ import annotations

import threading
import time

import numpy as np

from stress.probes.capture import CaptureError, capturer_for
from stress.probes.common import ProbeContext, compare, result, should_keep
from stress.probes.display import WINDOW_TITLE, _keep_triptych, expected_image
from stress.probes.wl_client import WaylandError, Window, socket_path

MAX_CANDIDATES = 256
# What the latency is timed from (kept in every result; history keys the metric by it, so that the
# medians of the earlier definition, from the mapping commit, are never compared with these).
LATENCY_FROM = "connect"
# How long a probe waits, once its window matched, for the compositor's wp_presentation feedback. The
# frame that showed the window was already composed, so the feedback is due within a frame or two
# (headless weston 10 here: 23-42 ms after the mapping commit, 10 windows); sway 1.7 offers
# wp_presentation but its headless output never answered (10 of 10 waited the full second), and
# the earlier 1 s wait was most of every display-wayland probe's wall time there (1.1 s a probe).
PRESENTATION_WAIT_S = 0.25


def grab_answering(cap, region, win: Window) -> np.ndarray:
    """``cap.grab(region)`` while the window keeps answering its compositor, as a real client's event
    loop does. A tiling compositor (sway) sizes a newly mapped window with a configure and shows it
    only once the client has acknowledged that (its transaction waits up to 200 ms); a client that
    sat blocked in a 15-50 ms grim capture made its own window late, and the first capture missed it
    whenever the configure came after ``wl_display.sync``'s answer: one baseline probe in 10 on sway
    needed a second capture (about 38 ms instead of 1 ms), which hid real slowdowns (validation.md,
    fifth round)."""
    halt = threading.Event()
    failed: list[WaylandError] = []

    def answer() -> None:
        try:
            while not halt.is_set():
                win.dispatch(0.002)
        except WaylandError as exc:
            failed.append(exc)

    pump = threading.Thread(target=answer, name="wayland-answer", daemon=True)
    pump.start()
    try:
        return cap.grab(region)
    finally:
        halt.set()
        pump.join(timeout=5.0)
        if failed:
            raise failed[0]


def locate(expected: np.ndarray, frame: np.ndarray, tolerance: int) -> tuple[int, int] | None:
    """Top-left ``(x, y)`` where ``expected`` appears in ``frame``, or None.

    Anchored on a 4x4 block of the noise rows at the bottom of ``expected``: candidates are the frame's
    pixels within ``tolerance`` of the block's first pixel; each is checked against the whole block.
    """
    h, w = expected.shape[:2]
    fh, fw = frame.shape[:2]
    if h > fh or w > fw:
        return None
    ay, ax = h - 6, 3
    block = expected[ay:ay + 4, ax:ax + 4].astype(np.int16)
    near = (np.abs(frame.astype(np.int16) - block[0, 0]).max(axis=2) <= tolerance)
    ys, xs = np.nonzero(near)
    for y, x in list(zip(ys.tolist(), xs.tolist()))[:MAX_CANDIDATES * 16]:
        oy, ox = y - ay, x - ax
        if oy < 0 or ox < 0 or oy + h > fh or ox + w > fw:
            continue
        if (np.abs(frame[y:y + 4, x:x + 4].astype(np.int16) - block).max() <= tolerance):
            return ox, oy
    return None


def probe(ctx: ProbeContext) -> dict:
    cfg = ctx.config
    path = socket_path()
    if ctx.session != "wayland" or not path:
        return result("unsupported", reason="the native Wayland round trip needs a Wayland session "
                                            "(WAYLAND_DISPLAY and XDG_RUNTIME_DIR)")
    cap, refused = capturer_for(ctx)
    if refused:
        return refused
    win = None
    try:
        mon = cap.monitors()[0]
        side = max(16, min(cfg.display_size, mon["width"], mon["height"]))
        expected, source = expected_image(ctx, side, side)
        h, w = expected.shape[:2]
        before = cap.grab(mon)
        stale_at = locate(expected, before, cfg.pixel_tolerance)
        if stale_at is not None:   # cannot happen unless the screen shows a frame of this very probe
            return result("fail", reason="the probe's pattern was on screen before its window was mapped",
                          stale=True, at=list(stale_at), backend=cap.name)
        try:
            win = Window(path, expected, title=WINDOW_TITLE, timeout=max(0.5, min(cfg.display_wait, ctx.remaining())),
                         show=False)
            t0 = win.started
            setup_s = time.perf_counter() - t0
            t_show = time.perf_counter()
            win.show()
        except WaylandError as exc:
            return result("fail", reason=f"cannot map a Wayland window: {exc}", connect_failed=True,
                          backend=cap.name)
        mapped_s = time.perf_counter() - t_show
        deadline = t_show + max(0.05, min(cfg.display_wait, ctx.remaining()))
        polls, visible_s, at, cmp, got = 0, None, None, {"fraction": 1.0, "max_diff": 255}, before
        while True:
            t_grab = time.perf_counter()
            got = grab_answering(cap, mon, win)
            polls += 1
            at = locate(expected, got, cfg.pixel_tolerance)
            if at is not None:
                region = got[at[1]:at[1] + h, at[0]:at[0] + w]
                cmp = compare(expected, region, cfg.pixel_tolerance)
                if cmp["fraction"] <= cfg.mismatch_threshold:
                    # When the capture that showed it *started*: the pixels were on screen by then. The
                    # capture's own duration (tens of ms for a whole desktop) is the screenshot probe's.
                    visible_s = t_grab - t0
                    commit_visible_s = t_grab - t_show
                    capture_s = time.perf_counter() - t_grab
                    break
            if time.perf_counter() >= deadline:
                break
            win.dispatch(0.002)

        presented_s = None
        if visible_s is not None and win.presentation is not None:
            stop = time.monotonic() + max(0.0, min(PRESENTATION_WAIT_S, ctx.remaining()))
            while win.presented is None and not win.discarded and time.monotonic() < stop:
                win.dispatch(0.01)
            presented_s = win.presentation_s()
        metrics: dict = {"backend": cap.name, "source": source, "size": f"{w}x{h}", "latency_from": LATENCY_FROM,
                         "presented_s": None if presented_s is None else round(presented_s, 6),
                         "at": None if at is None else list(at), "polls": polls, "setup_s": round(setup_s, 6),
                         "mapped_s": round(mapped_s, 6),
                         "mismatch_fraction": round(cmp["fraction"], 6), "max_diff": cmp["max_diff"],
                         "visible_s": None if visible_s is None else round(visible_s, 6)}
        if visible_s is None:
            unchanged = compare(before, got, cfg.pixel_tolerance)["fraction"] <= 0.01
            metrics.update(mismatch=True, never_visible=at is None and unchanged)
            if at is None and unchanged:
                reason = f"window never appeared on screen within {cfg.display_wait:g} s (the screen did not change)"
            elif at is None:
                reason = f"window not found on screen within {cfg.display_wait:g} s (the screen changed, but not to it)"
            else:
                reason = (f"round trip mismatch: {cmp['fraction']:.1%} of pixels differ "
                          f"(largest difference {cmp['max_diff']}) after {cfg.display_wait:g} s")
            if should_keep(cfg, True):
                shown = got if at is None else got[at[1]:at[1] + h, at[0]:at[0] + w]
                metrics["kept"] = _keep_triptych(ctx, expected, shown, cfg.pixel_tolerance)
            return result("fail", None, reason, **metrics)

        t_hide = time.perf_counter()
        win.close()
        win = None
        region = {"left": mon["left"] + at[0], "top": mon["top"] + at[1], "width": w, "height": h}
        hide_deadline = t_hide + max(0.05, min(cfg.display_wait, 2.0, ctx.remaining()))
        hidden_s = None
        while True:
            after = cap.grab(region)
            if compare(expected, after, cfg.pixel_tolerance)["fraction"] > cfg.mismatch_threshold:
                hidden_s = time.perf_counter() - t_hide
                break
            if time.perf_counter() >= hide_deadline:
                break
            time.sleep(0.002)
        metrics.update(mismatch=False, hidden_s=None if hidden_s is None else round(hidden_s, 6),
                       capture_s=round(capture_s, 6), commit_visible_s=round(commit_visible_s, 6))
        if hidden_s is None:
            metrics["stale"] = True
            return result("fail", visible_s, "the window stayed on screen after it was closed "
                          f"(stale frame for {hide_deadline - t_hide:.1f} s)", **metrics)
        # One definition for every probe of a run: connection to the start of the matching capture. The compositor's
        # own presentation time, where it gives one, is kept beside it (not every frame gets one in time).
        return result("ok", visible_s, None, **metrics)
    except CaptureError as exc:
        return result("fail", reason=str(exc), backend=cap.name)
    except WaylandError as exc:
        return result("fail", reason=f"Wayland connection failed: {exc}", backend=cap.name)
    finally:
        if win is not None:
            win.close()
        cap.close()
