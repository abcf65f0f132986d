"""Allocator state of the worker process, for ``alloc`` journal events. Never raises.

CUDA: the caching allocator's view (``torch.cuda.memory_stats``) plus the driver's free/total
(``mem_get_info``). CPU: this process's resident set size and its peak (Linux ``VmHWM``, which
:func:`reset_peaks` resets through ``/proc/self/clear_refs``; elsewhere the lifetime peak from
``getrusage``). All values are bytes.
"""
from __future__ import annotations

import os
from typing import Any


def _device_type(device: Any) -> str:
    return str(getattr(device, "type", device) or "cpu").split(":")[0]


def allocator_stats(device: Any) -> dict[str, Any]:
    """``allocated``, ``reserved``, ``peak_allocated``, ``peak_reserved`` (since the last
    :func:`reset_peaks`), ``num_alloc_retries``, ``num_ooms``, ``inactive_split``, ``free``, ``total``
    on CUDA; ``rss``, ``peak_rss`` on the CPU. Keys that cannot be read are left out; ``error`` says why."""
    out: dict[str, Any] = {"device": str(device)}
    try:
        if _device_type(device) == "cuda":
            out.update(_cuda_stats(device))
        else:
            out.update(_cpu_stats())
    except Exception as exc:  # noqa: BLE001 - a monitor must never take the workload down
        out["error"] = f"{type(exc).__name__}: {exc}"[:200]
    return out


def _cuda_stats(device: Any) -> dict[str, Any]:
    import torch

    dev = torch.device(device)
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    s = torch.cuda.memory_stats(dev)
    out = {
        "allocated": int(s.get("allocated_bytes.all.current", 0)),
        "reserved": int(s.get("reserved_bytes.all.current", 0)),
        "peak_allocated": int(s.get("allocated_bytes.all.peak", 0)),
        "peak_reserved": int(s.get("reserved_bytes.all.peak", 0)),
        "num_alloc_retries": int(s.get("num_alloc_retries", 0)),
        "num_ooms": int(s.get("num_ooms", 0)),
        "inactive_split": int(s.get("inactive_split_bytes.all.current", 0)),
    }
    try:
        free, total = torch.cuda.mem_get_info(dev)
        out.update(free=int(free), total=int(total))
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"mem_get_info: {exc}"[:200]
    return out


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_stats() -> dict[str, Any]:
    rss = _status_kb("VmRSS")
    peak = _status_kb("VmHWM")
    if rss is None:
        try:
            import psutil

            rss = int(psutil.Process().memory_info().rss)
        except Exception:  # noqa: BLE001
            rss = None
    if peak is None:
        try:
            import resource
            import sys

            ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = int(ru if sys.platform == "darwin" else ru * 1024)  # macOS: bytes, Linux: KiB
        except Exception:  # noqa: BLE001
            peak = None
    out: dict[str, Any] = {}
    if rss is not None:
        out["rss"] = int(rss)
    if peak is not None:
        out["peak_rss"] = int(peak)
    return out


def reset_peaks(device: Any) -> bool:
    """Start a new peak window. True when the peak could be reset."""
    try:
        if _device_type(device) == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(torch.device(device))
            return True
        # Linux >= 4.0: writing 5 resets VmHWM (the peak RSS) to the current RSS.
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY)
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
        return True
    except Exception:  # noqa: BLE001
        return False


def free_memory(device: Any) -> None:
    """Collect garbage and hand cached blocks back to the driver (after an OOM, before a reload)."""
    import gc

    gc.collect()
    try:
        if _device_type(device) == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.ipc_collect()
    except Exception:  # noqa: BLE001
        pass
