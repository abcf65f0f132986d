"""Was a worker's death, or its failure, an out-of-memory? (the runner's outcome classification)

A worker the kernel's OOM killer ends dies of SIGKILL with nothing of its own on the message pipe; a
CPU allocation that fails raises ``RuntimeError: ... DefaultCPUAllocator: can't allocate memory`` (or
``MemoryError``). Both are ``oom`` outcomes, as CUDA's own ``OutOfMemoryError`` already is. Evidence,
strongest first:

- the kernel log's OOM-kill line for that pid (``Out of memory: Killed process PID`` or ``Memory cgroup
  out of memory: Killed process PID``), read from ``/dev/kmsg`` (root, or kernel.dmesg_restrict=0) or
  from the ``kmsg`` events the monitors journalled;
- the ``oom_kill`` counter of the worker's memory cgroup (cgroup v2 ``memory.events``, v1
  ``memory.oom_control``) grown since the worker started, for a worker that died of SIGKILL.
"""
from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_KMSG_MAX_BYTES = 8 * 1024 * 1024
_ALLOC_FAILURE = re.compile(r"DefaultCPUAllocator|can't allocate memory|Cannot allocate memory|^MemoryError\b")


def allocator_failure(error: str) -> bool:
    """A job's error that means the host ran out of memory (a CPU allocation failed)."""
    return bool(_ALLOC_FAILURE.search(error or ""))


def memory_cgroups(pid: int, root: Path = CGROUP_ROOT) -> list[Path]:
    """The memory cgroup folders of ``pid`` (v2 unified, v1 memory controller); [] when unknown."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, rel = parts
        rel = rel.lstrip("/")
        if hid == "0" and not controllers:                      # v2
            for base in (root, root / "unified"):
                d = base / rel
                if (d / "memory.events").is_file():
                    found.append(d)
                    break
        elif "memory" in controllers.split(","):               # v1
            d = root / "memory" / rel
            if (d / "memory.oom_control").is_file():
                found.append(d)
    return found


def oom_kill_count(folder: Path) -> int | None:
    """The cgroup's ``oom_kill`` counter, or None when it cannot be read."""
    for name in ("memory.events", "memory.oom_control"):
        try:
            text = (folder / name).read_text()
        except OSError:
            continue
        m = re.search(r"^oom_kill (\d+)$", text, re.M)
        if m:
            return int(m.group(1))
    return None


@dataclass
class OomWatch:
    """The worker's memory cgroups and their oom_kill counters, taken while it runs."""

    pid: int
    counts: dict[Path, int] = field(default_factory=dict)

    @classmethod
    def start(cls, pid: int) -> "OomWatch":
        w = cls(pid)
        w.refresh()
        return w

    def refresh(self) -> None:
        """Follow the worker into a cgroup it was moved to (the counters already seen are kept)."""
        for d in memory_cgroups(self.pid):
            if d not in self.counts:
                n = oom_kill_count(d)
                if n is not None:
                    self.counts[d] = n

    def grown(self) -> list[str]:
        out = []
        for d, before in self.counts.items():
            now = oom_kill_count(d)
            if now is not None and now > before:
                out.append(f"memory cgroup {d.relative_to(CGROUP_ROOT) if CGROUP_ROOT in d.parents else d}: "
                           f"oom_kill {before} -> {now}")
        return out


def kernel_log_kill(pid: int, journal_lines: list[str] | None = None, kmsg: str = "/dev/kmsg") -> str | None:
    """The kernel log's OOM-kill line for ``pid``, from /dev/kmsg or from journalled kmsg lines."""
    pat = re.compile(rf"Killed process {pid}\b")
    for line in journal_lines or []:
        if pat.search(line):
            return line.strip()
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    found = None
    try:
        read = 0
        while read < _KMSG_MAX_BYTES:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:      # EPIPE: the record was overwritten while reading; go on
                continue
            if not rec:
                break
            read += len(rec)
            text = rec.decode("utf-8", "replace")
            if pat.search(text):
                found = text.split(";", 1)[-1].strip()
    finally:
        os.close(fd)
    return found


def oom_kill_evidence(pid: int, returncode: int | None, watch: OomWatch | None,
                      journal_lines: list[str] | None = None) -> str | None:
    """Why the dead worker ``pid`` is taken to have been OOM-killed, or None."""
    if returncode is None or returncode != -signal.SIGKILL:
        return None
    line = kernel_log_kill(pid, journal_lines)
    if line:
        return f"kernel log: {line[:300]}"
    grown = watch.grown() if watch else []
    if grown:
        return "; ".join(grown)
    return None


_NOISE = re.compile(r"warn|deprecat|%\||^\s*$|^\s*(\^+|~+)\s*$|^\s+File |^\s{2,}\S", re.I)


def last_own_line(log_tail: str) -> str | None:
    """The last line the worker wrote itself (its ``stress:`` lines first), skipping library warnings
    with their source-line echo and progress bars; None when there is none."""
    lines = log_tail.replace("\r", "\n").splitlines()
    if lines and not log_tail.endswith(("\n", "\r")):
        lines = lines[:-1]         # a torn last line (killed mid-write) is not a message
    own = [line for line in lines if line.startswith("stress:")]
    if own:
        return own[-1].strip()[:300]
    for line in reversed(lines):
        if not _NOISE.search(line):
            return line.strip()[:300]
    return None
