"""Cost of the samplers: CPU time of the sampler threads per second of run, and journal growth.

Runs :class:`stress.samplers.Monitors` as a run does (real psutil on a real worker process tree, the
real kernel-log follower when the log is readable here, a real fsync'd journal) with the scripted
NVML of stress/selftest/fake_nvml.py standing in for the GPU, for ``--seconds`` at ``--interval``. Prints the
sampler threads' CPU time as a share of one core, the time per tick, the bytes written per tick and
the journal growth per hour. The figures in docs/monitors.md come from this script.

    .venv/bin/python benchmarks/bench_sampler.py [--seconds 60] [--interval 0.5] [--gpus 1] [--json]

On a machine with an NVIDIA GPU, ``--real-nvml`` uses the real pynvml instead of the stand-in.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stress.hw import nvml  # noqa: E402
from stress.hw.config import MonitorsConfig  # noqa: E402
from stress.journal import Journal, read_journal  # noqa: E402
from stress.samplers import Monitors  # noqa: E402

WORKER = """
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]) for _ in range(3)]
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(3600)
"""


def load_fake():
    # The stand-in lives in the package (tests/fake_nvml.py is a shim that names the same module).
    from stress.selftest import fake_nvml as mod

    sys.modules["fake_nvml"] = mod
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--gpus", type=int, default=1, help="scripted GPUs (ignored with --real-nvml)")
    ap.add_argument("--real-nvml", action="store_true", help="use the real pynvml (needs an NVIDIA driver)")
    ap.add_argument("--no-fsync", action="store_true", help="journal without fsync (isolates the sampler's CPU)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
    kids = [int(x) for x in worker.stdout.readline().split()]
    if not args.real_nvml:
        fake_nvml = load_fake()
        # The worker and a compositor-like process hold GPU memory, as during a real session.
        scripts = []
        for i in range(args.gpus):
            s = fake_nvml.default_script(i)
            s["nvmlDeviceGetComputeRunningProcesses"] = [fake_nvml.ProcessInfo(worker.pid, 9 * fake_nvml.GiB)]
            s["nvmlDeviceGetGraphicsRunningProcesses"] = [fake_nvml.ProcessInfo(os.getpid(), 300 * fake_nvml.MiB),
                                                          fake_nvml.ProcessInfo(kids[0], 80 * fake_nvml.MiB)]
            scripts.append(s)
        fake = fake_nvml.FakeNvml(scripts)
        nvml._load_pynvml = lambda: fake
    cfg = MonitorsConfig(interval=args.interval)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            jpath = Path(tmp) / "journal.jsonl"
            journal = Journal(jpath, fsync=not args.no_fsync)
            mon = Monitors(cfg, journal, lambda: [worker.pid])
            mon.start()
            time.sleep(args.seconds)
            summary = mon.stop()
            journal.close()
            evs = read_journal(jpath).events
            size = jpath.stat().st_size
            lines = jpath.read_bytes().splitlines()
    finally:
        for pid in kids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        worker.kill()
        worker.wait()

    per_kind: dict[str, list[int]] = {}
    for ev, line in zip(evs, lines, strict=False):
        per_kind.setdefault(ev["ev"], []).append(len(line) + 1)
    # Steady state: the second half of the run (the first tick carries every change-only field).
    half = len(evs) // 2
    steady = [len(line) + 1 for ev, line in zip(evs[half:], lines[half:], strict=False)
              if ev["ev"] in ("nvml", "host")]
    ticks = max(1, summary["ticks"])
    per_tick_events = (len(per_kind.get("nvml", [])) + len(per_kind.get("host", []))) / ticks
    tick_bytes = sum(steady) / max(1, len(steady)) * per_tick_events
    result = {
        "interval_s": args.interval,
        "seconds": args.seconds,
        "gpus": len(summary["gpus"]),
        "nvml": "real" if args.real_nvml else "scripted (stress/selftest/fake_nvml.py)",
        "kernel_log": summary["kernel_log_via"],
        "fsync": not args.no_fsync,
        "ticks": summary["ticks"],
        "skipped": summary["skipped"],
        "sampler_cpu_s": summary["overhead_cpu_s"],
        "cpu_pct_of_one_core": summary["cpu_pct"],
        "cpu_ms_per_tick": round(1000 * summary["overhead_cpu_s"] / ticks, 3),
        "max_late_s": summary["max_late_s"],
        "journal_bytes": size,
        "bytes_per_tick_steady": round(tick_bytes, 1),
        "mean_bytes": {k: round(sum(v) / len(v), 1) for k, v in per_kind.items()},
        "journal_mb_per_hour": round(tick_bytes * 3600 / args.interval / 1e6, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"sampler at {args.interval} s, {result['gpus']} GPU(s) [{result['nvml']}], kernel log: "
              f"{result['kernel_log']}, fsync: {result['fsync']}, {args.seconds:.0f} s")
        print(f"  ticks {result['ticks']} (skipped {result['skipped']}, latest start {result['max_late_s']} s late)")
        print(f"  CPU: {result['sampler_cpu_s']:.3f} s = {result['cpu_pct_of_one_core']:.3f} % of one core "
              f"({result['cpu_ms_per_tick']} ms per tick)")
        print(f"  journal: {result['bytes_per_tick_steady']} bytes per tick at steady state "
              f"(mean per event: {result['mean_bytes']}) -> {result['journal_mb_per_hour']} MB per hour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
