"""Probe child process: ``python -m stress.probes.child REQUEST.json``.

The supervisor (``stress.probes.phases``) starts one child per phase visit and probe kind. The child
runs the requested repetitions one after another and writes one JSON line per result on its
*original* stdout, which is kept for results only: file descriptor 1 is pointed at stderr so that
nothing a library prints can corrupt the result stream. The first line (``{"ready": ...}``) says the
imports are done. A hung X call or a crash here only costs this process; the supervisor times it out
or reads its stderr.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from stress.probes.config import ProbesConfig

MODULES = {"screenshot": "stress.probes.screenshot", "decode": "stress.probes.decode",
           "display": "stress.probes.display", "display-wayland": "stress.probes.display_wayland",
           "viewer": "stress.probes.viewer"}


def main(argv: list[str]) -> int:
    from stress.proc import die_with_parent

    die_with_parent()  # a probe must not outlive the supervisor that waits for it
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(obj: dict) -> None:
        out.write(json.dumps(obj, default=str, allow_nan=False) + "\n")
        out.flush()

    if len(argv) != 1:
        print("usage: python -m stress.probes.child REQUEST.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        req = json.load(fh)
    kind = req["kind"]
    module = importlib.import_module(MODULES[kind])
    from stress.probes.common import ProbeContext, result

    config = ProbesConfig.model_validate(req["config"])
    emit({"ready": True, "pid": os.getpid()})
    for rep in req["reps"]:
        ctx = ProbeContext(phase=req["phase"], visit=req["visit"], rep=rep, config=config,
                           run_dir=Path(req["run_dir"]), images=req["images"], session=req["session"],
                           kind=kind, started=time.monotonic())
        try:
            res = module.probe(ctx)
        except Exception as exc:  # a bug or an unforeseen failure: recorded as "error", never lost
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            res = result("error", reason=f"{type(exc).__name__}: {exc}"[:300],
                         traceback_tail=tb[-1500:])
        try:
            emit({"rep": rep, **res})
        except ValueError:  # NaN in a metric: keep the result, drop the numbers
            emit({"rep": rep, "status": res["status"], "latency_s": None, "reason": res.get("reason"),
                  "metrics": {"dropped": "metrics were not valid JSON"}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
