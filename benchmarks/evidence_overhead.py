"""Cost of the evidence wrapper and the witness on the journal, side by side in one process.

Appends N journal events (without fsync unless --fsync: the run fsyncs, but a shared disk's fsync
time varies tenfold and hides the CPU cost) three ways, interleaved over R rounds so machine
noise hits all three alike: the plain Journal; the EvidenceJournal with the failure-capture listener;
the same plus a WitnessClient sending every line to a WitnessServer on 127.0.0.1. Prints the median
seconds per 1000 events and the ratios to the plain journal, and checks the witness got every line.

    PYTHONPATH=. python benchmarks/evidence_overhead.py [N] [ROUNDS] [--fsync]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from stress.evidence import EvidenceJournal
from stress.failure_capture import FailureCapture
from stress.journal import Journal
from stress.witness import WitnessClient, WitnessServer


def one(kind: str, root: Path, n: int, addr: str | None, fsync: bool) -> float:
    d = Path(tempfile.mkdtemp(dir=root))
    j = Journal(d / "journal.jsonl", fsync=fsync)
    client = None
    target = j
    if kind != "plain":
        ej = EvidenceJournal(j, d)
        cap = FailureCapture(d, ej.append, journal_path=d / "journal.jsonl", display_processes=lambda: [])
        ej.listeners.append(cap.observe)
        if kind == "witness":
            client = WitnessClient(addr, d / "journal.jsonl", d.name, period=0.5)
            ej.listeners.append(lambda ev, rec: client.notify())
            client.start()
        target = ej
    t0 = time.perf_counter()
    for i in range(n):
        target.append("nvml", gpu=0, mu=900 << 20, mf=23 << 30, b1u=12 << 20, ug=97, tc=71, pw=351.2, i=i)
    dt = time.perf_counter() - t0
    if client:
        client.stop(10)
    j.close()
    if kind == "witness":
        copy = root / "witness" / d.name / "journal.jsonl"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not copy.exists() or copy.stat().st_size < (d / "journal.jsonl").stat().st_size):
            time.sleep(0.05)
        assert copy.read_bytes() == (d / "journal.jsonl").read_bytes(), "the witness lost lines"
    return dt


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    fsync = "--fsync" in sys.argv      # default: no fsync, to see the CPU cost without the disk's noise
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        srv = WitnessServer(("127.0.0.1", 0), root / "witness")
        th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        th.start()
        addr = f"127.0.0.1:{srv.server_address[1]}"
        times: dict[str, list[float]] = {"plain": [], "evidence": [], "witness": []}
        for _ in range(rounds):
            for kind in times:
                times[kind].append(one(kind, root, n, addr, fsync))
        srv.shutdown()
        srv.server_close()
    base = statistics.median(times["plain"])
    for kind, ts in times.items():
        med = statistics.median(ts)
        print(f"{kind:9s} {med / n * 1e6:8.1f} us/event  ratio {med / base:5.2f}  "
              f"(min {min(ts):.3f}s max {max(ts):.3f}s over {rounds} rounds of {n})")


if __name__ == "__main__":
    main()
