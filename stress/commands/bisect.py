"""``gpu-stress bisect --by driver|kernel|compositor``: the first version that changed the desktop's
behaviour, from the history (stress/bisect.py decides; this renders). docs/bisect.md."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from stress.errors import ExitCode, StressError

BY = ("driver", "kernel", "compositor")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bisect", help="the first driver/kernel/compositor version whose incidence or probe "
                                      "latency changed (from the history)",
                       description="Group the recorded runs by version (ordered as versions: 595.44 < 610.57 < "
                                   "1000.1), and name the first version whose incidence (reproduced / conclusive "
                                   "runs, Fisher exact) or probe latency relative to baseline (Mann-Whitney U) "
                                   "changed significantly against the versions before it: the best split per "
                                   "metric, Bonferroni-corrected over the splits, Benjamini-Hochberg across "
                                   "metrics (docs/bisect.md). Filters match exactly; * and ? glob.")
    p.add_argument("--by", choices=BY, default="driver", help="which version to bisect (default: driver)")
    p.add_argument("--scenario", help="scenario name (bisect one scenario at a time)")
    p.add_argument("--machine", help="host name")
    p.add_argument("--gpu", help="GPU name, e.g. '*4090*'")
    p.add_argument("--driver", help="driver version filter, e.g. '5*'")
    p.add_argument("--kernel", help="kernel release filter")
    p.add_argument("--soak", metavar="SOAK_ID", help="only the runs of one soak")
    p.add_argument("--alpha", type=float, default=0.05, help="false-discovery rate (default 0.05)")
    p.add_argument("--db", default=None, help="history database (default: reports/history.db)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=bisect_command)


def compositor_version(run_dir: str | None) -> str | None:
    """The compositor (else display server) under test and its version, from the run directory's
    environment.json (the history row does not keep it): ``sway 1.8.1``; None when the run directory
    is gone or recorded none."""
    if not run_dir:
        return None
    try:
        env = json.loads((Path(run_dir) / "environment.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    display = env.get("display") if isinstance(env, dict) and isinstance(env.get("display"), dict) else {}
    procs = [p for p in display.get("under_test") or [] if isinstance(p, dict)]
    for role in ("compositor", "x-server"):
        for p in procs:
            if p.get("role") == role and p.get("version"):
                return str(p["version"])
    return None


def version_of(run, by: str) -> str | None:
    if by == "driver":
        return run.driver
    if by == "kernel":
        return run.kernel
    return compositor_version(run.run_dir)


def bisect_command(args: argparse.Namespace) -> int:
    from stress.bisect import bisect, group_by_version
    from stress.history import query_runs
    from stress.paths import default_history_db

    if not 0 < args.alpha < 1:
        raise StressError(f"--alpha {args.alpha:g}: give a level between 0 and 1, e.g. 0.05")
    db = Path(args.db) if args.db else default_history_db()
    filters = {k: getattr(args, k) for k in ("scenario", "machine", "gpu", "driver", "kernel", "soak")
               if getattr(args, k)}
    runs = query_runs(db, filters, with_samples=True)
    groups, unknown = group_by_version((version_of(r, args.by), r) for r in runs)
    result = bisect(groups, alpha=args.alpha)
    notes = []
    if unknown:
        notes.append(f"{unknown} run(s) have no recorded {args.by} version and are left out"
                     + (" (the compositor is read from the run directory, which is gone)" if args.by == "compositor"
                        else ""))
    for attr, word in (("scenario", "scenarios"), ("hostname", "machines"), ("gpu", "GPUs")):
        seen = sorted({str(getattr(r, attr)) for r in runs})
        if len(seen) > 1:
            notes.append(f"the runs span {len(seen)} {word} ({', '.join(seen[:3])}{', ...' if len(seen) > 3 else ''}); "
                         f"narrow with --{ {'hostname': 'machine'}.get(attr, attr) } so that only the version differs")
    result.update({"db": str(db), "by": args.by, "filters": filters, "runs": len(runs), "notes": notes})
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return int(ExitCode.OK)
    if not runs:
        print(f"no runs recorded in {db}" + (f" match {filters}" if filters else ""))
        return int(ExitCode.OK)
    print(f"{args.by} versions, oldest first ({len(runs)} runs):")
    lat_keys = sorted({k for v in result["versions"] for k in v["latency"]})
    header = ["version", "runs", "reproduced"] + [k.removeprefix("latency:") + " x" for k in lat_keys]
    rows = []
    for v in result["versions"]:
        rate = f"{v['reproduced']}/{v['conclusive']}" + (f" ({v['rate']:.0%})" if v["rate"] is not None else "")
        rows.append([v["version"], str(v["runs"]), rate] + [
            f"{v['latency'][k]['median']:.2f}" if k in v["latency"] else "-" for k in lat_keys])
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print()
    for s in result["steps"]:
        mark = "significant" if s["significant"] else "not significant"
        print(f"  {s['metric']}: best split {s['last_before']} | {s['first_changed']} ({s['direction']}), "
              f"p={s['p']:.2g}, corrected {s['p_corrected']:.2g}, q={s['q']:.2g}: {mark}"
              + (" (too few runs to reach significance)" if s.get("too_few") else ""))
    for n in notes:
        print(f"note: {n}")
    print(result["summary"])
    return int(ExitCode.OK)
