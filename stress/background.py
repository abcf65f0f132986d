"""Work that can run beside the rest, in a forked child process (a machine has 2+ cores): the report's
journal copy and half its charts, the plan's prompt count and its traces of half its resolutions.

``Background(fn)`` forks; the child runs ``fn()`` and writes its result (bytes, or a picklable value)
into a file the parent reads back with ``result()``. Nothing else is shared: the child never touches
the journal being read, the run directory or the parent's open files, and leaves with ``os._exit``
(no atexit handlers, no buffered output flushed twice).

It forks only when that is safe: a POSIX system and no other thread in the process (a thread holding a
lock at the moment of the fork would leave that lock held forever in the child). Otherwise, or when the
fork fails, ``fn`` runs in the caller when ``result()`` is asked for: the same result, only later.
A child that fails or dies gives the same fallback, so a report never depends on the child.
"""
from __future__ import annotations

import gc
import os
import pickle
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

CHILD_TIMEOUT_S = 300.0
_alive = 0   # children not yet reaped: the heap stays frozen (gc.freeze) while any runs


def can_fork() -> bool:
    return hasattr(os, "fork") and threading.active_count() == 1 and os.environ.get("STRESS_FORK", "1") != "0"


class Background:
    """``fn()`` computed beside the caller; ``result()`` is its value (computed here if need be)."""

    def __init__(self, fn: Callable[[], Any], *, scratch: Path | None = None,
                 in_child: Callable[[], None] | None = None) -> None:
        """``in_child``: run in the forked child before ``fn`` (never in the caller's fallback)."""
        self.fn = fn
        self.pid: int | None = None
        self.path: Path | None = None
        self._done = False
        self._value: Any = None
        if not can_fork():
            return
        try:
            fd, name = tempfile.mkstemp(prefix=".stress-report-", dir=scratch)
        except OSError:
            try:
                fd, name = tempfile.mkstemp(prefix=".stress-report-")
            except OSError:
                return
        os.close(fd)
        self.path = Path(name)
        global _alive
        # Objects that exist now are left out of the cyclic GC's scans in both processes, so neither
        # writes to every object's header and copies every page of the shared heap.
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            self._discard()
            if not _alive:
                gc.unfreeze()
            return
        if pid == 0:   # the child
            gc.disable()   # short-lived: nothing to collect, no page copied for it
            code = 1
            try:
                from stress.proc import die_with_parent
                import signal
                die_with_parent()                   # the parent stopped waiting for good: so does the child
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                if in_child is not None:
                    in_child()
                value = fn()
                with open(name, "wb") as fh:
                    pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
                code = 0
            except BaseException:  # noqa: BLE001 - the parent computes it again; nothing to report here
                code = 1
            finally:
                os._exit(code)
        self.pid = pid
        _alive += 1

    def _discard(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
            self.path = None

    def _wait(self) -> bool:
        global _alive
        if self.pid is None:
            return False
        pid, self.pid = self.pid, None
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return False
        finally:
            _alive -= 1
            if not _alive:
                gc.unfreeze()
        return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

    def result(self) -> Any:
        if self._done:
            return self._value
        ok = self._wait()
        value = None
        if ok and self.path is not None:
            try:
                with open(self.path, "rb") as fh:
                    value = pickle.load(fh)
            except (OSError, EOFError, pickle.UnpicklingError):
                ok = False
        self._discard()
        if not ok:
            value = self.fn()
        self._done, self._value = True, value
        return value

    def cancel(self) -> None:
        """Stop the child (the caller gave up on the result) and leave nothing behind."""
        if self.pid is not None:
            try:
                os.kill(self.pid, 9)
            except OSError:
                pass
            self._wait()
        self._discard()
        self._done = True
