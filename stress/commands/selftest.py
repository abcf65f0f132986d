"""``gpu-stress selftest``: measure the verdict. Inject each class of desktop fault into real runs of a
short scenario on the tiny models, against a display selftest starts itself, and run the same scenario
with no fault under background load; report per class how often the verdict caught it (and said why),
how long detection took, and how many clean runs cried wolf. Exits 14 when a target is missed.

It never touches the user's session: every fault goes into a process selftest started (docs/selftest.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from stress.errors import ExitCode, StressError


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= n <= 1000:
        raise argparse.ArgumentTypeError(f"expected 0..1000, got {n}")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("selftest", help="measure the verdict: inject desktop faults, count detections and false alarms",
                       description="Run a short scenario on the tiny models against a display selftest starts, "
                                   "inject each fault class during a probe phase, run clean controls under "
                                   "background load, and report the confusion matrix. Exits 14 when a class "
                                   "is detected in under 95% of its trials or a clean run is 'reproduced'.")
    p.add_argument("--quick", action="store_true",
                   help="a few classes (stall, black, corrupt, xid), 1 trial each, 1 clean run, 2 at once (a few minutes)")
    p.add_argument("--trials", type=_count, default=None, metavar="N", help="trials per fault class (default 3; --quick 1)")
    p.add_argument("--clean", type=_count, default=None, metavar="N",
                   help="clean runs under background load (default 5; --quick 1)")
    p.add_argument("--classes", metavar="A,B", help="fault classes (default: all; 'slow' means every slow-*)")
    p.add_argument("--out", metavar="DIR", help="folder for the trials and results (default: artifacts/selftest-<time>)")
    from stress.selftest.display import KINDS

    p.add_argument("--display", choices=KINDS, default="xvfb",
                   help="the display selftest starts: xvfb, or sway (a real Wayland compositor, headless; "
                        "the probes reach it over Wayland only) (default: xvfb)")
    p.add_argument("--jobs", type=_count, default=None, metavar="N",
                   help="trials run at once, each on its own display (default 1, --quick 2: trials in parallel "
                        "load the machine, which the slow classes and the clean control measure against)")
    p.add_argument("--phase", choices=["after", "after-exit"], default=None,
                   help="inject every class in this probe phase instead of its own (see --list)")
    p.add_argument("--list", action="store_true", help="list the fault classes and exit")
    p.set_defaults(func=selftest_command)


def machine_facts() -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    u = platform.uname()
    return {"cpu": cpu or platform.processor() or u.machine, "cores": os.cpu_count(), "system": u.system,
            "kernel": u.release, "python": platform.python_version(),
            "load1_start": round(os.getloadavg()[0], 2)}


def selftest_command(args: argparse.Namespace) -> int:
    from stress.selftest.faults import FAULTS, parse_classes, plan_trials, scenario_phases

    if args.list:
        for f in FAULTS.values():
            print(f"{f.name:<12} {f.phase:<10} {f.what}")
        return int(ExitCode.OK)
    try:
        classes = parse_classes(args.classes, quick=args.quick)
    except ValueError as exc:
        raise StressError(f"--classes: {exc}") from None
    trials = args.trials if args.trials is not None else (1 if args.quick else 3)
    clean = args.clean if args.clean is not None else (1 if args.quick else 5)
    if not trials and not clean:
        raise StressError("nothing to run: --trials and --clean are both 0")
    from stress.paths import default_artifacts

    out = Path(args.out) if args.out else default_artifacts() / f"selftest-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StressError(f"{out}: cannot create the folder ({exc.strerror or exc}); choose another with --out") from None
    from stress.selftest.display import start_display
    from stress.selftest.results import markdown, screen, summarize
    from stress.selftest.trial import run_trial

    probe_display = start_display(args.display)   # one clear line now (exit 3) if it is missing or cannot start
    try:
        from stress.hw.display_id import comm, version

        display_version = f"{comm(probe_display.pid) or args.display} {version(probe_display.pid) or '?'}"
    finally:
        probe_display.close()
    plan = plan_trials(classes, trials, clean)
    phases = scenario_phases(classes, args.phase)
    jobs = args.jobs if args.jobs is not None else (2 if args.quick else 1)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.monotonic()
    machine = dict(machine_facts(), display_version=display_version)
    results: list[dict] = []
    cache = Path(os.environ["STRESS_CACHE"]) if os.environ.get("STRESS_CACHE") else None
    options = {"trials": trials, "clean": clean, "classes": classes, "quick": bool(args.quick), "jobs": jobs,
               "phases": list(phases), "phase": args.phase, "display": args.display}
    import threading
    from concurrent.futures import ThreadPoolExecutor

    summary = None
    stop = threading.Event()        # Ctrl-C / SIGTERM: running trials stop their runs (cleanly), queued ones never start
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_trial, name, i, out / f"{name}-{i:03d}", cache=cache, stop=stop, phases=phases,
                              phase=args.phase, display_kind=args.display)
                   for name, i in plan]
        for n, fut in enumerate(futures, 1):
            try:
                r = fut.result()
            except KeyboardInterrupt:
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            results.append(r)
            print(f"[{n}/{len(plan)}] {r['fault']} #{r['trial']}: {r['verdict']}"
                  + (f" ({'detected' if r['detected'] else 'MISSED'})" if r["detected"] is not None else "")
                  + (f" error: {r['error']}" if r["error"] else "") + f"  {r['wall_s']:.0f} s", file=sys.stderr)
            summary = summarize(results, machine=machine, display=args.display, started=started,
                                wall_s=time.monotonic() - t0, options=options)
            _write(out, summary, markdown(summary))     # after every trial: an interrupted selftest keeps its data
    print(screen(summary))
    print(f"results: {out / 'selftest.json'}, {out / 'selftest.md'}")
    return int(ExitCode.OK if summary["passed"] else ExitCode.SELFTEST_MISSED)


def _write(out: Path, summary: dict, md: str) -> None:
    for name, text in (("selftest.json", json.dumps(summary, indent=2)), ("selftest.md", md)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
