"""``gpu-stress compare A B``: what changed between two runs, or two groups of runs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from stress.errors import ExitCode, StressError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare two runs or two groups of runs (metrics, probes, verdicts)",
                       description="A and B are each a run id (or an unambiguous prefix) from the history, a run "
                                   "directory, or a filter such as driver=550.54 or scenario=demo,machine=box "
                                   "(* and ? glob). Per metric: A, B, the change and, where samples exist "
                                   "(per-image times, per-probe latencies, or 3+ runs a side), a two-sided "
                                   "Mann-Whitney U p-value.")
    p.add_argument("a", metavar="A", nargs="?")
    p.add_argument("b", metavar="B", nargs="?")
    p.add_argument("--cells", nargs="+", metavar="RUNS",
                   help="compare the cells of a matrix instead of A and B: run directories, folders of run "
                        "directories (artifacts/), run ids or history filters (matrix=NAME); per cell the "
                        "incidence with its 95%% Wilson interval and the probe latencies against --reference")
    p.add_argument("--reference", metavar="CELL", help="the reference cell (its label or an unambiguous part of "
                                                        "it; default: the first cell run)")
    p.add_argument("--html", metavar="FILE", help="with --cells: also write an HTML page, one chart per metric")
    p.add_argument("--history", "--db", dest="db", metavar="URL_OR_PATH", default=None,
                   help="history: an SQLite file or a URL (sqlite:///PATH, postgresql://USER@HOST/DB); "
                        "default: $STRESS_HISTORY_URL, else reports/history.db")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--all", action="store_true", help="show every metric, not only those that changed")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=compare_command)


def resolve(ref: str, db: str | Path) -> tuple[str, list]:
    """A run directory, a filter, or a run id -> (label, runs with their samples); ``db`` is the
    history's path or URL."""
    from stress.history import display, exists, find_run, parse_filter, query_runs, summarize_run

    path = Path(ref)
    if path.is_dir():
        if not (path / "journal.jsonl").exists():
            raise StressError(f"{ref}: a folder, but not a run directory (no journal.jsonl)")
        reports = path.resolve().parent.parent / "reports" / path.name
        return str(path), [summarize_run(path, reports if reports.exists() else None)]
    if "=" in ref:
        filters = parse_filter(ref)
        if not exists(db):
            raise StressError(f"no history database at {display(db)}; give run directories, or --db")
        runs = query_runs(db, filters, with_samples=True)
        if not runs:
            raise StressError(f"no recorded run matches {ref!r} in {display(db)}")
        return ref, runs
    if not exists(db):
        raise StressError(f"{ref}: not a run directory, and there is no history database at {display(db)} "
                          "to look it up")
    run = find_run(db, ref)
    if run is None:
        raise StressError(f"{ref}: no such run directory, and no run with that id in {display(db)}")
    return run.run_id, [run]


def _num(name: str, v: float | None) -> str:
    if v is None:
        return "-"
    if name.endswith("_bytes"):
        from stress.units import format_size

        return format_size(v)
    if abs(v) >= 1000 or v == int(v):
        return f"{v:.0f}" if v == int(v) else f"{v:.1f}"
    return f"{v:.4g}"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def render(result: dict, label_a: str, label_b: str, *, show_all: bool = False) -> str:
    from stress.stats import describe_incidence

    out = [f"A: {label_a}  ({len(result['a']['runs'])} run{'s' if len(result['a']['runs']) != 1 else ''})",
           f"B: {label_b}  ({len(result['b']['runs'])} run{'s' if len(result['b']['runs']) != 1 else ''})"]
    v = result["verdicts"]
    fmt = lambda d: ", ".join(f"{k} {n}" for k, n in d.items())  # noqa: E731
    out.append(f"verdicts: A {fmt(v['a'])} | B {fmt(v['b'])}  -> {'DIFFER' if v['differs'] else 'same'}")
    if len(result["a"]["runs"]) > 1 or len(result["b"]["runs"]) > 1:
        out.append(f"incidence: A {describe_incidence(result['incidence']['a'])} | "
                   f"B {describe_incidence(result['incidence']['b'])}")
    for key, d in result["environment"].items():
        out.append(f"{key}: A {', '.join(d['a'])} | B {', '.join(d['b'])}")
    rows = []
    for r in result["metrics"]:
        if not show_all and not r["significant"] and (r["change"] in (0, None)) and r["basis"] != "one side only":
            continue
        rel = f"{r['relative']:+.1%}" if r["relative"] is not None else "-"
        note = r["basis"] + (f" n={r['n_a']}/{r['n_b']}" if r["basis"] in ("samples", "runs") else "")
        if r["significant"]:
            note = f"SIGNIFICANT ({r['direction']}); " + note
        rows.append([r["metric"], _num(r["metric"], r["a"]), _num(r["metric"], r["b"]), rel, _p(r["p"]), note])
    if rows:
        from stress.tables import table_lines

        out.append("")
        out += table_lines(["metric", "A", "B", "change", "p", "note"], rows, right={1, 2, 3, 4})
    else:
        out.append("no metric changed")
    sig = result["significant"]
    out.append("")
    out.append(f"significant at alpha={result['alpha']}: {', '.join(sig) if sig else 'none'}")
    return "\n".join(out)


def compare_command(args: argparse.Namespace) -> int:
    from stress.history import compare_runs, history_location

    if not 0 < args.alpha < 1:
        raise StressError(f"--alpha must be between 0 and 1 (got {args.alpha})")
    db = history_location(args.db)
    from stress.history import parse_filter

    if args.cells:
        if args.a or args.b:
            raise StressError("give either A and B, or --cells RUNS..., not both")
        from stress.commands._compare_cells import cells_command

        return cells_command(args, db)
    if args.html or args.reference:
        raise StressError("--html and --reference go with --cells")
    if not (args.a and args.b):
        raise StressError("give two runs (or groups of runs) A and B, or --cells RUNS... for a matrix")

    for ref in (args.a, args.b):  # both filters' syntax first: one error, before any lookup
        if "=" in ref and not Path(ref).is_dir():
            parse_filter(ref)
    label_a, a = resolve(args.a, db)
    label_b, b = resolve(args.b, db)
    result = compare_runs(a, b, alpha=args.alpha)
    if args.json:
        print(json.dumps(dict(result, labels={"a": label_a, "b": label_b}), indent=2, default=str))
    else:
        print(render(result, label_a, label_b, show_all=args.all))
    return int(ExitCode.OK)
