"""``gpu-stress run SCENARIO``: run a scenario under the supervisor and write its report."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from typing import TextIO

from stress.errors import ExitCode, StressError, most_severe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a scenario (or resume a run) and write its report",
                       description="Run a scenario in a supervised worker while monitors and compositor probes "
                                   "record the desktop's state; write artifacts/<run-id>/ and reports/<run-id>/.")
    p.add_argument("scenario", nargs="?", help="scenario YAML file")
    p.add_argument("--out", default=None, help="folder for run directories (default: artifacts)")
    p.add_argument("--reports", default=None, help="folder for reports (default: reports)")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run where it stopped")
    p.add_argument("--include-prompts", action="store_true", help="keep prompts in reports (default: hashed)")
    p.add_argument("--include-screenshots", action="store_true", help="put desktop screenshots in the bundle")
    p.add_argument("--include-thumbnails", action="store_true",
                   help="put thumbnails of the outputs in the bundle (default: hashes only)")
    p.add_argument("--nvidia-bug-report", action="store_true",
                   help="when the desktop regressed, capture nvidia-bug-report.sh --safe-mode into the bundle")
    p.add_argument("--witness", metavar="HOST:PORT",
                   help="send a heartbeat and the journal to 'gpu-stress witness' on another machine, which "
                        "records when this host stops responding (sets monitors.witness)")
    p.add_argument("--bug-report-at-failure", action="store_true",
                   help="at the first driver error or desktop probe failure, also capture nvidia-bug-report.sh "
                        "--safe-mode into the run directory at once (sets monitors.bug_report_at_failure)")
    p.add_argument("--history", metavar="URL_OR_PATH", help="history: an SQLite file or a URL (sqlite:///PATH, postgresql://USER@HOST/DB); default: $STRESS_HISTORY_URL, else reports/history.db")
    p.add_argument("--no-history", action="store_true", help="do not record the run in the history")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--allow-suspend", action="store_true",
                   help="let the scenario's suspend cycles suspend this machine (rtcwake; docs/scenarios.md#cycles)")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from stress.progress import Progress
    from stress.runner import load_resumable, run_scenario
    from stress.scenario import load_scenarios

    if args.resume:
        resume_dir = Path(args.resume)
        scenarios = [load_resumable(resume_dir)]
        scenario_path = resume_dir / "scenario.resolved.json"
    elif args.scenario:
        resume_dir = None
        scenario_path = Path(args.scenario)
        scenarios = load_scenarios(scenario_path)
    else:
        raise StressError("give a scenario file (e.g. scenarios/demo.yaml) or --resume RUN_DIR")
    from stress.paths import default_artifacts, default_reports

    if args.witness or args.bug_report_at_failure:
        scenarios = [_with_evidence_options(sc, args) for sc in scenarios]
    from stress.cycles import ALLOW_SUSPEND_ENV, preflight

    if args.allow_suspend:
        os.environ[ALLOW_SUSPEND_ENV] = "1"
    for sc in scenarios:      # a cycle this machine cannot do: one line, before anything runs
        preflight(sc, str(scenario_path))
    artifacts = Path(args.out) if args.out else default_artifacts()
    reports = Path(args.reports) if args.reports else default_reports()
    progress = Progress.quiet() if args.quiet else Progress.for_stream(sys.stderr)
    codes = []
    for i, sc in enumerate(scenarios):
        if len(scenarios) > 1:
            progress.note(f"== run {i + 1}/{len(scenarios)}: {sc.name}")
        result = run_scenario(
            sc, scenario_path, artifacts=artifacts, reports=None if args.no_report else reports,
            resume_dir=resume_dir, progress=progress,
            report_options={"include_prompts": args.include_prompts,
                            "include_screenshots": args.include_screenshots,
                            "include_thumbnails": args.include_thumbnails,
                            "nvidia_bug_report": args.nvidia_bug_report})
        codes.append(result.exit_code)
        print_result(result, sys.stdout)
        if not args.no_history and result.status != "interrupted":
            from stress.history import history_location, try_record_run

            db = history_location(args.history, default=reports / "history.db" if args.reports else None)
            report_dir = None if args.no_report else reports / result.run_dir.name
            warning = try_record_run(result.run_dir, report_dir, db)
            if warning:
                result.warnings.append(warning)
        print_warnings(result)
        if result.exit_code == ExitCode.INTERRUPTED:
            break
    # When several runs (a matrix) end differently, the exit code is the most important one.
    return most_severe(codes)


def print_result(result, out: TextIO) -> None:
    """What a finished run prints: where it is, its verdict and why, where its report is."""
    v = result.verdict or {}
    print(f"run:     {result.run_dir}  ({result.status})", file=out)
    print(f"verdict: {v.get('verdict')}  (exit {result.exit_code})", file=out)
    for reason in v.get("reasons", [])[:10]:
        print(f"  - {reason}", file=out)
    if result.report:
        print(f"report:  {result.report.get('report_html')}", file=out)
        if result.report.get("bundle"):
            print(f"bundle:  {result.report['bundle']}", file=out)


def print_warnings(result) -> None:
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)


def _with_evidence_options(sc, args: argparse.Namespace):
    """The scenario with --witness / --bug-report-at-failure applied to its monitors section."""
    update: dict = {}
    if args.witness:
        from stress.witness import parse_address

        parse_address(args.witness)          # one clear line for a bad address, before anything runs
        update["witness"] = args.witness
    if args.bug_report_at_failure:
        update["bug_report_at_failure"] = True
    return sc.model_copy(update={"monitors": sc.monitors.model_copy(update=update)})
