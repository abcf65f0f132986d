"""Driver and machine state sampled by the supervisor during a run, written to the journal.

:class:`Monitors` runs one drift-free loop thread (NVML per GPU + host, ``interval`` apart), one thread
waiting on NVML Xid events, and one following the kernel log. Every source that cannot run here
records ``source``/``unavailable`` with the reason once, and the run goes on. Nothing here imports
torch. Event keys: docs/journal.md and docs/monitors.md.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

from stress.hw import kernel_log
from stress.hw.config import MonitorsConfig
from stress.hw.nvml import GpuLost, GpuSampler, NvmlSession, NvmlUnavailable
from stress.hw.nvml_events import XidEventWatcher
from stress.hw.xid import XidLine, classify, normalize_bus_id
from stress.journal import Journal

_MAX_LINE = 2000   # longest kernel-log line kept; longer ones are cut (and say so)


class TickLoop:
    """Calls ``fn(tick)`` on a fixed schedule: tick k is due at ``start + k * interval``.

    The next deadline is advanced by ``interval`` (never ``sleep(interval)`` after the work, which
    drifts by the work's duration every tick). When a tick ran so long that the loop is more than
    one interval behind, the missed deadlines are skipped and counted, not run in a burst; ``tick``
    stays the index of the deadline, so "every N ticks" keeps meaning "every N intervals".
    """

    def __init__(self, interval: float, fn: Callable[[int], None], *,
                 clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], bool] | None = None, name: str = "stress-sampler"):
        self.interval = float(interval)
        self.fn = fn
        self.clock = clock
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self.name = name
        self.ticks = 0
        self.skipped = 0
        self.errors = 0
        self.last_error: str | None = None
        self.max_late_s = 0.0
        self.cpu_s = 0.0
        self.started_at: float | None = None
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Run in the calling thread until :meth:`request_stop` (or ``wait`` returns True)."""
        try:
            self.started_at = next_t = self.clock()
            index = 0
            while not self._stop.is_set():
                self.max_late_s = max(self.max_late_s, self.clock() - next_t)
                try:
                    self.fn(index)
                except Exception as exc:  # noqa: BLE001 - a bug in one tick must not end the sampling
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                self.ticks += 1
                index += 1
                next_t += self.interval
                behind = self.clock() - next_t
                if behind > self.interval:
                    missed = int(behind // self.interval)
                    self.skipped += missed
                    index += missed
                    next_t += missed * self.interval
                if self._wait(max(0.0, next_t - self.clock())):
                    break
        finally:
            self.cpu_s = time.thread_time()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


class RateLimiter:
    """Token bucket: ``burst`` at once, then ``rate`` per second. Counts what it turned away."""

    def __init__(self, rate: float, burst: int = 200, clock: Callable[[], float] = time.monotonic):
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()
        self.pending = 0        # turned away since the last one let through
        self.suppressed = 0     # turned away in all

    def allow(self) -> tuple[bool, int]:
        """``(allowed, suppressed_before)``: the count to report with this one, when allowed."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                pending, self.pending = self.pending, 0
                return True, pending
            self.pending += 1
            self.suppressed += 1
            return False, 0

    def take_pending(self) -> int:
        with self._lock:
            pending, self.pending = self.pending, 0
            return pending


class Monitors:
    """The samplers of one run. ``start()`` ... ``stop()``, or ``with Monitors(...) as m:``.

    ``worker_pids`` is called every tick: workers are restarted during a run, so the pids to follow
    change.
    """

    def __init__(self, config: MonitorsConfig, journal: Journal,
                 worker_pids: Callable[[], list[int]] = lambda: [], display_env: dict[str, str] | None = None):
        self.config = config
        self.display_env = display_env   # the probes' environment: whose display server is under test
        self.journal = journal
        self.worker_pids = worker_pids
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._write_errors = 0
        self._sources: dict[str, str] = {}
        self._session: NvmlSession | None = None
        self._gpu_samplers: list[GpuSampler] = []
        self._gpus_lost: list[int] = []
        self._bus_to_gpu: dict[tuple[int, int, int], int] = {}
        self._watcher: XidEventWatcher | None = None
        self._follower: kernel_log.KernelLogFollower | None = None
        self._host: Any = None
        self._loop: TickLoop | None = None
        self._kmsg_limit = RateLimiter(config.kmsg_rate)
        self._xid_limit = RateLimiter(config.kmsg_rate)
        self._started = False
        self._summary: dict | None = None
        self._t0 = 0.0

    # ---- journal ----
    def _emit(self, ev: str, **fields: Any) -> None:
        try:
            self.journal.append(ev, **fields)
        except (OSError, ValueError):   # disk full or journal closed: never take the run down
            with self._lock:
                self._write_errors += 1
            return
        with self._lock:
            self._counts[ev] = self._counts.get(ev, 0) + 1

    def _source(self, src: str, status: str, reason: str | None = None, **extra: Any) -> None:
        # The summary keeps one status per source: unsupported fields do not make a source less
        # available, and one lost GPU of several leaves NVML available.
        partial = status == "unsupported-fields" or (
            status == "unavailable" and src == "nvml" and "gpu" in extra
            and any(not s.lost for s in self._gpu_samplers))
        if not partial:
            self._sources[src] = status
        self._emit("source", src=src, status=status, reason=reason, **extra)

    # ---- start ----
    def start(self) -> None:
        """Write ``gpu_static`` and ``source`` events, then start the loop, Xid and kernel-log threads."""
        if self._started:
            raise RuntimeError("Monitors.start() called twice")
        self._started = True
        self._t0 = time.monotonic()
        cfg = self.config
        if not cfg.enabled:
            return
        if cfg.nvml:
            self._start_nvml()
        if cfg.host:
            self._start_host()
        if cfg.kernel_log:
            self._start_kernel_log()
        if self._gpu_samplers or self._host is not None:
            self._loop = TickLoop(cfg.interval, self._tick)
            self._loop.start()

    def _every(self, seconds: float) -> int:
        return max(1, math.ceil(seconds / self.config.interval - 1e-9))

    def _start_nvml(self) -> None:
        cfg = self.config
        try:
            session = NvmlSession.open(cfg.gpus)
        except NvmlUnavailable as exc:
            self._source("nvml", "unavailable", str(exc))
            if cfg.xid_events:
                self._source("nvml-events", "unavailable", f"NVML unavailable: {exc}")
            return
        self._session = session
        info = session.driver_info()
        for i in sorted(session.handles):
            try:
                static = session.static_info(i)
            except GpuLost as exc:
                self._gpus_lost.append(i)
                self._source("nvml", "unavailable", str(exc), gpu=i)
                continue
            self._emit("gpu_static", **static, driver=info["driver"], cuda_driver=info["cuda_driver"],
                       nvml_version=info["nvml_version"])
            key = normalize_bus_id(static.get("bus_id"))
            if key:
                self._bus_to_gpu[key] = i
            self._gpu_samplers.append(GpuSampler(session, i, slow_every=self._every(cfg.slow_interval),
                                                 processes=cfg.gpu_processes))
        self._source("nvml", "available" if self._gpu_samplers else "unavailable",
                     None if self._gpu_samplers else "every GPU was lost before sampling started",
                     gpus=[s.index for s in self._gpu_samplers], driver=info["driver"],
                     cuda_driver=info["cuda_driver"])
        if not cfg.xid_events:
            return
        watcher = XidEventWatcher(session, self._on_nvml_xid, self._on_watcher_status)
        if watcher.register():
            self._watcher = watcher
            watcher.start()
            self._source("nvml-events", "available", None, gpus=watcher.registered,
                         not_registered={str(k): v for k, v in watcher.not_registered.items()} or None)
        else:
            reasons = sorted(set(watcher.not_registered.values())) or ["no GPU"]
            self._source("nvml-events", "unavailable", "; ".join(reasons))

    def _start_host(self) -> None:
        try:
            from stress.hw import host
            session = host.display_session(self.display_env)
            self._host = host.HostSampler(self.worker_pids, rescan_every=self._every(self.config.rescan_interval),
                                          tree_every=self._every(2.0), display_env=self.display_env)
        except Exception as exc:  # noqa: BLE001 - e.g. no /proc: the run goes on without host samples
            self._source("host", "unavailable", f"{type(exc).__name__}: {exc}")
            return
        self._source("host", "available", None, session=session)

    def _start_kernel_log(self) -> None:
        source, attempts = kernel_log.probe(self.config.kernel_log_source)
        tried = [a.as_dict() for a in attempts]
        if source is None:
            self._source("kernel-log", "unavailable",
                         "; ".join(f"{a.via}: {a.reason}" for a in attempts), tried=tried)
            return
        try:
            follower = kernel_log.KernelLogFollower.open(
                source, on_line=self._on_kmsg, on_xid=self._on_kernel_xid, on_end=self._on_kernel_log_end)
        except OSError as exc:
            self._source("kernel-log", "unavailable", f"{source.via}: {exc}", tried=tried)
            return
        self._follower = follower
        follower.start()
        self._source("kernel-log", "available", None, via=source.via,
                     tried=[t for t in tried if not t["ok"]] or None)

    # ---- the loop ----
    def _tick(self, tick: int) -> None:
        t = time.time()
        for s in self._gpu_samplers:
            if s.lost:
                continue
            try:
                rec = s.sample(tick)
            except Exception as exc:  # noqa: BLE001 - a bug in one field reader must not stop the rest
                s.lost = f"internal error: {type(exc).__name__}: {exc}"
                rec = None
            new = s.take_new_unsupported()
            if new:
                self._source("nvml", "unsupported-fields", None, gpu=s.index, fields=new)
            if rec is None:
                self._gpus_lost.append(s.index)
                self._source("nvml", "unavailable", s.lost, gpu=s.index)
                continue
            self._emit("nvml", t=t, **rec)
        if self._host is not None:
            try:
                self._emit("host", t=t, **self._host.sample(tick))
            except Exception as exc:  # noqa: BLE001
                self._host = None
                self._source("host", "unavailable", f"internal error: {type(exc).__name__}: {exc}")

    # ---- Xid and kernel log (called from their threads) ----
    def _record_xid(self, gpu: int | None, xid: int, source: str, raw: str, **extra: Any) -> None:
        allowed, suppressed = self._xid_limit.allow()
        if not allowed:
            return
        category, description = classify(xid)
        if suppressed:
            extra["suppressed"] = suppressed
        self._emit("xid", gpu=gpu, xid=xid, category=category, description=description, source=source,
                   raw=raw[:_MAX_LINE], **{k: v for k, v in extra.items() if v is not None})

    def _on_nvml_xid(self, gpu: int | None, xid: int, raw: str) -> None:
        self._record_xid(gpu, xid, "nvml-event", raw)

    def _on_kernel_xid(self, parsed: XidLine, raw: str) -> None:
        gpu = self._bus_to_gpu.get(normalize_bus_id(parsed.bus) or (-1, -1, -1))
        self._record_xid(gpu, parsed.xid, "kernel-log", raw, bus=parsed.bus, pid=parsed.pid, name=parsed.name)

    def _on_kmsg(self, raw: str, message: str) -> None:
        allowed, suppressed = self._kmsg_limit.allow()
        if not allowed:
            return
        extra: dict[str, Any] = {"suppressed": suppressed} if suppressed else {}
        known = kernel_log.classify_line(message)
        if known is not None:
            extra["cls"] = known.id
        if len(raw) > _MAX_LINE:
            raw, extra["cut"] = raw[:_MAX_LINE], len(raw)
        self._emit("kmsg", line=raw, **extra)

    def _on_kernel_log_end(self, reason: str) -> None:
        via = self._follower.via if self._follower else "kernel log"
        self._source("kernel-log", "unavailable", f"{via}: {reason}")

    def _on_watcher_status(self, status: str, reason: str, **extra: Any) -> None:
        self._source("nvml-events", status, reason, **extra)

    # ---- stop ----
    def stop(self) -> dict:
        """Stop every thread (within about 2 s) and return a summary of what was sampled."""
        if self._summary is not None:
            return self._summary
        if self._loop:
            self._loop.request_stop()
        ended = True
        if self._loop:
            ended &= self._loop.join(2.0)
        if self._watcher:
            ended &= self._watcher.stop(1.5)
        if self._follower:
            ended &= self._follower.stop(1.5)
        for limiter, what in ((self._kmsg_limit, "kernel-log lines"), (self._xid_limit, "Xid reports")):
            pending = limiter.take_pending()
            if pending:
                self._emit("kmsg", line=f"[stress] {pending} {what} not recorded (rate limit)", suppressed=pending)
        if self._session is not None and ended:   # never shut NVML down under a thread still in it
            self._session.close()
        loop = self._loop
        cpu = sum(x.cpu_s for x in (loop, self._watcher, self._follower) if x is not None)
        wall = time.monotonic() - self._t0 if self._started else 0.0
        with self._lock:
            counts = dict(self._counts)
            write_errors = self._write_errors
        self._summary = {
            "ticks": loop.ticks if loop else 0,
            "skipped": loop.skipped if loop else 0,
            "overhead_cpu_s": round(cpu, 4),
            "wall_s": round(wall, 3),
            "cpu_pct": round(100 * cpu / wall, 3) if wall > 0 else 0.0,
            "max_late_s": round(loop.max_late_s, 4) if loop else 0.0,
            "events": counts,
            "sources": dict(self._sources),
            "gpus": [s.index for s in self._gpu_samplers],
            "gpus_lost": sorted(set(self._gpus_lost)),
            "xid": counts.get("xid", 0),
            "kmsg": counts.get("kmsg", 0),
            "kmsg_suppressed": self._kmsg_limit.suppressed,
            "xid_suppressed": self._xid_limit.suppressed,
            "kernel_log_via": self._follower.via if self._follower else None,
            "write_errors": write_errors,
            "loop_errors": loop.errors if loop else 0,
            "threads_stopped": ended,
        }
        return self._summary

    def __enter__(self) -> "Monitors":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
