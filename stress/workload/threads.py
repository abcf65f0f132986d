"""CPU threads and OpenMP wait policy for the worker: a fair share of the cores actually free.

Tiny models are dominated by per-op overhead. With torch's default (one OpenMP thread per core, and
libgomp's spinning wait between parallel regions) a worker on a busy machine spends its time spinning
against the other processes and waiting for descheduled team members: measured 30-40x slower than
idle on a shared 2-core machine (issue 15; figures in docs/benchmarks.md, "Contention"). So:

- the supervisor starts the worker with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning
  between ops; :func:`worker_env`), unless the user set it;
- the worker asks for as many threads as there are cores free: the cores it may run on
  (``os.sched_getaffinity``) less the 1-minute load average, rounded, at least 1 (:func:`choose`).
  ``STRESS_CPU_THREADS=N`` overrides it.

This module does not import torch: the supervisor side uses :func:`worker_env`.
"""
from __future__ import annotations

import os
from typing import Mapping

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


def choose(environ: Mapping[str, str] | None = None, *, cores: int | None = None,
           load: float | None = -1.0) -> tuple[int, str]:
    """``(threads, why)``. ``cores``/``load`` default to this machine's now; ``why`` is one line for
    ``worker_ready.cpu_threads_reason``. Raises ``ValueError`` for a bad ``STRESS_CPU_THREADS``."""
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
    load = load_average() if load == -1.0 else load
    if load is None:
        return cores, f"{cores} cores in this process's affinity; load average unknown"
    free = max(1, min(cores, int(cores - load + 0.5)))
    return free, f"{cores} cores in this process's affinity, 1-min load {load:.1f}: {free} free"
