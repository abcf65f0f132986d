"""The slow display path: the display server stopped for S ms of every P ms (SIGSTOP / SIGCONT), as a
server blocked in the driver for part of every frame (waiting for a flip, for video memory) is.

Driven by a tiny helper process (:func:`run_windows`, ``python -m stress.selftest.stopper``), not a thread of selftest: a thread would share the
interpreter lock with the trial's journal follower (and with the other trials' with ``--jobs``), and
a late thread lengthens the *run* windows, which errs toward "fast". The helper only sleeps between
two signals, at the niceness selftest runs at (no privilege asked), and uses no CPU in between: it
adds no CPU pressure of its own, which the verdict's host rule would read as a busier host. A late
wake-up lengthens a stop (the slow direction) or a run window (toward "fast"); how long the server
really ran and stood still is measured by the helper and reported (:meth:`StopWindows.stop` -> the
trial's note).

Signals go through a pidfd opened on the server selftest started (``os.pidfd_open``): they reach that
process and no other, even if its pid were reused. The helper resumes the server and exits when its
stdin closes, when the server is gone, when its parent dies, or on SIGTERM.

Why windows this short (docs/selftest.md, benchmarks/bench_slow_path.py ``--stop``): a probe's timed
interval (one capture, or mapping until the capture matches: about a millisecond on Xvfb) begins right
after a round trip the server has just answered, i.e. while the server is running. With run windows
longer than that interval (the first duty cycles ran 25, 12.5 or 5 ms of each 50 ms), almost every timed interval
fits inside one run window and measures no slowdown. With run windows of about a millisecond, every
timed interval crosses at least one stop.
"""
from __future__ import annotations

import json
import select
import subprocess
import sys

def run_windows(pid: int, stop_ms: float, period_ms: float) -> int:
    """The helper's loop (``python -m stress.selftest.stopper PID STOP_MS PERIOD_MS``): print "ready",
    wait for "go" on stdin, then stop and resume ``pid`` until stdin closes, the server is gone or the
    parent dies; resume it, and print what it measured as one JSON line."""
    import os
    import signal
    import time

    stop_s, period_s = stop_ms / 1000, period_ms / 1000
    run_s = max(0.0, period_s - stop_s)
    fd = os.pidfd_open(pid)
    try:                                  # wake-ups to the microsecond, not the default 50 us of slack
        import ctypes

        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)     # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    print("ready", flush=True)
    ppid = os.getppid()
    if not sys.stdin.readline():          # closed before "go": nothing was stopped
        return 0
    runs: list[float] = []
    stops: list[float] = []
    t_go = time.monotonic()
    t_cont = t_go
    try:
        while os.getppid() == ppid:
            t = time.monotonic()
            signal.pidfd_send_signal(fd, signal.SIGSTOP)
            if runs or stops:
                runs.append(t - t_cont)
            if select.select([sys.stdin], [], [], stop_s)[0]:      # EOF on stdin: the phase is over
                stops.append(time.monotonic() - t)               # a stop cut short still was one
                break
            t_cont = time.monotonic()
            signal.pidfd_send_signal(fd, signal.SIGCONT)
            stops.append(t_cont - t)
            time.sleep(run_s)
    except ProcessLookupError:            # the server is gone
        pass
    finally:
        try:
            signal.pidfd_send_signal(fd, signal.SIGCONT)
        except OSError:
            pass
        wall = time.monotonic() - t_go

        def q(v: list[float], p: float) -> float | None:
            v = sorted(v)
            return round(v[min(len(v) - 1, int(p * len(v)))] * 1000, 2) if v else None

        print(json.dumps({"cycles": len(stops), "wall_s": round(wall, 2),
                          "stopped_share": round(sum(stops) / wall, 3) if wall > 0 else None,
                          "stop_ms": [q(stops, 0.5), q(stops, 0.95)], "run_ms": [q(runs, 0.5), q(runs, 0.95)]}),
              flush=True)
    return 0


class StopWindows:
    """The helper for one server: :meth:`arm` (start it, waiting), :meth:`go` (the stop windows
    begin), :meth:`stop` (the server resumed, the helper gone; returns its measurement). Idempotent."""

    def __init__(self, pid: int, stop_ms: float, period_ms: float, env: dict[str, str] | None = None):
        if not 0 < stop_ms < period_ms:
            raise ValueError(f"stop window {stop_ms:g} ms must be within the period {period_ms:g} ms")
        self.pid, self.stop_ms, self.period_ms, self.env = pid, stop_ms, period_ms, env
        self.proc: subprocess.Popen | None = None
        self.stats: dict | None = None

    def arm(self, timeout: float = 15.0) -> "StopWindows":
        if self.proc is None:
            from stress.proc import child_env

            self.proc = subprocess.Popen([sys.executable, "-m", "stress.selftest.stopper", str(self.pid),
                                          str(self.stop_ms), str(self.period_ms)],
                                         env=child_env(base=self.env), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         start_new_session=True)
            assert self.proc.stdout is not None
            ready = select.select([self.proc.stdout], [], [], timeout)[0]
            if not ready or self.proc.stdout.readline().strip() != "ready":
                proc, self.proc = self.proc, None
                proc.kill()
                err = (proc.communicate()[1] or "").strip().splitlines()[-1:]
                raise RuntimeError(f"the stop-window helper did not start: {err[0] if err else 'no ready line'}")
        return self

    def go(self) -> None:
        self.arm()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> dict | None:
        p, self.proc = self.proc, None
        if p is None:
            return self.stats
        try:
            out, _ = p.communicate(timeout=5)      # closes its stdin: the helper resumes the server, exits
        except (subprocess.TimeoutExpired, OSError):
            p.kill()
            out, _ = p.communicate()
        line = (out or "").strip().splitlines()[-1:]
        try:
            self.stats = json.loads(line[0]) if line else None
        except ValueError:
            self.stats = None
        return self.stats

    def note(self) -> str:
        """One line: what the server really had (the helper's own measurement)."""
        s = self.stats
        if not s or not s.get("cycles"):
            return f"stop windows {self.stop_ms:g} of {self.period_ms:g} ms: none ran"
        return (f"stopped {self.stop_ms:g} of every {self.period_ms:g} ms: {s['stopped_share']:.0%} of {s['wall_s']} s "
                f"stopped, {s['cycles']} stops, stop ms median/p95 {s['stop_ms'][0]}/{s['stop_ms'][1]}, "
                f"run ms {s['run_ms'][0]}/{s['run_ms'][1]}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m stress.selftest.stopper PID STOP_MS PERIOD_MS")
    sys.exit(run_windows(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])))
