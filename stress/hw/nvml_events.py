"""The NVML critical-Xid event thread (split from stress.hw.nvml, which re-exports it).

Every NVML call still goes through the session of :mod:`stress.hw.nvml`, the one module that loads
pynvml; this module only waits on the event set that session creates.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from stress.hw.nvml import (
    _LOST_CODES,
    _TIMEOUT,
    XID_EVENT_MASK,
    Failed,
    GpuLost,
    NvmlSession,
    Unsupported,
    _code,
    _error_text,
)


class XidEventWatcher:
    """Waits on an NVML event set registered for critical Xid events, in a thread of its own.

    ``nvmlEventSetWait`` is called with a timeout, so :meth:`stop` returns within about that long.
    ``on_xid(gpu, xid, raw)`` is called for each event; ``on_status(status, reason, **extra)`` when
    the watcher stops for a reason other than being asked to.
    """

    def __init__(self, session: NvmlSession, on_xid: Callable[[int | None, int, str], None],
                 on_status: Callable[..., None], *, wait_ms: int = 500):
        self.s = session
        self.nv = session.nv
        self.on_xid = on_xid
        self.on_status = on_status
        self.wait_ms = wait_ms
        self.registered: list[int] = []
        self.not_registered: dict[int, str] = {}
        self.events = 0
        self.cpu_s = 0.0
        self._set: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index_of: dict[int, int] = {}

    def register(self) -> bool:
        """Create the event set and register every GPU that supports Xid events."""
        es = self.s.query("nvmlEventSetCreate")
        if isinstance(es, (Unsupported, Failed)):
            self.not_registered = {i: f"event set: {es.reason}" for i in self.s.handles}
            return False
        self._set = es
        mask = getattr(self.nv, "nvmlEventTypeXidCriticalError", XID_EVENT_MASK)
        for i, h in self.s.handles.items():
            try:
                supported = self.s.xid_events_supported(i)
                if supported is False:
                    self.not_registered[i] = "Xid events not supported by this GPU/driver"
                    continue
                r = self.s.query("nvmlDeviceRegisterEvents", h, mask, es)
            except GpuLost as exc:
                self.not_registered[i] = str(exc)
                continue
            if isinstance(r, (Unsupported, Failed)):
                self.not_registered[i] = r.reason
            else:
                self.registered.append(i)
                self._index_of[id(h)] = i
        if not self.registered:
            self._free()
        return bool(self.registered)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stress-xid-events", daemon=True)
        self._thread.start()

    def _gpu_of(self, device: Any) -> int | None:
        if id(device) in self._index_of:
            return self._index_of[id(device)]
        idx = self.s.query("nvmlDeviceGetIndex", device)
        return idx if isinstance(idx, int) else None

    def _run(self) -> None:
        errors = 0
        try:
            while not self._stop.is_set():
                try:
                    data = self.nv.nvmlEventSetWait(self._set, self.wait_ms)
                except self.nv.NVMLError as exc:
                    code = _code(exc)
                    if code == _TIMEOUT:
                        errors = 0
                        continue
                    if code in _LOST_CODES:
                        self.on_status("unavailable", _LOST_CODES[code])
                        return
                    errors += 1
                    if errors >= 10:
                        self.on_status("unavailable", f"nvmlEventSetWait failing: {_error_text(exc)}")
                        return
                    self._stop.wait(0.1)
                    continue
                except Exception as exc:
                    self.on_status("unavailable", f"nvmlEventSetWait: {type(exc).__name__}: {exc}")
                    return
                errors = 0
                if not int(getattr(data, "eventType", 0)) & XID_EVENT_MASK:
                    continue
                xid = int(data.eventData)
                gpu = self._gpu_of(data.device)
                self.events += 1
                self.on_xid(gpu, xid, f"nvml eventType=0x{int(data.eventType):x} eventData={xid}")
        finally:
            self.cpu_s = time.thread_time()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the thread and free the event set; False if the thread did not end in time."""
        self._stop.set()
        ended = True
        if self._thread is not None:
            self._thread.join(timeout)
            ended = not self._thread.is_alive()
        if ended:   # freeing the set under a thread still waiting on it would be unsafe
            self._free()
        return ended

    def _free(self) -> None:
        if self._set is not None:
            try:
                self.nv.nvmlEventSetFree(self._set)
            except Exception:
                pass
            self._set = None
