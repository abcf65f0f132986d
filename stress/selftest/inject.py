"""Injectors: one per fault class (stress.selftest.faults), each acting only on what selftest started
(its own X server, its own run directory, its own kernel-log and NVML stand-ins).

``start()`` when the chosen probe phase starts, ``stop()`` when it ends (or when the run is over):
both are idempotent and never raise for a process that is already gone.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stress.selftest.display import OwnDisplay, OwnSway
from stress.selftest.faults import FaultClass
from stress.selftest.stopper import StopWindows
from stress.selftest.xwin import OVERLAY, start_client, stop_client

STALL_S = 6.0           # longer than the selftest scenario's probe timeout (4 s): at least one probe times out
XID_LINE = ("NVRM: Xid (PCI:0000:01:00): 119, pid=1234, name=Xvfb, Timeout after 6s of waiting for RPC "
            "response from GPU0 GSP! Expected function 76 (GSP_RM_CONTROL) (0x20800a4c 0x4).")
MODESET_LINE = "nvidia-modeset: ERROR: GPU:0: Idling display engine timed out: 0x0000c67d:0:0:1128"


@dataclass
class Target:
    """What an injector may act on: all of it started by selftest for this trial."""

    display: OwnDisplay | OwnSway
    run_dir: Path | None
    kernel_log: Path            # followed by the run as its kernel log (STRESS_KERNEL_LOG_COMMAND)
    nvml_control: Path          # read by stress.selftest.fake_nvml (STRESS_SELFTEST_NVML_CONTROL)


class Injector:
    def __init__(self, fault: FaultClass, target: Target):
        self.fault, self.target = fault, target
        self.started = False
        self.stopped = False
        self.note = ""
        self._proc = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._windows: StopWindows | None = None

    # ---- the one entry point per class ----
    def arm(self) -> None:
        """Before the run: start what must already be running when the phase begins (the slow path's
        stop-window helper, waiting), so the fault is in effect from the phase's first probe."""
        if self.fault.stop and self._windows is None:
            self._windows = StopWindows(self.target.display.pid, *self.fault.stop).arm()

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        getattr(self, "_start_" + self.fault.name.split("-")[0])()

    def stop(self) -> None:
        if self._windows is not None:    # armed or stopping: ended either way, the server resumed
            self._windows.stop()
            if self.started:
                self.note = self._windows.note()
            self._windows = None
        if not self.started or self.stopped:
            return
        self.stopped = True
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._proc is not None:
            stop_client(self._proc)
        self.target.display.signal(signal.SIGCONT)

    # ---- classes ----
    def _start_stall(self) -> None:
        self.target.display.signal(signal.SIGSTOP)
        self._thread = threading.Thread(target=self._resume_after, args=(STALL_S,), daemon=True)
        self._thread.start()

    def _resume_after(self, s: float) -> None:
        if not self._halt.wait(s):
            self.target.display.signal(signal.SIGCONT)

    def _start_kill(self) -> None:
        self.target.display.kill()

    def _start_restart(self) -> None:
        self.target.display.kill()
        time.sleep(1.0)   # the host sampler (0.5 s) sees the server gone before the new one appears
        self.target.display.restart()
        self.note = f"restarted as pid {self.target.display.pid}"

    def _start_black(self) -> None:
        d = self.target.display
        self._proc = start_client(OVERLAY, ["black"], d.env(), module=d.clients)

    def _start_frozen(self) -> None:
        d = self.target.display
        self._proc = start_client(OVERLAY, ["frozen"], d.env(), module=d.clients)

    def _start_slow(self) -> None:
        self.arm()
        assert self._windows is not None
        self._windows.go()

    def _start_corrupt(self) -> None:
        out = (self.target.run_dir / "outputs") if self.target.run_dir else None
        files = sorted(p for p in out.iterdir() if p.is_file()) if out and out.is_dir() else []
        for p in files:
            corrupt_file(p, truncate=len(files) > 1 and p == files[-1])
        self.note = f"{len(files)} output(s) corrupted"

    def _start_xid(self) -> None:
        self._kernel_line(XID_LINE)

    def _start_modeset(self) -> None:
        self._kernel_line(MODESET_LINE)

    def _kernel_line(self, message: str) -> None:
        with open(self.target.kernel_log, "a", encoding="utf-8") as fh:
            fh.write(f"[{time.monotonic():12.6f}] {message}\n")

    def _start_gpu(self) -> None:
        tmp = self.target.nvml_control.with_suffix(".tmp")
        tmp.write_text("lost\n", encoding="utf-8")
        os.replace(tmp, self.target.nvml_control)


def corrupt_file(path: Path, *, truncate: bool = False) -> None:
    """Flip every bit of 64 bytes in the middle of the file (or cut it to half its size)."""
    data = bytearray(path.read_bytes())
    if truncate or len(data) < 256:
        data = data[: len(data) // 2]
    else:
        mid = len(data) // 2
        data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    path.write_bytes(bytes(data))
