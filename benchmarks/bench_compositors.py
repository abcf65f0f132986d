"""Probe latency per compositor: baseline probes on each real compositor of tests/compositors.py, one
after another in one run (the machine is shared and noisy: compare within a run, not across runs).

    PYTHONPATH=. python benchmarks/bench_compositors.py [--reps 9] [--rounds 2] [--json out.json]

Prints a Markdown table of median latencies (and the spread over rounds) per compositor and probe
kind, the figures docs/probes.md records. Each round starts every compositor afresh, shows one other
client's window, and runs ``--reps`` probes of each kind that works there through the real runner.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from stress.journal import Journal, RunDir  # noqa: E402
from stress.probes.config import ProbesConfig  # noqa: E402
from stress.probes.phases import run_phase  # noqa: E402
from test_probes_compositors import FIXTURES, KINDS, content, png_output  # noqa: E402

ORDER = ["xvfb+picom", "xvfb+xcompmgr", "sway", "weston", "kwin"]
ENV_KEYS = ("WAYLAND_DISPLAY", "DISPLAY", "XDG_SESSION_TYPE", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR")


def one(name: str, reps: int) -> dict[str, list[float]]:
    kinds, _backend = KINDS[name]
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    out: dict[str, list[float]] = {}
    with FIXTURES[name]() as comp, tempfile.TemporaryDirectory() as tmp:
        for k in ENV_KEYS:
            os.environ.pop(k, None)
        os.environ.update(comp.env_vars)
        try:
            with content(comp, Path(tmp)):
                rd = RunDir(Path(tmp) / "run").create()
                with Journal(rd.journal, fsync=False) as j:
                    cfg = ProbesConfig(repetitions=reps, timeout=10.0, display_wait=5.0, display_size=256, kinds=kinds)
                    for e in run_phase("baseline", cfg, rd, j, [png_output(rd)]):
                        v = (e["metrics"] or {}).get("ref_s_per_mp") if e["kind"] == "decode" else e["latency_s"]
                        if e["status"] == "ok" and v is not None:
                            out.setdefault(e["kind"], []).append(float(v))
                        elif e["status"] != "ok":
                            out.setdefault(e["kind"] + ":failed", []).append(1.0)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rounds: list[dict[str, dict[str, list[float]]]] = []
    t0 = time.monotonic()
    for _ in range(args.rounds):
        res = {}
        for name in ORDER:
            try:
                res[name] = one(name, args.reps)
            except BaseException as exc:  # noqa: BLE001 - pytest.skip is a BaseException
                res[name] = {"error": [0.0]}
                print(f"{name}: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
        rounds.append(res)
    kinds = ["screenshot", "display", "display-wayland", "decode"]
    print(f"{args.rounds} rounds x {args.reps} probes per kind, {time.monotonic() - t0:.0f} s, "
          f"{os.cpu_count()} CPUs\n")
    print("| compositor | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name in ORDER:
        cells = []
        for k in kinds:
            meds = [statistics.median(r[name][k]) for r in rounds if r[name].get(k)]
            fails = sum(len(r[name].get(k + ":failed", [])) for r in rounds)
            if not meds:
                cells.append("-" if not fails else f"{fails} failed")
                continue
            unit = "s/MP" if k == "decode" else "ms"
            scale = 1 if k == "decode" else 1000
            spread = f" ({min(meds) * scale:.3g}-{max(meds) * scale:.3g})" if len(meds) > 1 else ""
            cells.append(f"{statistics.median(meds) * scale:.3g} {unit}{spread}" + (f", {fails} failed" if fails else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
