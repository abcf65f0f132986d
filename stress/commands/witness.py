"""``gpu-stress witness --listen HOST:PORT``: keep the journal of runs on other machines and record
when their host stops responding (docs/witness.md)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from stress.errors import ExitCode, StressError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("witness", help="receive heartbeats and journals of runs started with --witness",
                       description="Listen for runs started with 'gpu-stress run --witness HOST:PORT' on other "
                                   "machines; keep their journal in OUT/<run-id>/journal.jsonl and record in "
                                   "OUT/<run-id>/witness.jsonl when a host stops responding.")
    p.add_argument("--listen", required=True, metavar="HOST:PORT",
                   help="address to listen on (port 0: any free port, printed on the first line)")
    p.add_argument("--out", default="witness", help="folder for what is received (default: witness)")
    p.add_argument("--misses", type=int, default=3,
                   help="heartbeat periods of silence before 'host stopped responding' (default: 3)")
    p.set_defaults(func=witness_command)


def witness_command(args: argparse.Namespace) -> int:
    from stress.witness import WitnessServer, parse_address

    host, port = parse_address(args.listen)
    if args.misses < 1:
        raise StressError(f"--misses {args.misses}: give 1 or more heartbeat periods")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StressError(f"--out {out}: cannot create it ({exc.strerror})") from None

    def on_note(run_id: str, rec: dict) -> None:
        what = rec.get("message") or rec["ev"].replace("_", " ")
        print(f"{run_id}: {what}", flush=True)

    try:
        server = WitnessServer((host, port), out, misses=args.misses, on_note=on_note)
    except OSError as exc:
        raise StressError(f"--listen {args.listen}: cannot listen there ({exc.strerror or exc})",
                          ExitCode.ENVIRONMENT) from None
    bound = server.server_address
    print(f"listening on {bound[0]}:{bound[1]}, writing to {out}", flush=True)
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print("witness stopped", file=sys.stderr)
    return int(ExitCode.INTERRUPTED) if stop.is_set() else int(ExitCode.OK)
