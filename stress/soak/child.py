"""The child of one soak iteration: ``python -m stress.soak --state DIR --slot K --out FOLDER``."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from stress.proc import die_with_parent
from stress.soak.state import STATE_FILE, SoakHarnessError, read_config


def _term_with_parent() -> None:
    """Linux: get SIGTERM when the soak dies, so its run records an interruption and stops."""
    die_with_parent(signal.SIGTERM)


def iteration_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.soak", description="one soak iteration (internal)")
    ap.add_argument("--state", required=True)
    ap.add_argument("--slot", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reports", required=True)
    ap.add_argument("--resume")
    args = ap.parse_args(argv)
    _term_with_parent()

    def _interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001 - before the runner installs its own
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    from stress.cli import guarded

    return guarded(lambda: _iteration(args))


def _iteration(args: argparse.Namespace) -> int:
    from stress.progress import Progress
    from stress.runner import load_resumable, run_scenario
    from stress.scenario import Scenario

    cfg = read_config(Path(args.state))
    entry = cfg["scenarios"][args.slot]
    resume = Path(args.resume) if args.resume else None
    try:
        sc = load_resumable(resume) if resume else Scenario.model_validate(entry["resolved"])
    except ValueError as exc:  # pydantic's ValidationError: soak.json was edited or damaged
        raise SoakHarnessError(f"{args.state}/{STATE_FILE}: scenario {entry.get('name')!r} cannot be "
                               f"read back ({str(exc).splitlines()[0]})") from None
    result = run_scenario(sc, Path(entry["source"]), artifacts=Path(args.out), reports=Path(args.reports),
                          resume_dir=resume, progress=Progress.for_stream(sys.stderr),
                          report_options=cfg.get("report_options") or None)
    from stress.commands.run import print_result, print_warnings

    print_result(result, sys.stderr)
    print_warnings(result)
    return int(result.exit_code)


