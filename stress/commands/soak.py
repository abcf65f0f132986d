"""``gpu-stress soak SCENARIO...``: run scenarios again and again; survive, remember, measure incidence."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from stress.errors import StressError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "soak", help="run scenarios repeatedly (a night, N times) and measure how often the regression comes back",
        description="Run the scenarios in turn, each iteration a full run with its own run directory and report, "
                    "until --iterations or --duration is reached or a stop rule fires. The soak keeps its state in "
                    "--state; rerun the same command (or --resume STATE) after a kill or a reboot to carry on. "
                    "See docs/soak.md.")
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario YAML files (matrices expand)")
    p.add_argument("--resume", metavar="STATE_DIR", help="continue the soak kept in STATE_DIR")
    p.add_argument("--state", metavar="DIR", help="state directory (default: artifacts/soak-<scenario name>)")
    p.add_argument("--iterations", type=int, metavar="N", help="stop after N finished iterations")
    p.add_argument("--duration", metavar="TIME", help="start no iteration after this long from the soak's start "
                                                      "(e.g. 8h, 90m)")
    p.add_argument("--stop-on", choices=("reproduced", "never"), default=None,
                   help="stop at the first 'reproduced' verdict (default), or never (to measure incidence)")
    p.add_argument("--keep", type=int, metavar="N", help="keep the last N run directories whole (default 5); "
                                                         "thin older ones to journal, run.json and logs")
    p.add_argument("--min-free-disk", metavar="SIZE", help="stop cleanly (exit 13) below this much free disk "
                                                            "(default 5GiB; 0 disables)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML here (after every iteration)")
    p.add_argument("--history", metavar="URL_OR_PATH", help="history: an SQLite file or a URL (sqlite:///PATH, postgresql://USER@HOST/DB); default: $STRESS_HISTORY_URL, else <reports>/history.db")
    p.add_argument("--reports", metavar="DIR", help="folder for reports (default: reports)")
    p.add_argument("--interrupted", choices=("rerun", "resume"), default=None,
                   help="an iteration cut short (kill, reboot) is run again from scratch (default) or resumed")
    p.add_argument("--max-failures", type=int, metavar="N",
                   help="stop (exit 13) after N attempts in a row that could not run (default 3)")
    p.add_argument("--iteration-timeout", metavar="TIME", help="stop a run that takes longer than this "
                                                               "(its supervisor is stuck); default: none")
    p.add_argument("--include-prompts", action="store_true", help="keep prompts in reports (default: hashed)")
    p.add_argument("--include-screenshots", action="store_true", help="put desktop screenshots in the bundles")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the soak's summary as JSON at the end")
    p.set_defaults(func=soak_command)


def _options(args: argparse.Namespace) -> dict:
    from stress.scenario import parse_duration
    from stress.units import parse_size

    opts: dict = {}
    if args.iterations is not None:
        if args.iterations < 1:
            raise StressError(f"--iterations must be at least 1 (got {args.iterations})")
        opts["iterations"] = args.iterations
    for flag, key, value in (("--duration", "duration_s", args.duration),
                             ("--iteration-timeout", "iteration_timeout_s", args.iteration_timeout)):
        if value is not None:
            try:
                opts[key] = parse_duration(value)
            except ValueError as exc:
                raise StressError(f"{flag} {value!r}: {exc}") from None
    if args.keep is not None:
        if args.keep < 0:
            raise StressError(f"--keep must be 0 or more (got {args.keep})")
        opts["keep"] = args.keep
    if args.max_failures is not None:
        if args.max_failures < 1:
            raise StressError(f"--max-failures must be at least 1 (got {args.max_failures})")
        opts["max_failures"] = args.max_failures
    if args.min_free_disk is not None:
        opts["min_free_bytes"] = parse_size(args.min_free_disk)
    if args.junit:
        opts["junit"] = str(Path(args.junit).resolve())
    if args.history:
        from stress.history import history_location

        opts["history"] = history_location(args.history)
    opts["stop_on"] = args.stop_on
    opts["interrupted"] = args.interrupted
    opts["reports"] = str(Path(args.reports).resolve()) if args.reports else None
    if args.include_prompts or args.include_screenshots:
        opts["report_options"] = {"include_prompts": args.include_prompts,
                                  "include_screenshots": args.include_screenshots}
    return opts


def soak_command(args: argparse.Namespace) -> int:
    from stress.soak import Soak, prepare_state
    from stress.stats import describe_incidence

    if args.resume and args.scenarios:
        raise StressError("give scenario files (a new soak, or a rerun of one) or --resume STATE_DIR, not both")
    if args.resume and args.state and Path(args.resume) != Path(args.state):
        raise StressError("--resume and --state name different directories; give one")
    state = Path(args.resume or args.state) if (args.resume or args.state) else None
    files = [Path(f) for f in args.scenarios] or None
    for f in files or []:
        if not f.is_file():
            raise StressError(f"{f}: no such scenario file")
    state_dir, cfg, changes = prepare_state(state, files, _options(args))
    soak = Soak(state_dir, stream=None if args.quiet else sys.stderr, changes=changes)
    for key, (old, new) in changes.items():
        if key == "scenario_edited":
            soak.warnings.append(f"scenario file(s) changed since the soak started ({', '.join(old)}); {new}")
            print(f"warning: {soak.warnings[-1]}", file=sys.stderr)
        elif not args.quiet:
            print(f"soak: {key} changed from {old} to {new}", file=sys.stderr)
    result = soak.run()
    s = result.summary
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return result.exit_code
    print(f"soak:       {state_dir}  ({result.status}: {result.message})")
    counts = ", ".join(f"{k} {v}" for k, v in s["verdicts"].items()) or "none"
    print(f"iterations: {len(s['iterations'])} finished ({counts})")
    print(f"incidence:  {describe_incidence(s['incidence'])}")
    if len(s["incidence_by_scenario"]) > 1:
        for name, inc in s["incidence_by_scenario"].items():
            print(f"  {name}: {describe_incidence(inc)}")
    for intr in s["interruptions"]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(intr["t"])) if intr.get("t") else "?"
        print(f"interrupted: iteration {intr['iteration']} attempt {intr['attempt']} ({when}): {intr['reason']}")
    for it in s["iterations"]:
        if it["verdict"] == "reproduced":
            print(f"reproduced: iteration {it['iteration']}: {it['run_id']}  report: {it.get('report_dir')}")
    if cfg.get("junit"):
        print(f"junit:      {cfg['junit']}")
    if cfg.get("history"):
        from stress.history import display

        print(f"history:    {display(cfg['history'])}")
    print(f"exit:       {result.exit_code}")
    return result.exit_code
