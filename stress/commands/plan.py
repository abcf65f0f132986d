"""``gpu-stress plan SCENARIO``: what a session will compute and whether it fits, before running it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stress.errors import ExitCode, StressError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="predict a scenario's workload and peak GPU memory per resolution (no GPU needed)",
        description="Workload accounting (latents, UNet evaluations, prompt chunks, attention sizes, FLOPs) "
                    "and the peak GPU memory per resolution, predicted by tracing the scenario's real "
                    "networks with fake tensors. See docs/plan.md.")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--gpu-memory", metavar="SIZE",
                   help="GPU memory the workload may use (e.g. 24GiB, 24GB, 12000MiB); default: asked from "
                        "NVML (total minus what other processes hold now)")
    p.add_argument("--no-detect", action="store_true", help="do not ask NVML for the GPU's memory")
    p.add_argument("--context-mib", type=float, metavar="MIB",
                   help="CUDA context + loaded kernels outside the allocator (default: an estimate, 512)")
    p.add_argument("--conv-workspace", type=float, metavar="FACTOR",
                   help="cuDNN workspace per convolution as a multiple of its input (default: an estimate, 1.0; "
                        "0 leaves it out)")
    p.add_argument("--traced-steps", type=int, default=1, metavar="N",
                   help="UNet steps to trace per model (default 1: every step allocates the same)")
    p.add_argument("--compare", metavar="RUN_DIR",
                   help="put the prediction next to what a run of this scenario measured (its journal's "
                        "allocator peaks per stage and NVML's device memory): the GPU validation table")
    p.add_argument("--fail-if-not-fits", action="store_true",
                   help=f"exit {int(ExitCode.WORKLOAD_ERROR)} when a resolution is predicted not to fit")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=plan_command, fast_exit=True)   # see stress.cli.entry


def _jsonable(measured: dict) -> dict:
    out = dict(measured)
    out["resolutions"] = [{"width": w, "height": h, **v} for (w, h), v in measured["resolutions"].items()]
    return out


def plan_command(args: argparse.Namespace) -> int:
    from stress.memory.gpu import resolve_gpu_memory
    from stress.scenario import load_scenarios

    path = Path(args.scenario)
    scenarios = load_scenarios(path)
    gpu = resolve_gpu_memory(args.gpu_memory, detect=not args.no_detect)
    if args.traced_steps < 1 or args.traced_steps > 50:
        raise StressError(f"--traced-steps must be in 1..50 (got {args.traced_steps})")
    for name, val in (("--context-mib", args.context_mib), ("--conv-workspace", args.conv_workspace)):
        if val is not None and val < 0:
            raise StressError(f"{name} must be >= 0 (got {val})")

    from stress.memory import make_plan, render_text
    from stress.memory.overhead import MiB, OverheadModel

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"plan: {msg}", file=sys.stderr, flush=True)

    plans = []
    for sc in scenarios:
        overhead = OverheadModel.for_gpu(
            gpu.compute_capability,
            context_bytes=None if args.context_mib is None else int(args.context_mib * MiB),
            conv_workspace_factor=args.conv_workspace,
            cudnn_benchmark=sc.optimizations.cudnn_benchmark)
        plans.append(make_plan(sc, path.parent, gpu=gpu, overhead=overhead, traced_steps=args.traced_steps,
                               progress=say))
    if args.compare:
        from stress.memory.measured import compare_text, measured_from_run

        measured = measured_from_run(Path(args.compare))
        if args.json:
            print(json.dumps({"plan": plans[0], "measured": _jsonable(measured)}, indent=1))
        else:
            print(render_text(plans[0]) + "\n" + compare_text(plans[0], measured), end="")
    elif args.json:
        print(json.dumps(plans[0] if len(plans) == 1 else plans, indent=1))
    else:
        print("\n".join(render_text(p) for p in plans), end="")
    if args.fail_if_not_fits and any(r["fits"] is False for p in plans for r in p["memory"]["resolutions"]):
        return int(ExitCode.WORKLOAD_ERROR)
    return int(ExitCode.OK)
