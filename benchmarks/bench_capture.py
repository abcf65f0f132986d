"""Cost of the screenshot probe's X11 capture against a raw ``mss`` grab, side by side on one Xvfb.

Starts its own Xvfb (``-displayfd``, a free display), shows a test pattern in a Tk window, and
times, interleaved in a shuffled order in every repetition:

- ``raw``: ``mss.MSS().grab(region)``, nothing else (the floor);
- ``probe``: :meth:`stress.probes.capture.MssCapturer.grab`, what the screenshot probe times as
  ``latency_s`` and the display round trip calls at every poll;
- ``old``: the conversion the probe made before (``np.frombuffer(shot.bgra)...[..., 2::-1].copy()``).

for the whole desktop and for the round trip's polling region (``display_size``, centred), and the
checks each frame gets afterwards (``frame_stats`` for the desktop, ``compare`` for a poll). Reports
medians and the median of the per-repetition ratios to ``raw``. The figures in docs/benchmarks.md
come from this script.

    .venv/bin/python benchmarks/bench_capture.py [--size 1920x1080] [--reps 300] [--region 256] [--json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from stress.probes.common import compare, frame_stats, make_pattern  # noqa: E402


def load_xvfb():
    spec = importlib.util.spec_from_file_location("xvfb", ROOT / "tests" / "xvfb.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["xvfb"] = mod
    spec.loader.exec_module(mod)
    return mod


def old_grab(sct, region: dict) -> np.ndarray:
    """The probe's capture before the view (as in git history: stress/probes/capture.py)."""
    shot = sct.grab(region)
    bgra = np.frombuffer(shot.bgra, dtype=np.uint8).reshape(shot.height, shot.width, 4)
    return bgra[..., 2::-1].copy()


def old_frame_stats(rgb: np.ndarray, tol: int) -> dict:
    """frame_stats before the per-channel reduction, for the comparison."""
    px = rgb[..., :3]
    lo = px.min(axis=(0, 1)).astype(int)
    hi = px.max(axis=(0, 1)).astype(int)
    flat = bool((hi - lo).max() <= tol)
    return {"flat": flat, "black": bool(flat and hi.max() <= tol), "mean": px.mean(axis=(0, 1)).tolist()}


def old_compare(expected: np.ndarray, got: np.ndarray, tol: int) -> dict:
    """compare before the per-channel uint8 difference, for the comparison."""
    diff = np.abs(expected.astype(np.int16) - got.astype(np.int16)).max(axis=2)
    return {"fraction": float((diff > tol).mean()), "max_diff": int(diff.max())}


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(reps: int, desktop: dict, region: dict, seed: int) -> dict:
    import mss

    from stress.probes.capture import MssCapturer

    raw_sct, old_sct = mss.MSS(), mss.MSS()
    cap = MssCapturer()
    rng = random.Random(seed)
    expected = None
    variants = {
        "desktop_raw": lambda: raw_sct.grab(desktop),
        "desktop_probe": lambda: cap.grab(desktop),
        "desktop_old": lambda: old_grab(old_sct, desktop),
        "poll_raw": lambda: raw_sct.grab(region),
        "poll_probe": lambda: cap.grab(region),
        "poll_old": lambda: old_grab(old_sct, region),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    checks: dict[str, list[float]] = {"stats_probe": [], "stats_old": [], "compare_probe": [], "compare_old": []}
    for _ in range(5):  # warm-up: shm segments, first allocations
        for fn in variants.values():
            fn()
    for _ in range(reps):
        order = list(variants)
        rng.shuffle(order)
        frames = {}
        for name in order:
            dt, frames[name] = timed(variants[name])
            times[name].append(dt)
        if expected is None:
            expected = np.ascontiguousarray(frames["poll_probe"])
        # The checks each frame gets after its capture, on what each variant returned.
        checks["stats_probe"].append(timed(lambda: frame_stats(frames["desktop_probe"], 8))[0])
        checks["stats_old"].append(timed(lambda: old_frame_stats(frames["desktop_old"], 8))[0])
        checks["compare_probe"].append(timed(lambda: compare(expected, frames["poll_probe"], 8))[0])
        checks["compare_old"].append(timed(lambda: old_compare(expected, frames["poll_old"], 8))[0])
    # The screen is static: the probe's frame and the old conversion must be the same pixels.
    identical = bool(np.array_equal(cap.grab(desktop), old_grab(old_sct, desktop))
                     and np.array_equal(cap.grab(region), old_grab(old_sct, region)))
    raw_sct.close()
    old_sct.close()
    cap.close()

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    ms = {k: round(statistics.median(v) * 1e3, 3) for k, v in {**times, **checks}.items()}
    return {
        "identical_to_old": identical,
        "median_ms": ms,
        "ratio_to_raw": {
            "desktop_probe": round(ratio("desktop_probe", "desktop_raw"), 3),
            "desktop_old": round(ratio("desktop_old", "desktop_raw"), 3),
            "poll_probe": round(ratio("poll_probe", "poll_raw"), 3),
            "poll_old": round(ratio("poll_old", "poll_raw"), 3),
        },
        "probe_with_checks_over_raw": {
            "desktop": round(statistics.median((a + s) / r for a, s, r in zip(
                times["desktop_probe"], checks["stats_probe"], times["desktop_raw"])), 3),
            "desktop_old": round(statistics.median((a + s) / r for a, s, r in zip(
                times["desktop_old"], checks["stats_old"], times["desktop_raw"])), 3),
            "poll": round(statistics.median((a + c) / r for a, c, r in zip(
                times["poll_probe"], checks["compare_probe"], times["poll_raw"])), 3),
            "poll_old": round(statistics.median((a + c) / r for a, c, r in zip(
                times["poll_old"], checks["compare_old"], times["poll_raw"])), 3),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x1080", help="Xvfb screen, WxH (default 1920x1080)")
    ap.add_argument("--reps", type=int, default=300, help="repetitions of every variant (default 300)")
    ap.add_argument("--region", type=int, default=256, help="side of the polling region (display_size, default 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    xv = load_xvfb()
    if xv.XVFB is None:
        print(xv.SKIP_REASON, file=sys.stderr)
        return 2
    side = min(args.region, w, h)
    desktop = {"left": 0, "top": 0, "width": w, "height": h}
    region = {"left": (w - side) // 2, "top": (h - side) // 2, "width": side, "height": side}
    with xv.xvfb(w, h) as x, tempfile.TemporaryDirectory() as tmp:
        from PIL import Image

        path = Path(tmp) / "pattern.png"
        Image.fromarray(make_pattern(min(w, 1024), min(h, 768), seed=1)).save(path)
        viewer = subprocess.Popen([sys.executable, "-c", xv.TK_VIEWER, str(path)], env=x.env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            os.environ["DISPLAY"] = x.display
            time.sleep(1.0)  # the viewer paints once; content does not change a grab's cost
            result = measure(args.reps, desktop, region, args.seed)
        finally:
            viewer.kill()
            viewer.wait()
    result.update(size=f"{w}x{h}", region=f"{side}x{side}", reps=args.reps, cpus=os.cpu_count(),
                  load_1min=round(os.getloadavg()[0], 2))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    ms, r, c = result["median_ms"], result["ratio_to_raw"], result["probe_with_checks_over_raw"]
    print(f"Xvfb {result['size']}, polling region {result['region']}, {args.reps} interleaved repetitions "
          f"(load {result['load_1min']} on {result['cpus']} CPUs)")
    print(f"{'':24}{'raw grab':>10}{'probe':>10}{'old probe':>11}{'probe/raw':>11}{'old/raw':>9}")
    for key, label in (("desktop", "whole desktop"), ("poll", "round-trip poll")):
        print(f"{label:24}{ms[key + '_raw']:>8.2f}ms{ms[key + '_probe']:>8.2f}ms{ms[key + '_old']:>9.2f}ms"
              f"{r[key + '_probe']:>10.2f}x{r[key + '_old']:>8.2f}x")
    print(f"checks after the capture: frame_stats {ms['stats_probe']:.2f} ms (old {ms['stats_old']:.2f} ms), "
          f"compare {ms['compare_probe']:.2f} ms (old {ms['compare_old']:.2f} ms)")
    print(f"probe frames identical to the old conversion: {result['identical_to_old']}")
    print(f"capture + checks over raw grab: desktop {c['desktop']:.2f}x (old {c['desktop_old']:.2f}x), "
          f"poll {c['poll']:.2f}x (old {c['poll_old']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
