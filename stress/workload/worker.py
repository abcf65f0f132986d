"""Worker process: holds the GPU (torch, diffusers) and runs the workload for the supervisor.

Protocol (pyperf-style: stdout and stderr stay free for logs):
- commands arrive on stdin, one JSON object per line:
  ``{"cmd": "generate", "job_id": N, "job": {...}}``, ``{"cmd": "reload"}``,
  ``{"cmd": "exit"}``;
- messages go to the file descriptor ``--msg-fd``, one JSON object per line:
  ``hello``, ``ready`` (or ``load_failed``), ``event`` (a journal event to relay), ``progress`` (a stage
  started or denoising steps ended: ``stage index step total``; shown on the terminal, journalled at
  most every few seconds by the supervisor), ``done`` (records of one job), ``failed`` (a job that
  raised: ``kind`` is ``oom`` or ``error``), ``bye``.

A crash, a hang or a kill of this process is detected by the supervisor, not here. Injected faults
(scenario ``faults:``) are applied here, as the real ones would happen: in this process.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from stress.proc import die_with_parent


class Channel:
    """Line-oriented JSON messages to the supervisor; thread-safe."""

    def __init__(self, fd: int):
        self._fh = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, msg: str, **fields: Any) -> None:
        line = json.dumps({"msg": msg, "t": time.time(), **fields}, default=str, separators=(",", ":"))
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()


def _apply_fault(kind: str) -> None:
    """Make the fault happen for real in this process."""
    if kind == "crash":
        # Flush logs first so the supervisor's stderr tail shows why.
        print("stress: injected fault: crash (SIGSEGV)", file=sys.stderr, flush=True)
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
    elif kind == "exit":
        print("stress: injected fault: exit 3", file=sys.stderr, flush=True)
        os._exit(3)
    elif kind == "hang":
        print("stress: injected fault: hang", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    elif kind == "oom":
        import torch

        raise torch.OutOfMemoryError("injected fault: CUDA out of memory. Tried to allocate 20.00 GiB")
    elif kind == "error":
        raise RuntimeError("injected fault: error")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="stress-worker")
    ap.add_argument("--scenario", required=True, help="resolved scenario JSON")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--base-dir", required=True)
    ap.add_argument("--msg-fd", type=int, required=True)
    ap.add_argument("--worker", type=int, default=0)
    args = ap.parse_args(argv)

    # The supervisor owns Ctrl-C; this process is in its own session and is told to exit instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()  # a lost supervisor must not leave an orphan holding the GPU
    chan = Channel(args.msg_fd)
    chan.send("hello", pid=os.getpid(), worker=args.worker)

    from stress.scenario import Scenario

    scenario = Scenario.model_validate(json.loads(Path(args.scenario).read_text(encoding="utf-8")))
    faults = {(f.image, f.kind) for f in scenario.faults}

    def emit(ev: str, fields: dict) -> None:
        chan.send("event", ev=ev, fields=fields)

    try:
        from stress.workload.engine import WorkloadSession

        session = WorkloadSession(scenario, Path(args.run_dir), emit, base_dir=Path(args.base_dir),
                                  progress=lambda p: chan.send("progress", **p))
        info = session.load()
        import torch

        info.setdefault("torch", torch.__version__)
        info.setdefault("cuda", torch.version.cuda)
        chan.send("ready", info=info)
    except Exception as exc:  # noqa: BLE001 - reported to the supervisor as a load failure
        chan.send("load_failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return 2

    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        kind = cmd.get("cmd")
        if kind == "exit":
            break
        if kind == "reload":
            t0 = time.perf_counter()
            try:
                session.reload_models()
                chan.send("reloaded", s=round(time.perf_counter() - t0, 4))
            except Exception as exc:  # noqa: BLE001 - the supervisor replaces this worker
                chan.send("reload_failed", error=f"{type(exc).__name__}: {exc}", s=round(time.perf_counter() - t0, 4))
            continue
        if kind != "generate":
            chan.send("failed", job_id=cmd.get("job_id"), kind="error", error=f"unknown command {kind!r}")
            continue
        job_id, job = cmd["job_id"], cmd["job"]
        try:
            for img in job["images"]:
                for fk in ("crash", "exit", "hang", "oom", "error"):
                    if (img["index"], fk) in faults:
                        _apply_fault(fk)
            records = session.generate(job)
            chan.send("done", job_id=job_id, records=records)
        except Exception as exc:  # noqa: BLE001 - every failure of a job is a result
            is_oom = type(exc).__name__ in ("OutOfMemoryError", "OutOfMemoryError_") or "out of memory" in str(exc)
            try:
                session.free_memory()
            except Exception:  # noqa: BLE001
                pass
            chan.send("failed", job_id=job_id, kind="oom" if is_oom else "error",
                      error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:])
    try:
        session.close()
    finally:
        chan.send("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
