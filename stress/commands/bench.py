"""``gpu-stress bench SCENARIO``: optimization presets side by side (images/min, s/step, peak memory)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stress.errors import ExitCode, StressError


def _ints(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (got {text!r})") from None
    if any(v < 1 or v > 64 for v in vals):
        raise argparse.ArgumentTypeError(f"batch sizes must be in 1..64 (got {text!r})")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    from stress.memory.bench import PRESETS

    p = sub.add_parser("bench", help="compare optimization presets on a scenario by running them",
                       description="Run the scenario once per preset (and batch size), several times, through "
                                   "the real supervisor and worker, and compare images/min, s/step and peak "
                                   f"memory. Presets: {', '.join(PRESETS)}.")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--presets", help="comma-separated presets (default: all)")
    p.add_argument("--batch-sizes", type=_ints, default=[], metavar="N,N",
                   help="also run fp16+sdpa at these batch sizes")
    p.add_argument("--repeat", type=int, default=3, help="runs per preset (default 3)")
    p.add_argument("--images", type=int, default=4, help="images per run (default 4)")
    p.add_argument("--warmup", type=int, default=1, help="images per run left out of the timings (default 1)")
    p.add_argument("--out", default="artifacts/bench", help="folder for the runs (default artifacts/bench)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    from stress.memory.bench import as_json, presets_for, render, run_bench
    from stress.scenario import load_scenario

    if not 1 <= args.repeat <= 100:
        raise StressError(f"--repeat must be in 1..100 (got {args.repeat})")
    if not 1 <= args.images <= 10000 or not 0 <= args.warmup < args.images:
        raise StressError("--images must be >= 1 and --warmup in 0..images-1")
    path = Path(args.scenario)
    sc = load_scenario(path)
    names = [n.strip() for n in args.presets.split(",") if n.strip()] if args.presets else None
    presets = presets_for(names, args.batch_sizes)

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"bench: {msg}", file=sys.stderr, flush=True)

    results = run_bench(sc, path, presets=presets, repeat=args.repeat, images=args.images, warmup=args.warmup,
                        out=Path(args.out), say=say)
    print(json.dumps(as_json(results), indent=1) if args.json else render(results), end="\n" if args.json else "")
    # A run with no image at all (the models could not load, e.g. torch missing) failed too.
    failed = any(m.failed or not m.ok for r in results for m in r.runs)
    return int(ExitCode.WORKLOAD_ERROR if failed else ExitCode.OK)
