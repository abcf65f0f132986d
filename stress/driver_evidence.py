"""Which driver errors of a run are evidence of the regression, which point at hardware, which are notes.

Pure (events in, sentences out); :func:`stress.analysis.verdict` calls it. The rule, documented in
docs/evidence.md ("Kernel-log errors in the verdict") and docs/monitors.md, reads the classes of
stress/hw/kernel_patterns.json (``kmsg.cls``) as a driver maintainer would:

- **display path** (``display-engine``, ``video-memory``, ``bar1``) and **GPU hang** (``gsp``,
  ``engine-hang``, ``gpu-reset``, ``device-lost``, ``gpu-mmu``) errors at or after the start of the
  workload are the regression on their own: a "Flip event timeout" during the run *is* the display path
  failing, even when the next screenshot still worked (the failure can be transient, on another head,
  or between two probes), and a hung or reset GPU takes every client's context, the compositor's too;
- **hardware** (``fallen-off-bus``, ``pcie-aer``) errors, and Xid 79, point at hardware (PCIe link,
  seating, power), never at a driver regression: alone they make the run inconclusive; with a desktop
  regression they are listed first. Driver errors after the first hardware fault are its consequences:
  notes, not regressions;
- everything else (``driver-assert``, ``page-fault``, any ``warning``) is a note;
- a class already seen before the workload proves nothing later: the machine was broken before the
  load (the run is inconclusive unless something else regressed).

Each sentence names the class, the pattern id and the log line (its message only: the journal's time
and host name are dropped; the report redacts the rest like every other string).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from stress.hw import kernel_log

DISPLAY_PATH = ("display-engine", "video-memory", "bar1")
GPU_HANG = ("gsp", "engine-hang", "gpu-reset", "device-lost", "gpu-mmu")
HARDWARE = ("fallen-off-bus", "pcie-aer")
HARDWARE_XID_CATEGORIES = ("fallen-off-bus",)      # stress.hw.xid categories: Xid 79
MAX_LINE = 200
HARDWARE_ADVICE = ("points at hardware (PCIe link, riser, seating, power), not at a driver regression: "
                   "check the PCIe AER counters, cables and power, then repeat the run")

# a /dev/kmsg record head ("6,1234,5678901,-;"), then dmesg timestamps: "[  269.516977]", "[  +0.000844]",
# "[Thu Nov 20 00:22:01 2025]" (-T), "[Jan23 10:27]" (-H); never "[drm:...]" or "[nvidia-drm]"
_PREFIX_RE = re.compile(r"^(?:\d+,\d+,\d+,[^;]*;)?"
                        r"(?:\s*\[\s*(?:[+\d.]+|[A-Z][a-z]{2}[^\]]*\d{2}:\d{2}[^\]]*)\]\s?)*")


def message_of(line: str) -> str:
    """The message of a recorded kernel-log line, without the journal's time and host or dmesg's
    timestamp, cut to :data:`MAX_LINE` characters."""
    i = line.find(" kernel: ")
    msg = line[i + 9:] if i >= 0 else line
    msg = _PREFIX_RE.sub("", msg, count=1).strip() or msg.strip()
    return msg if len(msg) <= MAX_LINE else msg[:MAX_LINE - 3] + "..."


def _workload_window(events: list[dict]) -> tuple[float | None, float | None]:
    start = end = None
    for e in events:
        if e.get("ev") == "phase" and e.get("phase") == "workload" and isinstance(e.get("t"), (int, float)):
            if e.get("state") == "start" and start is None:
                start = e["t"]
            elif e.get("state") == "end":
                end = e["t"]
    return start, end


def _classified(events: list[dict]) -> list[tuple[float, kernel_log.KernelPattern, dict]]:
    out = []
    for e in events:
        if e.get("ev") == "kmsg" and e.get("cls") and isinstance(e.get("t"), (int, float)):
            p = kernel_log.pattern(str(e["cls"]))
            if p is not None:
                out.append((float(e["t"]), p, e))
    out.sort(key=lambda x: x[0])
    return out


def first_hardware_fault(events: list[dict]) -> float | None:
    """When the first hardware fault of the run was seen (a kernel-log error of a :data:`HARDWARE`
    class from the workload on, or an Xid of a hardware category), or None."""
    start, _ = _workload_window(events)
    ts = [t for t, p, _e in _classified(events)
          if p.cls in HARDWARE and p.severity == "error" and start is not None and t >= start]
    ts += [float(e["t"]) for e in events if e.get("ev") == "xid" and e.get("category") in HARDWARE_XID_CATEGORIES
           and isinstance(e.get("t"), (int, float))]
    return min(ts) if ts else None


def kernel_log_evidence(events: Iterable[dict]) -> dict[str, Any]:
    """``{"regressions", "hardware", "notes", "unsure", "items"}``: sentences for the verdict, and
    ``items`` (one per pattern id and role) for report consumers; see the module's rule."""
    evs = list(events)
    start, end = _workload_window(evs)
    hw_t = first_hardware_fault(evs)
    groups: dict[tuple[str, str], dict] = {}
    before: dict[str, dict] = {}
    for t, p, e in _classified(evs):
        msg = message_of(str(e.get("line") or ""))
        if start is None or t < start:
            before.setdefault(p.id, {"pattern": p, "line": msg, "t": t, "count": 0})["count"] += 1
            continue
        phase = "during" if end is None or t <= end else "after"
        if p.severity != "error":
            role = "note"
        elif p.cls in HARDWARE:
            role = "hardware"
        elif p.id in before:
            role = "before"
        elif p.cls in DISPLAY_PATH or p.cls in GPU_HANG:
            role = "consequence" if hw_t is not None and t >= hw_t else "regression"
        else:
            role = "note"
        g = groups.setdefault((p.id, role), {"pattern": p, "role": role, "phase": phase, "line": msg, "t": t,
                                             "count": 0})
        g["count"] += 1
    out: dict[str, Any] = {"regressions": [], "hardware": [], "notes": [], "unsure": [], "items": []}
    for pid, b in before.items():
        p = b["pattern"]
        out["notes"].append(f'before the workload: kernel log, {p.cls} ({pid}): "{b["line"]}"')
        out["items"].append({"id": pid, "class": p.cls, "severity": p.severity, "role": "before-workload",
                             "count": b["count"], "t": b["t"], "line": b["line"]})
    for (pid, role), g in sorted(groups.items(), key=lambda kv: kv[1]["t"]):
        p = g["pattern"]
        times = "" if g["count"] == 1 else f", {g['count']} lines"
        head = f'{g["phase"]}: kernel log, {p.cls} ({pid}{times}): "{g["line"]}"'
        if role == "regression":
            out["regressions"].append(head)
        elif role == "hardware":
            out["hardware"].append(f"{head}: {HARDWARE_ADVICE}")
        elif role == "consequence":
            out["notes"].append(f"{head} (after the hardware fault: counted as its consequence, not a regression)")
        elif role == "before":
            out["unsure"].append(f"{head}, but {pid} already appeared before the workload; later ones prove "
                                 "nothing")
        else:
            out["notes"].append(head + (" (a warning)" if p.severity != "error" else ""))
        out["items"].append({"id": pid, "class": p.cls, "severity": p.severity, "role": role, "phase": g["phase"],
                             "count": g["count"], "t": g["t"], "line": g["line"], "meaning": p.meaning})
    xid79: dict[object, dict] = {}
    for e in evs:
        if e.get("ev") == "xid" and e.get("category") in HARDWARE_XID_CATEGORIES and isinstance(e.get("xid"), int):
            a = xid79.setdefault((e.get("gpu"), e["xid"]), {"n": 0, "sources": set(), "d": e.get("description")})
            a["n"] += 1
            a["sources"].add(str(e.get("source")))
    for (gpu, code), a in sorted(xid79.items(), key=lambda kv: str(kv[0])):
        out["hardware"].append(f"Xid {code} on GPU {gpu if gpu is not None else '?'}: {a['d'] or 'GPU has fallen off the bus'} "
                               f"({a['n']} report(s) from {', '.join(sorted(a['sources']))}): {HARDWARE_ADVICE}")
    return out


__all__ = ["DISPLAY_PATH", "GPU_HANG", "HARDWARE", "HARDWARE_XID_CATEGORIES", "message_of",
           "first_hardware_fault", "kernel_log_evidence"]
