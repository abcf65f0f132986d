"""``python -m stress.hw.gpu_probe``: the GPUs' memory as NVML sees it now, as one JSON line.

The planner asks in a subprocess, so a driver in a bad state (an NVML call that never returns) costs
a timeout, not the planner.
"""
from __future__ import annotations

import json

from stress.hw.nvml import Failed, NvmlSession, NvmlUnavailable, Unsupported


def _val(x):
    return None if isinstance(x, (Unsupported, Failed)) else x


def probe() -> dict:
    try:
        s = NvmlSession.open()
    except NvmlUnavailable as exc:
        return {"available": False, "reason": str(exc)}
    gpus = []
    try:
        for i, h in sorted(s.handles.items()):
            mem = _val(s.query("nvmlDeviceGetMemoryInfo", h))
            name = _val(s.query("nvmlDeviceGetName", h))
            cc = _val(s.query("nvmlDeviceGetCudaComputeCapability", h))
            gpus.append({"index": i, "name": name if isinstance(name, str) else (name.decode() if name else None),
                         "total": int(mem.total) if mem is not None else None,
                         "used": int(mem.used) if mem is not None else None,
                         "cc": list(cc) if cc is not None else None})
    finally:
        s.close()
    return {"available": True, "gpus": gpus}


if __name__ == "__main__":
    print(json.dumps(probe()))
