"""The slow display path's severities, measured with the probes' own code on an idle Xvfb.

    PYTHONPATH=. python benchmarks/bench_slow_path.py [--reps 8] [--repeat N] [--series]
        [--stop STOP_MS,PERIOD_MS ...] [--flood SIDE,BATCH,CLIENTS ...]

For no injection and for each slow-* class as selftest injects it (its Xvfb stopped STOP of every
PERIOD ms, stress.selftest.stopper), or for each ``--stop`` / ``--flood`` case instead (``--flood``:
the earlier injection, clients copying pixmaps, for comparison): start an Xvfb (as selftest does;
``--xvfb-arg`` adds server arguments), start the injection, and run the screenshot and display
round-trip probes (``python -m stress.probes.child``, selftest's probe settings: timeout 4 s,
display_wait 2 s) ``--reps`` times each, ``--delay`` seconds after it started (``--series``: every
latency). Prints the median and max latency per kind, the longest whole probe, the ratio to no
injection and, for stop windows, what the server really had (the helper's own measurement). This is
how an injection's severity is chosen: no verdict and no selftest trial is involved.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stress.probes.config import ProbesConfig  # noqa: E402
from stress.selftest.display import start_xvfb  # noqa: E402
from stress.selftest.faults import FAULTS  # noqa: E402
from stress.selftest.stopper import StopWindows  # noqa: E402
from stress.selftest.xwin import FLOOD, start_client  # noqa: E402

TIMEOUT_S = 4.0


def probe(kind: str, reps: int, env: dict, run_dir: Path) -> list[dict]:
    cfg = ProbesConfig(kinds=["screenshot", "display"], repetitions=reps, timeout=TIMEOUT_S, display_wait=2)
    req = {"kind": kind, "phase": "after-exit", "visit": 0, "reps": list(range(reps)),
           "config": cfg.model_dump(mode="json"), "run_dir": str(run_dir), "images": [], "session": "x11"}
    path = run_dir / f"req-{kind}.json"
    path.write_text(json.dumps(req), encoding="utf-8")
    env = dict(env, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "stress.probes.child", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out: list[dict] = []
    try:
        assert proc.stdout is not None
        # the whole child is bounded like the supervisor bounds it: timeout per probe (plus start-up)
        deadline = time.monotonic() + 20 + reps * TIMEOUT_S
        last = time.monotonic()
        for line in proc.stdout:
            res = json.loads(line)
            now = time.monotonic()
            if "rep" in res:
                res["wall_s"] = now - last   # what the supervisor's timeout bounds: the whole probe
                out.append(res)
            last = now
            if time.monotonic() > deadline:
                break
    finally:
        proc.kill()
        proc.wait()
    return out


def measure(flood: tuple[int, int, int] | None, reps: int, server_args: tuple[str, ...] = (),
            delay: float = 0.5, stop: tuple[float, float] | None = None) -> dict:
    if server_args:   # more Xvfb arguments (--xvfb-arg), for trying a server setting: selftest has none
        from stress.selftest import display as _display

        argv = _display._argv
        _display._argv = lambda *a, **k: [*argv(*a, **k), *server_args]
        try:
            return measure(flood, reps, (), delay, stop)
        finally:
            _display._argv = argv
    display = start_xvfb()
    clients = []
    windows = StopWindows(display.pid, *stop) if stop else None
    try:
        env = display.env()
        if windows:
            windows.go()
            time.sleep(delay)
        if flood:
            side, batch, n = flood
            clients = [start_client(FLOOD, [str(side), str(batch)], env) for _ in range(n)]
            for c in clients:
                c.stdin.write("go\n")
                c.stdin.flush()
            time.sleep(delay)
        with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
            res = {k: probe(k, reps, env, Path(tmp)) for k in ("screenshot", "display")}
    finally:
        if windows:
            windows.stop()
        for c in clients:
            c.kill()
            c.wait()
        display.kill()
    row = {"windows": windows.note() if windows else None}
    for kind, rs in res.items():
        lat = [r["latency_s"] for r in rs if r.get("status") == "ok" and r.get("latency_s") is not None]
        row[kind] = {"n": len(rs), "ok": len(lat), "status": sorted({r.get("status") for r in rs}),
                     "median": statistics.median(lat) if lat else None, "max": max(lat) if lat else None,
                     "wall_max": max((r["wall_s"] for r in rs), default=None),
                     "series": [round(r["latency_s"] * 1000, 1) if r.get("latency_s") is not None else None for r in rs]}
    return row


def _numbers(n: int, kind=float):
    """An argparse type: N comma-separated numbers (one clear line for anything else)."""
    def parse(text: str) -> tuple:
        try:
            vals = tuple(kind(x) for x in text.split(","))
        except ValueError:
            vals = ()
        if len(vals) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        return vals
    return parse


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--flood", action="append", default=[], metavar="SIDE,BATCH,CLIENTS", type=_numbers(3, int),
                    help="the earlier injection: clients copying pixmaps (for comparison)")
    ap.add_argument("--stop", action="append", default=[], metavar="STOP_MS,PERIOD_MS", type=_numbers(2),
                    help="the server stopped STOP_MS of every PERIOD_MS (stress.selftest.stopper)")
    ap.add_argument("--repeat", type=int, default=1, help="measure every case this many times")
    ap.add_argument("--delay", type=float, default=0.5, help="seconds of injection before the first probe")
    ap.add_argument("--series", action="store_true", help="print every probe's latency (ms), in order")
    ap.add_argument("--xvfb-arg", action="append", default=[],
                    help="one more Xvfb argument for every case (e.g. -dumbSched)")
    args = ap.parse_args()
    xargs = tuple(args.xvfb_arg)
    cases: list[tuple[str, tuple | None, tuple | None]] = [("idle", None, None)]
    for stop, period in args.stop:
        if not 0 < stop < period:
            ap.error(f"--stop {stop:g},{period:g}: the stop must be shorter than the period")
    cases += [("flood " + ",".join(map(str, f)), f, None) for f in args.flood]
    cases += [(f"stop {w[0]:g},{w[1]:g}", None, w) for w in args.stop]
    if not args.flood and not args.stop:   # each slow-* class as selftest injects it
        cases += [(f.name, None, f.stop) for f in FAULTS.values() if f.stop]
    print(f"load {os.getloadavg()[0]:.2f}, {args.reps} probes per kind, timeout {TIMEOUT_S:g} s")
    base = None
    for _ in range(args.repeat):
        for name, flood, stop in cases:
            row = measure(flood, args.reps, xargs, args.delay, stop)  # type: ignore[arg-type]
            base = base or row
            cells = []
            for kind in ("screenshot", "display"):
                r, b = row[kind], base[kind]
                ratio = (r["median"] / b["median"]) if r["median"] and b["median"] else None
                cells.append(f"{kind}: median {r['median'] and r['median'] * 1000:.1f} ms, max "
                             f"{r['max'] and r['max'] * 1000:.1f} ms, whole probe max {r['wall_max']:.2f} s, "
                             f"ok {r['ok']}/{r['n']} {r['status']}" + (f", {ratio:.1f}x" if ratio else ""))
            print(f"{name:<16} load {os.getloadavg()[0]:.2f}  " + "; ".join(cells), flush=True)
            if row["windows"]:
                print("    " + row["windows"], flush=True)
            if args.series:
                for kind in ("screenshot", "display"):
                    print(f"    {kind} ms:", row[kind]["series"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
