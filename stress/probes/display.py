"""Display round trip: show known pixels in a window, capture the screen, compare.

A borderless, override-redirect Tk window (no window manager decorates or moves it) shows a test
pattern, or the newest output, with a noise band that differs for every probe so a stale frame from
an earlier probe can never match. The probe captures the window's region until the pixels match or
``display_wait`` runs out: the time from mapping to matching is the latency; a region that never
matches is a mismatch (share of differing pixels, largest difference). Then the window is closed
and the region must stop showing it: a frozen compositor keeps showing a closed window.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stress.probes.capture import CONNECT_DELAYS, CaptureError, capturer_for, connect_retry
from stress.probes.common import (ProbeContext, compare, first_line, keep_frame, ppm_bytes, result,
                                  should_keep, make_pattern)

WINDOW_TITLE = "stress-probe"
NOISE_BAND = 16  # rows of per-probe noise added under an output image


def _refused(exc: BaseException) -> bool:
    """Tk's words when the X server refused (or has no) connection: worth another attempt."""
    return "couldn't connect to display" in str(exc)


def open_tk(tkinter, delays: tuple[float, ...] = CONNECT_DELAYS):
    """``(root, attempts)``: the probe's Tk root window, the connection retried as the mss capturer's
    is (a busy server refuses some opens; a dead one every one). A refused last attempt raises its
    ``TclError`` with ``attempts`` set on it."""
    try:
        return connect_retry(lambda: tkinter.Tk(className=WINDOW_TITLE), _refused, "tk", delays)
    except tkinter.TclError as exc:
        exc.attempts = len(delays) + 1 if _refused(exc) else 1  # type: ignore[attr-defined]
        raise


def _pick_monitor(monitors: list[dict]) -> dict:
    singles = monitors[1:] or monitors[:1]
    return next((m for m in singles if m.get("is_primary")), singles[0])


def _latest_output(ctx: ProbeContext) -> Path | None:
    for rec in sorted(ctx.images, key=lambda r: r.get("index", 0), reverse=True):
        if rec.get("outcome", "ok") == "ok" and rec.get("path") and (ctx.run_dir / rec["path"]).is_file():
            return ctx.run_dir / rec["path"]
    return None


def expected_image(ctx: ProbeContext, width: int, height: int) -> tuple[np.ndarray, str]:
    """The pixels to show and where they came from (``pattern`` or the output's path)."""
    seed = ctx.seed()
    if ctx.config.display_image == "latest-output":
        path = _latest_output(ctx)
        if path is not None:
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB")
                    img.thumbnail((width, max(1, height - NOISE_BAND)))
                    arr = np.asarray(img).copy()
                rng = np.random.default_rng(seed)
                band = rng.integers(0, 256, size=(NOISE_BAND, arr.shape[1], 3), dtype=np.uint8)
                return np.concatenate([arr, band]), str(path.relative_to(ctx.run_dir))
            except Exception:  # an unreadable output is the decode probe's finding; show the pattern
                pass
    return make_pattern(width, height, seed), "pattern"


def probe(ctx: ProbeContext) -> dict:
    cfg = ctx.config
    if ctx.session == "wayland" and not os.environ.get("DISPLAY"):
        return result("unsupported", reason="the display round trip needs X11 or XWayland (DISPLAY is not set)")
    try:
        import tkinter
    except ImportError:
        return result("unsupported", reason="tkinter is not available in this Python (install python3-tk)")
    cap, refused = capturer_for(ctx)
    if refused:
        return refused
    root = None
    try:
        try:
            root, attempts = open_tk(tkinter)
        except tkinter.TclError as exc:
            return result("fail", reason=f"cannot open a window: {first_line(exc)}", connect_failed=True,
                          connect_attempts=getattr(exc, "attempts", 1))
        root.withdraw()
        mon = _pick_monitor(cap.monitors())
        side = max(16, min(cfg.display_size, mon["width"], mon["height"]))
        expected, source = expected_image(ctx, side, side)
        h, w = expected.shape[:2]
        x = mon["left"] + (mon["width"] - w) // 2
        y = mon["top"] + (mon["height"] - h) // 2
        region = {"left": x, "top": y, "width": w, "height": h}
        before = cap.grab(region)

        root.title(WINDOW_TITLE)
        root.overrideredirect(True)
        root.geometry(f"{w}x{h}+{x}+{y}")
        photo = tkinter.PhotoImage(master=root, data=ppm_bytes(expected), format="PPM")
        label = tkinter.Label(root, image=photo, borderwidth=0, highlightthickness=0, padx=0, pady=0)
        label.place(x=0, y=0, width=w, height=h)
        root.update_idletasks()

        t_show = time.perf_counter()
        root.deiconify()
        root.lift()
        deadline = t_show + max(0.05, min(cfg.display_wait, ctx.remaining()))
        polls, visible_s, cmp, got = 0, None, {}, before
        while True:
            root.update()
            got = cap.grab(region)
            polls += 1
            cmp = compare(expected, got, cfg.pixel_tolerance)
            if cmp["fraction"] <= cfg.mismatch_threshold:
                visible_s = time.perf_counter() - t_show
                break
            if time.perf_counter() >= deadline:
                break
            time.sleep(0.002)

        metrics: dict = {"backend": cap.name, "connect_attempts": attempts, "source": source,
                         "size": f"{w}x{h}", "at": [x, y], "polls": polls, "mismatch_fraction": round(cmp["fraction"], 6),
                         "max_diff": cmp["max_diff"], "visible_s": None if visible_s is None else round(visible_s, 6)}
        if visible_s is None:
            # Never matched: either nothing changed on screen, or something else is there.
            unchanged = compare(before, got, cfg.pixel_tolerance)["fraction"] <= 0.01
            metrics.update(mismatch=True, never_visible=unchanged)
            if unchanged:
                reason = (f"window never appeared on screen within {cfg.display_wait:g} s "
                          f"(the region still shows what was there before)")
            else:
                reason = (f"round trip mismatch: {cmp['fraction']:.1%} of pixels differ "
                          f"(largest difference {cmp['max_diff']}) after {cfg.display_wait:g} s")
            if should_keep(cfg, True):
                metrics["kept"] = _keep_triptych(ctx, expected, got, cfg.pixel_tolerance)
            root.destroy()
            root = None
            return result("fail", None, reason, **metrics)

        # Close it and make sure the screen stops showing it.
        t_hide = time.perf_counter()
        root.destroy()
        root = None
        hide_deadline = t_hide + max(0.05, min(cfg.display_wait, 2.0, ctx.remaining()))
        hidden_s = None
        while True:
            got_after = cap.grab(region)
            if compare(expected, got_after, cfg.pixel_tolerance)["fraction"] > cfg.mismatch_threshold:
                hidden_s = time.perf_counter() - t_hide
                break
            if time.perf_counter() >= hide_deadline:
                break
            time.sleep(0.002)
        metrics.update(mismatch=False, hidden_s=None if hidden_s is None else round(hidden_s, 6))
        if hidden_s is None:
            metrics["stale"] = True
            if should_keep(cfg, True):
                metrics["kept"] = _keep_triptych(ctx, expected, got_after, cfg.pixel_tolerance)
            return result("fail", visible_s, "the window stayed on screen after it was closed "
                          f"(stale frame for {hide_deadline - t_hide:.1f} s)", **metrics)
        if should_keep(cfg, False):
            metrics["kept"] = _keep_triptych(ctx, expected, got, cfg.pixel_tolerance)
        return result("ok", visible_s, None, **metrics)
    except CaptureError as exc:
        return result("fail", reason=str(exc))
    except tkinter.TclError as exc:
        return result("fail", reason=f"window system error: {first_line(exc)}")
    finally:
        if root is not None:
            try:
                root.destroy()
            except Exception:
                pass
        cap.close()


def _keep_triptych(ctx: ProbeContext, expected: np.ndarray, got: np.ndarray, tol: int) -> list[str]:
    """Shown | captured | differing pixels (white), side by side, for the report."""
    if got.shape != expected.shape:
        return [p for p in (keep_frame(ctx, "shown", expected), keep_frame(ctx, "captured", got)) if p]
    diff = (np.abs(expected.astype(np.int16) - got.astype(np.int16)).max(axis=2) > tol)
    mask = np.repeat((diff * 255).astype(np.uint8)[..., None], 3, axis=2)
    gap = np.full((expected.shape[0], 4, 3), 128, dtype=np.uint8)
    path = keep_frame(ctx, "shown-captured-diff", np.concatenate([expected, gap, got, gap, mask], axis=1))
    return [path] if path else []
