"""Preflight for the runner, in a subprocess (the supervisor never imports torch):

    python -m stress.memory.preflight_cli --scenario RESOLVED.json --base-dir DIR [--gpu-memory SIZE]

prints one JSON object: ``{"gpu": {...}, "resolutions": [{"width", "height", "fits",
"predicted_peak", "required", "peak_stage"}]}``, or ``{"gpu": {...}, "resolutions": [], "reason": ...}``
when no GPU memory figure is known (no --gpu-memory and no NVML)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stress-preflight")
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--base-dir", required=True)
    ap.add_argument("--gpu-memory", default=None)
    args = ap.parse_args(argv)
    from stress.proc import die_with_parent

    die_with_parent()  # preexec_fn is unsafe in the threaded supervisor: the child asks the kernel itself
    from stress.memory import preflight
    from stress.memory.gpu import resolve_gpu_memory
    from stress.scenario import Scenario

    sc = Scenario.model_validate(json.loads(Path(args.scenario).read_text(encoding="utf-8")))
    gpu = resolve_gpu_memory(args.gpu_memory)
    if gpu.available is None:
        print(json.dumps({"gpu": gpu.as_dict(), "resolutions": [],
                          "reason": f"no GPU memory figure ({gpu.source}); set session.gpu_memory"}))
        return 0
    res = preflight(sc, gpu.available, base_dir=Path(args.base_dir))
    print(json.dumps({"gpu": gpu.as_dict(),
                      "resolutions": [dict(width=w, height=h, **v) for (w, h), v in sorted(res.items())]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
