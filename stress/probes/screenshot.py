"""Screenshot probe: capture the whole desktop and each monitor, time it, check the frames.

A capture that raises, or a frame that is all black or one flat colour, is a failure: a dead or
unpainted output must never pass as a successful screenshot.
"""
from __future__ import annotations

import time

from stress.probes.capture import CaptureError, capturer_for
from stress.probes.common import ProbeContext, frame_stats, keep_frame, result, should_keep


def probe(ctx: ProbeContext) -> dict:
    cfg = ctx.config
    t0 = time.perf_counter()
    cap, refused = capturer_for(ctx)
    if refused:
        return refused
    connect_s = time.perf_counter() - t0
    captures: list[dict] = []
    problems: list[str] = []
    kept: list[str] = []
    try:
        try:
            monitors = cap.monitors()
        except CaptureError as exc:
            return result("fail", reason=str(exc), backend=cap.name, connect_s=round(connect_s, 6))
        for i, mon in enumerate(monitors):
            where = "desktop" if i == 0 else f"monitor {i}"
            size = f"{mon['width']}x{mon['height']}"
            t = time.perf_counter()
            try:
                frame = cap.grab(mon)
            except CaptureError as exc:
                captures.append({"monitor": i, "size": size, "error": str(exc)})
                problems.append(f"{where} ({size}): {exc}")
                continue
            latency = time.perf_counter() - t
            st = frame_stats(frame, cfg.flat_tolerance)
            rec = {"monitor": i, "size": size, "latency_s": round(latency, 6),
                   "black": st["black"], "flat": st["flat"], "mean": st["mean"]}
            if mon.get("output"):
                rec["output"] = mon["output"]
            captures.append(rec)
            if st["black"]:
                problems.append(f"{where} ({size}): frame is all black")
            elif st["flat"]:
                problems.append(f"{where} ({size}): frame is one flat colour {tuple(st['max'])}")
            if should_keep(cfg, st["flat"]):
                path = keep_frame(ctx, f"monitor{i}", frame)
                if path:
                    kept.append(path)
    finally:
        cap.close()
    ok_caps = [c for c in captures if "latency_s" in c]
    # The whole-desktop capture is the comparable number; per-monitor latencies stay in `captures`.
    latency = next((c["latency_s"] for c in ok_caps if c["monitor"] == 0), None)
    metrics = {
        "backend": cap.name, "connect_s": round(connect_s, 6), "monitors": max(0, len(captures) - 1),
        "captures": captures, "black_frames": sum(c.get("black", False) for c in captures),
        "flat_frames": sum(c.get("flat", False) and not c.get("black", False) for c in captures),
        "capture_errors": sum("error" in c for c in captures), "kept": kept,
    }
    if problems:
        return result("fail", latency, "; ".join(problems), **metrics)
    return result("ok", latency, None, **metrics)
