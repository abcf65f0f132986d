"""External viewer probe: open an output with the viewer the scenario names, as a user would.

Starts ``viewer_command`` (``{path}`` replaced by the newest output, or a reference image before
there is one), waits for its window (``xdotool search`` by pid, then by the file's name), captures
that window until it shows something other than one flat colour, and closes the viewer. X11 only:
xdotool cannot see native Wayland windows.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from stress.probes.capture import CaptureError, capturer_for
from stress.probes.common import ProbeContext, first_line, frame_stats, keep_frame, result, should_keep
from stress.probes.decode import ensure_reference


def _image_for(ctx: ProbeContext) -> Path:
    for rec in sorted(ctx.images, key=lambda r: r.get("index", 0), reverse=True):
        if rec.get("outcome", "ok") == "ok" and rec.get("path") and (ctx.run_dir / rec["path"]).is_file():
            return ctx.run_dir / rec["path"]
    return ctx.run_dir / ensure_reference(ctx.run_dir)[0]["path"]


def _xdotool(*args: str, timeout: float = 2.0) -> str:
    try:
        proc = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def find_window(pid: int, name: str) -> str | None:
    """A visible window of the viewer: by _NET_WM_PID first, then by a title containing the name."""
    for args in (("search", "--onlyvisible", "--pid", str(pid)),
                 ("search", "--onlyvisible", "--name", re.escape(name))):
        ids = _xdotool(*args).split()
        if ids:
            return ids[-1]
    return None


def window_region(wid: str) -> dict | None:
    geo = dict(line.split("=", 1) for line in _xdotool("getwindowgeometry", "--shell", wid).splitlines()
               if "=" in line)
    try:
        return {"left": int(geo["X"]), "top": int(geo["Y"]), "width": int(geo["WIDTH"]), "height": int(geo["HEIGHT"])}
    except (KeyError, ValueError):
        return None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def probe(ctx: ProbeContext) -> dict:
    cfg = ctx.config
    if ctx.session != "x11":
        return result("unsupported", reason="the viewer probe needs X11 (xdotool cannot see Wayland windows)")
    if not shutil.which("xdotool"):
        return result("unsupported", reason="xdotool is not installed (needed to find the viewer's window)")
    template = list(cfg.viewer_command or [])
    if not template or not shutil.which(template[0]):
        return result("unsupported", reason=f"viewer {template[0] if template else '(none)'!r} is not on PATH")
    path = _image_for(ctx)
    argv = [part.replace("{path}", str(path)) for part in template]
    cap, refused = capturer_for(ctx)
    if refused:
        return refused
    log = ctx.probes_dir / f".{ctx.tag}-viewer.log"
    ctx.probes_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"command": argv[0], "image": str(path.relative_to(ctx.run_dir))}
    # Same process group as this probe: if the supervisor kills the probe, the viewer goes too.
    with open(log, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=os.environ.copy())
    try:
        deadline = t0 + max(0.1, min(cfg.display_wait, ctx.remaining()))
        wid = region = None
        while time.perf_counter() < deadline:
            wid = find_window(proc.pid, path.name)
            region = window_region(wid) if wid else None
            if region and region["width"] > 0 and region["height"] > 0:
                break
            if proc.poll() is not None:
                msg = first_line(log.read_text(errors="replace")) or "no output"
                return result("fail", None, f"viewer exited with status {proc.returncode} before showing "
                              f"a window: {msg}", **metrics)
            time.sleep(0.05)
        else:
            return result("fail", None, f"no viewer window appeared within {cfg.display_wait:g} s", **metrics)
        metrics["window_s"] = round(time.perf_counter() - t0, 6)
        # Clip to the desktop: a window may hang off the edge of the screen.
        desk = cap.monitors()[0]
        left, top = max(region["left"], desk["left"]), max(region["top"], desk["top"])
        right = min(region["left"] + region["width"], desk["left"] + desk["width"])
        bottom = min(region["top"] + region["height"], desk["top"] + desk["height"])
        if right <= left or bottom <= top:
            return result("fail", None, f"the viewer window {region} is off screen", **metrics)
        box = {"left": left, "top": top, "width": right - left, "height": bottom - top}
        stats = {}
        while True:
            frame = cap.grab(box)
            stats = frame_stats(frame, cfg.flat_tolerance)
            if not stats["flat"] or time.perf_counter() >= deadline:
                break
            time.sleep(0.01)
        latency = time.perf_counter() - t0
        metrics.update(window=box, black=stats["black"], flat=stats["flat"], mean=stats["mean"])
        failed = stats["flat"]
        if should_keep(cfg, failed):
            kept = keep_frame(ctx, "viewer", frame)
            metrics["kept"] = [kept] if kept else []
        if failed:
            what = "all black" if stats["black"] else "one flat colour"
            return result("fail", None, f"the viewer window stayed {what} for {cfg.display_wait:g} s", **metrics)
        return result("ok", latency, None, **metrics)
    except CaptureError as exc:
        return result("fail", reason=str(exc), **metrics)
    finally:
        _stop(proc)
        cap.close()
        try:
            log.unlink()
        except OSError:
            pass
