"""``gpu-stress report RUN_DIR``: (re)write the reports of a run: report.json, report.html, ticket.md, bundle.

Works on any run directory, including one left by a crash, a kill or a power loss (the report says
what is missing). Exit 0 when the reports were written, whatever the run's verdict; 2 when RUN_DIR
has no journal.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stress.errors import ExitCode, StressError
from stress.paths import default_reports


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write report.json, report.html, ticket.md and a bundle for a run",
                       description="Write the reports of a run directory (artifacts/<run-id>) into "
                                   "reports/<run-id>/: report.json, report.html, ticket.md and <run-id>.tar.gz. "
                                   "User name, host name, home paths, GPU UUIDs/serials and prompts are masked.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                   help="a run directory (or its run id under ./artifacts)")
    p.add_argument("--out", metavar="DIR", help="where to write (default: <repository or cwd>/reports/<run-id>/)")
    p.add_argument("--include-prompts", action="store_true", help="keep prompt texts (default: sha256 and "
                   "token count only)")
    p.add_argument("--include-screenshots", action="store_true", help="put the probes' desktop screenshots in "
                   "the bundle (default: left out)")
    p.add_argument("--include-thumbnails", action="store_true", help="put 128 px thumbnails of the outputs in "
                   "the bundle (they show what was generated; default: hashes only)")
    p.add_argument("--bundle", action=argparse.BooleanOptionalAction, default=True,
                   help="write <run-id>.tar.gz (default: yes)")
    p.add_argument("--nvidia-bug-report", action="store_true", help="run nvidia-bug-report.sh --safe-mode "
                   "(up to 5 minutes) and add its output to the bundle")
    p.add_argument("--history", metavar="URL_OR_PATH", help="history: an SQLite file or a URL (sqlite:///PATH, postgresql://USER@HOST/DB); default: $STRESS_HISTORY_URL, else reports/history.db")
    p.add_argument("--no-history", action="store_true", help="do not record the run in the history")
    p.add_argument("--schema", action="store_true", help="print the JSON Schema of report.json and exit")
    p.set_defaults(func=report_command)


def default_out_root(cwd: Path | None = None) -> Path:
    """``<repo>/reports`` when run inside the gpu-stress repository, else ``<cwd>/reports``."""
    return default_reports(cwd)


def _resolve_run_dir(arg: str) -> Path:
    p = Path(arg)
    if p.is_file() and p.name == "journal.jsonl":
        return p.parent
    if not p.exists():
        alt = default_out_root().parent / "artifacts" / arg
        if alt.is_dir():
            return alt
        raise StressError(f"{arg}: no such run directory")
    if not p.is_dir():
        raise StressError(f"{arg}: not a directory; give a run directory (artifacts/<run-id>)")
    journal = p / "journal.jsonl"
    if journal.is_symlink():
        try:
            real, root = journal.resolve(strict=True), p.resolve()
        except (OSError, RuntimeError):
            real, root = None, p
        if real is None or root not in real.parents:
            raise StressError(f"{arg}: journal.jsonl is a link out of the run directory; refusing to report "
                              "on it (a report may go to a public ticket)")
    if not journal.is_file():
        raise StressError(f"{arg}: no journal.jsonl there; give a run directory (artifacts/<run-id>)")
    return p


def _refresh_run_json(run_dir: Path, out: Path) -> str | None:
    """Rewrite RUN/run.json from the journal; on a full or read-only run directory, write it to OUT
    instead and say so. Returns a warning or None."""
    from stress.journal import write_json_atomic
    from stress.rundata import build_run_json

    record = build_run_json(run_dir)
    try:
        write_json_atomic(run_dir / "run.json", record)
        return None
    except OSError as exc:
        why = exc.strerror or str(exc)
    try:
        write_json_atomic(out / "run.json", record)
        return f"{run_dir}: run.json not rewritten there ({why}); a current one is in {out / 'run.json'}"
    except OSError:
        return f"{run_dir}: run.json not rewritten there ({why})"


def report_command(args: argparse.Namespace) -> int:
    if args.schema:
        from stress.report.schema import report_json_schema

        print(json.dumps(report_json_schema(), indent=2))
        return int(ExitCode.OK)
    if not args.run_dir:
        raise StressError("give a run directory (artifacts/<run-id>)")
    run_dir = _resolve_run_dir(args.run_dir)
    out = Path(args.out) if args.out else default_out_root() / run_dir.resolve().name
    from stress.report import write_reports

    # run.json is derived from the journal: rebuild it, so a run that was killed (no run.json) or
    # resumed gets a current one. A full or read-only run directory is fine: the report goes to --out.
    early = _refresh_run_json(run_dir, out)
    from stress.evidence import collect_after_the_run   # previous boot's kernel log, pstore, fingerprint

    for line in collect_after_the_run(run_dir):
        print(line, file=sys.stderr)
    if args.nvidia_bug_report:
        print("running nvidia-bug-report.sh --safe-mode (up to 5 minutes)...", file=sys.stderr)
    res = write_reports(run_dir, out, include_prompts=args.include_prompts,
                        include_screenshots=args.include_screenshots, bundle=args.bundle,
                        include_thumbnails=args.include_thumbnails,
                        nvidia_bug_report=args.nvidia_bug_report)
    print(f"report:  {res['report_html']}")
    print(f"json:    {res['report_json']}")
    print(f"ticket:  {res['ticket_md']}")
    if res.get("bundle"):
        size = res["bundle"].stat().st_size
        print(f"bundle:  {res['bundle']}  ({size / 1e6:.1f} MB)")
    if not args.no_history:
        from stress.history import history_location, try_record_run

        db = history_location(args.history)
        warning = try_record_run(run_dir, out, db)
        if warning:
            res["warnings"].append(warning)
    if early:
        res["warnings"].insert(0, early)
    for w in res["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return int(ExitCode.OK)
