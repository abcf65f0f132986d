"""``gpu-stress history``: the recorded runs and their trends (docs/soak.md)."""
from __future__ import annotations

import argparse
import json
import time

from stress.errors import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="list recorded runs and trends (per scenario, machine, GPU, driver)",
                       description="List the runs recorded in the history database, oldest first, and the trend "
                                   "of each scenario/machine/GPU/driver group: runs, reproductions with a 95% "
                                   "Wilson interval, median images/min. Filters match exactly; * and ? glob.")
    p.add_argument("--scenario", help="scenario name")
    p.add_argument("--machine", help="host name")
    p.add_argument("--driver", help="driver version, e.g. 550.54.14 or '550.*'")
    p.add_argument("--gpu", help="GPU name, e.g. '*4090*'")
    p.add_argument("--verdict", choices=("reproduced", "not-reproduced", "inconclusive", "error", "invalid"))
    p.add_argument("--soak", metavar="SOAK_ID", help="only the runs of one soak")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="the newest N runs (default 50; 0: all)")
    p.add_argument("--history", "--db", dest="db", metavar="URL_OR_PATH", default=None,
                   help="history: an SQLite file or a URL (sqlite:///PATH, postgresql://USER@HOST/DB); "
                        "default: $STRESS_HISTORY_URL, else reports/history.db")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=history_command)


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def _table(rows: list[list[str]], header: list[str]) -> str:
    from stress.tables import table

    return table(header, rows)


def history_command(args: argparse.Namespace) -> int:
    from stress.history import display, history_location, query_runs, trends
    from stress.stats import describe_incidence

    db = history_location(args.db)
    filters = {k: getattr(args, k) for k in ("scenario", "machine", "driver", "gpu", "verdict", "soak")
               if getattr(args, k)}
    runs = query_runs(db, filters, limit=args.limit or None)
    groups = trends(runs)
    if args.json:
        print(json.dumps({"db": display(db), "filters": filters, "runs": [r.to_json() for r in runs],
                          "trends": groups}, indent=2, default=str))
        return int(ExitCode.OK)
    if not runs:
        print(f"no runs recorded in {display(db)}" + (f" match {filters}" if filters else ""))
        return int(ExitCode.OK)
    rows = []
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at)) if r.started_at else "?"
        rows.append([when, r.run_id, r.hostname or "-", r.gpu or "-", r.driver or "-", r.scenario or "-",
                     r.verdict or r.status or "-", _fmt(r.metrics.get("images_per_min")),
                     _fmt(r.metrics.get("image_s_median")), str(int(r.metrics.get("probe_failures", 0)))])
    print(_table(rows, ["started", "run", "machine", "gpu", "driver", "scenario", "verdict", "img/min",
                        "image s", "probe fails"]))
    print()
    print("trends:")
    trows = []
    for g in groups:
        span = ""
        if g["first"] and g["last"]:
            span = (time.strftime("%Y-%m-%d", time.localtime(g["first"])) + ".."
                    + time.strftime("%Y-%m-%d", time.localtime(g["last"])))
        trows.append([g["scenario"] or "-", g["machine"] or "-", g["gpu"] or "-", g["driver"] or "-", str(g["runs"]),
                      describe_incidence(g["incidence"]), _fmt(g["images_per_min_median"]),
                      _fmt(g["image_s_median"]), span])
    print(_table(trows, ["scenario", "machine", "gpu", "driver", "runs", "reproduced", "img/min", "image s",
                         "dates"]))
    return int(ExitCode.OK)
