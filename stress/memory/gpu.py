"""How much GPU memory the plan may use: ``--gpu-memory`` or NVML, asked in a subprocess.

NVML is asked from a child process with a timeout: on the machines this suite is for, a driver can
be in a state where NVML calls hang, and planning must never hang with it. The child goes through
:mod:`stress.hw.nvml` (the one module that imports pynvml), so ``STRESS_NVML_MODULE`` works here too.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from stress.proc import child_env
from stress.units import parse_size as _parse_size

def parse_size(text: str) -> int:
    """``24GiB``, ``24G`` (binary), ``24GB`` (decimal), ``24000MiB`` -> bytes (``stress.units``: a bare number
    is bytes there as everywhere, so ``24`` is refused as too small with the hint to write ``24GiB``)."""
    return _parse_size(text, what="GPU memory size", minimum=1 << 20)


@dataclass
class GpuMemory:
    """What the plan compares its peaks with."""

    available: int | None          # bytes the workload may use; None: unknown
    source: str                    # "--gpu-memory", "nvml", or why there is none
    name: str | None = None
    total: int | None = None
    used_by_others: int | None = None
    compute_capability: tuple[int, int] | None = None

    def as_dict(self) -> dict:
        return {"available": self.available, "source": self.source, "name": self.name, "total": self.total,
                "used_by_others": self.used_by_others,
                "compute_capability": list(self.compute_capability) if self.compute_capability else None}


def detect_gpu(index: int = 0, timeout: float = 20.0) -> GpuMemory:
    """The GPU's memory as NVML sees it now (total minus what other processes use)."""
    env = child_env()
    try:
        proc = subprocess.run([sys.executable, "-m", "stress.hw.gpu_probe"], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return GpuMemory(None, f"NVML did not answer within {timeout:.0f} s (driver in a bad state?)")
    try:
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return GpuMemory(None, f"NVML probe failed: {tail}")
    if not data.get("available"):
        return GpuMemory(None, f"no GPU detected ({data.get('reason')})")
    gpus = [g for g in data["gpus"] if g["index"] == index]
    if not gpus:
        return GpuMemory(None, f"no GPU with index {index}")
    g = gpus[0]
    if g["total"] is None:
        return GpuMemory(None, "NVML does not report this GPU's memory", name=g["name"])
    used = g["used"] or 0
    cc = tuple(g["cc"]) if g.get("cc") else None
    return GpuMemory(g["total"] - used, "nvml", name=g["name"], total=g["total"], used_by_others=used,
                     compute_capability=cc)  # type: ignore[arg-type]


def resolve_gpu_memory(option: str | None, *, detect: bool = True) -> GpuMemory:
    """``--gpu-memory`` if given, else NVML, else unknown (and the plan says so)."""
    if option:
        return GpuMemory(parse_size(option), "--gpu-memory")
    if not detect:
        return GpuMemory(None, "not checked")
    return detect_gpu()
