"""``gpu-stress validate FILE...``: check scenario files without running anything."""
from __future__ import annotations

import argparse
import sys

from stress.errors import ExitCode, ScenarioError, printable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check scenario files without running anything")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=validate_command)


def validate_command(args: argparse.Namespace) -> int:
    from stress.plan import accounting
    from stress.scenario import load_scenarios

    bad = 0
    for path in args.files:
        try:
            scenarios = load_scenarios(path)
        except ScenarioError as exc:
            bad += 1
            for line in exc.lines():
                print(f"error: {line}", file=sys.stderr)
            continue
        for sc in scenarios:
            acc = accounting(sc)
            print(f"ok: {printable(path)}: {printable(sc.name)}: {acc['images']} images, {acc['base_steps_per_image']}+"
                  f"{acc['refiner_steps_per_image']} steps, {len(sc.resolutions)} resolutions, "
                  f"{acc['unet_evaluations']} UNet evaluations")
    return int(ExitCode.BAD_INPUT if bad else ExitCode.OK)
