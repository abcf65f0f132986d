"""Small process helpers shared by the supervisor, the worker, probes, the soak and the planner."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)


def signame(num: int) -> str:
    """``SIGSEGV`` for 11; the number itself for real-time signals, which have no name."""
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def describe_returncode(rc: int | None) -> str:
    if rc is None:
        return "still running"
    return f"signal {signame(-rc)}" if rc < 0 else f"exit status {rc}"


def child_env(extra: dict | None = None, *, base: dict | None = None) -> dict:
    """The environment for a ``python -m stress...`` child: ``base`` (default: this process's) with
    this source tree first on PYTHONPATH, so a child imports the same stress as its parent, installed
    or not."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent dies (PR_SET_PDEATHSIG),
    so a lost supervisor never leaves children holding the GPU or the display.

    Called by the child itself at start (preexec_fn is unsafe in a threaded parent). The kernel ties
    this to the parent *thread* that forked the child: spawn such children from a long-lived thread
    (the supervisor spawns them from its main thread)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os.kill(os.getpid(), int(sig))
    except (OSError, AttributeError):
        pass


def is_stress_process(pid: int) -> bool:
    """Whether ``pid`` is a live process of this suite (a run's supervisor that may still be going)."""
    try:
        import psutil

        return any("stress" in part for part in psutil.Process(pid).cmdline())
    except Exception:  # noqa: BLE001 - gone, or not ours to inspect: not a live run
        return False


def tail_file(path: str | os.PathLike, limit: int = 2000) -> str:
    """The last ``limit`` bytes of a log file, decoded; "" when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


class Interrupt(KeyboardInterrupt):
    pass


class SignalGuard:
    """SIGINT, SIGTERM and SIGHUP stop the run (as KeyboardInterrupt) while it works; once it is
    writing its record (``critical``), they are only noted, so a second Ctrl-C or a service manager's
    SIGTERM can never leave a run without its verdict and run.json."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.critical = False
        self.received: int | None = None
        self._prev: dict = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.received = signum
        if not self.critical:
            raise Interrupt()

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._prev[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._prev.items():
            signal.signal(sig, handler)
