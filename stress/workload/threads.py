"""CPU threads and OpenMP wait policy for the worker: a fair share of the cores actually free.

Tiny models are dominated by per-op overhead. With torch's default (one OpenMP thread per core, and
libgomp's spinning wait between parallel regions) a worker on a busy machine spends its time spinning
against the other processes and waiting for descheduled team members: measured 30-40x slower than
idle on a shared 2-core machine (issue 15; figures in docs/benchmarks.md, "Contention"). So:

- the supervisor starts the worker with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning
  between ops; :func:`worker_env`), unless the user set it;
- the worker asks for as many threads as there are cores free: the cores it may run on
  (``os.sched_getaffinity``) less the cores other processes keep busy *now* (``/proc/stat`` over
  0.3 s, this process's own CPU taken out: :func:`busy_elsewhere`), rounded, at least 1
  (:func:`choose`). The 1-minute load average, used before, lags by a minute: on an idle machine just
  after a job ended (the benchmark's own previous trial) it gave 1 thread of 2, and the idle image took
  1.5x as long (docs/benchmarks.md, "Contention"); it is now only the fallback where ``/proc/stat``
  cannot be read. ``STRESS_CPU_THREADS=N`` overrides it.

This module does not import torch: the supervisor side uses :func:`worker_env`.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Mapping

WAIT_POLICY = "PASSIVE"


def worker_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables the supervisor adds to the worker's environment (before torch loads there)."""
    environ = os.environ if environ is None else environ
    return {} if environ.get("OMP_WAIT_POLICY") else {"OMP_WAIT_POLICY": WAIT_POLICY}


def affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover
        return None


BUSY_WINDOW_S = 0.3


def _proc_stat() -> tuple[int, int] | None:
    """(all jiffies, idle + iowait jiffies) of the machine's aggregate ``cpu`` line."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            first = fh.readline().split()
        vals = [int(x) for x in first[1:]]
    except (OSError, ValueError):
        return None
    if first[:1] != ["cpu"] or len(vals) < 4:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user and nice]
    return sum(vals[:8]), vals[3] + (vals[4] if len(vals) > 4 else 0)


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def busy_elsewhere(window: float = BUSY_WINDOW_S, *, read_stat: Callable[[], tuple[int, int] | None] = _proc_stat,
                   own_cpu: Callable[[], float] = _own_cpu, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> float | None:
    """Cores kept busy by other processes over the next ``window`` seconds (niced ones too: with
    autogroup scheduling they compete as equals), this process's own CPU left out; None when
    ``/proc/stat`` cannot be read."""
    a, own0, t0 = read_stat(), own_cpu(), clock()
    if a is None:
        return None
    sleep(window)
    b, own1, t1 = read_stat(), own_cpu(), clock()
    if b is None or t1 <= t0:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy_s = ((b[0] - a[0]) - (b[1] - a[1])) / hz
    return max(0.0, (busy_s - (own1 - own0)) / (t1 - t0))


def choose(environ: Mapping[str, str] | None = None, *, cores: int | None = None,
           load: float | None = -1.0, busy: float | None = -1.0) -> tuple[int, str]:
    """``(threads, why)``. ``cores``/``busy``/``load`` default to this machine's now (``busy``: cores
    other processes keep busy, :func:`busy_elsewhere`; ``load``: the 1-minute load average, used only
    when ``busy`` is unknown); ``why`` is one line for ``worker_ready.cpu_threads_reason``. Raises
    ``ValueError`` for a bad ``STRESS_CPU_THREADS``."""
    environ = os.environ if environ is None else environ
    raw = environ.get("STRESS_CPU_THREADS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"STRESS_CPU_THREADS must be a positive integer (got {raw!r})")
        return n, "STRESS_CPU_THREADS"
    cores = affinity_cores() if cores is None else cores
    busy = busy_elsewhere() if busy == -1.0 else busy
    if busy is not None:
        free = max(1, min(cores, int(cores - busy + 0.5)))
        return free, (f"{cores} cores in this process's affinity, {busy:.1f} busy with other processes "
                      f"over {BUSY_WINDOW_S:g} s: {free} free")
    load = load_average() if load == -1.0 else load
    if load is None:
        return cores, f"{cores} cores in this process's affinity; load average unknown"
    free = max(1, min(cores, int(cores - load + 0.5)))
    return free, f"{cores} cores in this process's affinity, 1-min load {load:.1f}: {free} free"
