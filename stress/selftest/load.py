"""Background load for the clean-run control: what a real desktop has going on while nothing is broken.

- one core busy (a spinning process),
- disk I/O (a process rewriting and fsyncing a 32 MiB file in 1 MiB chunks, in the trial's folder),
- a browser-like client on selftest's own display (``busy-window`` of stress.selftest.xwin, or of
  stress.selftest.wlwin on sway: redraws every 40 ms, unmapped and mapped again every 2 s).

Every process is started here and ended here, by its own handle.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stress.proc import child_env
from stress.selftest.xwin import BUSY_WINDOW, start_client

def spin() -> None:
    """One core busy."""
    while True:
        pass


def disk(path: str) -> None:
    """Rewrite and fsync a 32 MiB file in 1 MiB chunks, 20 ms apart, for ever."""
    import os
    import time

    chunk = os.urandom(1 << 20)
    while True:
        with open(path, "wb") as fh:
            for _ in range(32):
                fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(0.02)
        os.unlink(path)


def _own(*args: str) -> list[str]:
    return [sys.executable, "-m", "stress.selftest.load", *args]   # each part in its own process


class BackgroundLoad:
    def __init__(self, folder: Path, display_env: dict[str, str], clients: str = "stress.selftest.xwin"):
        self.folder, self.env, self.clients = folder, display_env, clients
        self.procs: list[subprocess.Popen] = []

    def start(self) -> "BackgroundLoad":
        quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
                 "start_new_session": True}
        env = child_env()
        self.procs.append(subprocess.Popen(_own("spin"), env=env, **quiet))
        self.procs.append(subprocess.Popen(_own("disk", str(self.folder / "disk-load.bin")), env=env, **quiet))
        self.procs.append(start_client(BUSY_WINDOW, [], self.env, module=self.clients))
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        try:
            (self.folder / "disk-load.bin").unlink()
        except OSError:
            pass

    def __enter__(self) -> "BackgroundLoad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["spin"]:
        spin()
    elif len(sys.argv) == 3 and sys.argv[1] == "disk":
        disk(sys.argv[2])
    else:
        sys.exit("usage: python -m stress.selftest.load spin | disk PATH")
