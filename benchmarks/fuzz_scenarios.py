"""Fuzz `gpu-stress validate` with thousands of hostile scenario files (issue 19).

Each file is validated by ``stress.cli.main(["validate", FILE])`` in a process of its own (forked from
one that has imported stress, as a fresh ``gpu-stress`` would have), so the exit code, standard error,
wall time and peak RSS (``wait4``) are exactly those of one command. A shipped scenario is measured
the same way first, as the reference for the ratios.

Counts: tracebacks (``Traceback`` or ``internal error`` on stderr), exit codes other than 0 and 2, error
lines without ``file:line`` (or ``file:`` for a whole-file problem), files over 5 s or 500 MB.

    .venv/bin/python benchmarks/fuzz_scenarios.py --cases 2500 --seed 1
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz_yaml import cases  # noqa: E402
from tests.test_scenario_fuzz import _LOCATED, _NO_LINE  # noqa: E402

import stress.cli  # noqa: E402,F401 - imported before forking, like a started command
import stress.plan  # noqa: E402,F401
import stress.scenario  # noqa: E402,F401

KILL_AFTER_S = 60


def run_one(path: Path, err_path: Path) -> tuple[int, float, float]:
    """(exit code or -signal, wall seconds, peak RSS in MB) of one `validate` in a child."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: one command
        try:
            fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            sys.stderr = open(2, "w", closefd=False)
            sys.stdout = open(1, "w", closefd=False)
            rc = stress.cli.main(["validate", str(path)])
            sys.stderr.flush()
            sys.stdout.flush()
        except BaseException:  # noqa: BLE001 - counted as a traceback by the parent
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            rc = 1
        os._exit(rc)
    deadline = time.monotonic() + KILL_AFTER_S
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    return rc, wall, usage.ru_maxrss / 1024


def run_cli_in(src: Path, path: Path, limit_mb: int, timeout: float) -> tuple[int, float, float, str]:
    """`python -m stress validate FILE` of the checkout ``src`` in a fresh process, with an address
    space limit (so an old loader's blow-up cannot take the machine down) and a time limit."""
    import resource
    import subprocess

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))

    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.Popen([sys.executable, "-m", "stress", "validate", str(path)], cwd=src, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limits)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc.returncode, wall, usage.ru_maxrss / 1024, err.decode("utf-8", "replace")


def compare(baseline: Path, n: int, seed: int, work: Path) -> dict:
    """The first ``n`` cases through this checkout and ``baseline``, each in a fresh `python -m stress`."""
    out: dict = {}
    for name, src in (("this", ROOT), ("baseline", baseline)):
        c: Counter = Counter()
        walls = []
        for i, case in enumerate(cases(seed, n)):
            path = case.write(work / f"{name}-{i}")
            rc, wall, _, err = run_cli_in(src, path, limit_mb=2048, timeout=20)
            walls.append(wall)
            c[f"exit {rc}"] += 1
            c["tracebacks"] += ("Traceback" in err or "internal error" in err)
            c["over 5 s (killed at 20 s)"] += wall > 5
            c["not exit 0/2"] += rc not in (0, 2)
        out[name] = {"counts": dict(c), "total_s": round(sum(walls), 1), "max_s": round(max(walls), 2)}
    out["total_ratio"] = round(out["baseline"]["total_s"] / out["this"]["total_s"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    ap.add_argument("--baseline", metavar="CHECKOUT", help="also run the first --compare-cases cases through "
                    "another checkout (e.g. the commit before the hardening), side by side, 2 GiB / 20 s each")
    ap.add_argument("--compare-cases", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fuzz-scenarios-"))
    err = work / "stderr.txt"
    ref_rc, ref_wall, ref_rss = min((run_one(ROOT / "scenarios" / "demo.yaml", err) for _ in range(5)),
                                   key=lambda r: r[1])
    assert ref_rc == 0, err.read_text()
    counts: Counter = Counter()
    kinds: Counter = Counter()
    worst_time = (0.0, "")
    worst_rss = (0.0, "")
    bad: list[str] = []
    walls: list[float] = []
    t_all = time.perf_counter()
    for i, case in enumerate(cases(args.seed, args.cases)):
        folder = work / f"c{i}"
        path = case.write(folder)
        rc, wall, rss = run_one(path, err)
        walls.append(wall)
        text = err.read_text(encoding="utf-8", errors="replace")
        kinds[case.kind] += 1
        counts[f"exit {rc}"] += 1
        if "Traceback" in text or "internal error" in text:
            counts["tracebacks"] += 1
            bad.append(f"case {i} ({case.kind}): traceback: {text[-300:]!r}")
        if rc not in (0, 2):
            bad.append(f"case {i} ({case.kind}): exit {rc}: {text[-300:]!r}")
        for line in text.splitlines():
            if not line.startswith("error: "):
                counts["lines not 'error: '"] += 1
                bad.append(f"case {i} ({case.kind}): stray line {line[:200]!r}")
                continue
            counts["error lines"] += 1
            m = _LOCATED.match(line[len("error: "):])
            if not m:
                counts["unlocated lines"] += 1
                bad.append(f"case {i} ({case.kind}): unlocated {line[:200]!r}")
            elif m.group("line"):
                counts["lines with file:line"] += 1
            elif _NO_LINE.search(line):
                counts["lines with file only (whole-file problem)"] += 1
            else:
                counts["lines without a line that could have one"] += 1
                bad.append(f"case {i} ({case.kind}): no line {line[:200]!r}")
        if wall > 5 or rss > 500:
            counts["over 5 s or 500 MB"] += 1
            bad.append(f"case {i} ({case.kind}): {wall:.2f} s, {rss:.0f} MB")
        worst_time = max(worst_time, (wall, case.kind))
        worst_rss = max(worst_rss, (rss, case.kind))
    total = time.perf_counter() - t_all
    walls.sort()
    figures = {
        "cases": args.cases, "seed": args.seed, "kinds": dict(kinds), "counts": dict(counts),
        "reference": {"file": "scenarios/demo.yaml", "wall_s": round(ref_wall, 4), "rss_mb": round(ref_rss, 1)},
        "wall_s": {"median": round(walls[len(walls) // 2], 4), "p99": round(walls[int(len(walls) * 0.99)], 4),
                   "max": round(worst_time[0], 4), "max_kind": worst_time[1],
                   "max_over_reference": round(worst_time[0] / ref_wall, 2)},
        "rss_mb": {"max": round(worst_rss[0], 1), "max_kind": worst_rss[1],
                   "max_over_reference": round(worst_rss[0] / ref_rss, 2)},
        "total_s": round(total, 1), "problems": bad[:50],
    }
    if args.baseline:
        figures["side_by_side"] = compare(Path(args.baseline), args.compare_cases, args.seed, work)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
