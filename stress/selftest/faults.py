"""The fault classes selftest injects, and what a correct verdict says about each. Pure: no I/O.

Each class names the probe phase it is injected in and the *reason category* a verdict must name to
count as a detection. :func:`reason_categories` sorts a verdict's reason sentences (as written by
``stress.analysis``) into those categories, so the confusion matrix can say not only whether the
verdict was ``reproduced`` but whether it said why.

The slow display path is a display server blocked for part of every short period, as one blocked in
the driver (waiting for a flip, for video memory) is: selftest's own Xvfb stopped (SIGSTOP) for 3, 6
or 12 ms of every 3.5, 6.5 or 12.5 ms, resumed (SIGCONT) for the half millisecond between
(stress.selftest.stopper). It does not depend on any client of the injector getting the CPU (the
earlier injection, clients flooding the server with pixmap copies, did, and on a loaded machine
mostly did not slow it). The run windows are short on purpose: a probe's timed interval starts right
after a round trip the server has just answered, so with run windows longer than that interval (the
first duty cycles ran 25, 12.5 or 5 ms of each 50 ms) it fits inside one and measures nothing
(docs/selftest.md, benchmarks/bench_slow_path.py). It is injected in ``after-exit``: on a CPU workload, a slowdown in ``during`` or
``after`` is discounted by design (the workload's process competes with the probes for the cores, see
docs/probes.md), and only ``after-exit`` (the worker gone) is free of that.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FaultClass:
    name: str
    expected: str           # the reason category that names this fault
    phase: str              # the probe phase it is injected in
    what: str               # one line for the summary and the docs
    stop: tuple[float, float] | None = None     # slow-*: the X server stopped (ms) of every (ms)


FAULTS: dict[str, FaultClass] = {f.name: f for f in (
    FaultClass("stall", "unresponsive", "after", "display server stopped (SIGSTOP) for 6 s, then resumed (SIGCONT)"),
    FaultClass("kill", "display-exited", "after", "display server killed (SIGKILL)"),
    FaultClass("restart", "display-restarted", "after", "display server killed and a new one started on the same display"),
    FaultClass("black", "black", "after", "screen turns black (full-screen overlay painted black)"),
    FaultClass("frozen", "frozen", "after", "screen freezes (full-screen overlay showing the old screen, never updated)"),
    FaultClass("slow-light", "slow", "after-exit", "display server stopped 3 ms of every 3.5 ms (SIGSTOP/SIGCONT)",
               stop=(3.0, 3.5)),
    FaultClass("slow-medium", "slow", "after-exit", "display server stopped 6 ms of every 6.5 ms (SIGSTOP/SIGCONT)",
               stop=(6.0, 6.5)),
    FaultClass("slow-heavy", "slow", "after-exit", "display server stopped 12 ms of every 12.5 ms (SIGSTOP/SIGCONT)",
               stop=(12.0, 12.5)),
    FaultClass("corrupt", "outputs-corrupted", "after", "saved outputs corrupted on disk (bytes flipped, one truncated)"),
    FaultClass("xid", "driver-xid", "after", "Xid 119 (GSP timeout) in the kernel log (stand-in source)"),
    FaultClass("modeset", "driver-modeset", "after", "nvidia-modeset display-engine error in the kernel log (stand-in)"),
    FaultClass("gpu-lost", "gpu-lost", "after", "NVML reports the GPU lost (NVML stand-in)"),
)}
QUICK = ("stall", "black", "corrupt", "xid")
CLEAN = "clean"

# Reason category -> the pattern of a verdict sentence that names it (stress.analysis's sentences).
_SCREEN = r"(screenshot|display round trip|Wayland display round trip)"
CATEGORY_PATTERNS: dict[str, re.Pattern] = {k: re.compile(v) for k, v in {
    "unresponsive": rf"{_SCREEN} (timed out|failed) in",
    "display-exited": r"the display process .* exited during the run",
    "display-restarted": r"the display process .* exited during the run, restarted as pid",
    "black": rf"{_SCREEN} returned all-black frames",
    "frozen": rf"{_SCREEN} (mismatched in .*never appeared on screen|left the closed window on screen)",
    "slow": rf"{_SCREEN} latency median .* at baseline",
    # "decode failed in ..." is the verdict's sentence for the same finding before it said so plainly
    # (kept so that selftest.json files measured then are read alike)
    "outputs-corrupted": r"saved outputs were corrupted|decode failed in .*(sha256|cannot decode|missing)",
    "driver-xid": r"^Xid \d+ on GPU",
    "driver-modeset": r'kernel log, display-engine \((nvkms|nvidia-drm)-',
    "gpu-lost": r"GPU .* was lost during the run",
}.items()}


def reason_categories(reasons: list[str]) -> list[str]:
    """The categories (in :data:`CATEGORY_PATTERNS` order) that at least one reason names."""
    return [cat for cat, rx in CATEGORY_PATTERNS.items() if any(rx.search(str(r)) for r in reasons)]


def parse_classes(text: str | None, *, quick: bool = False) -> list[str]:
    """``--classes a,b`` (``all``, or a prefix such as ``slow`` for every slow-*) -> class names.
    Raises ValueError naming the unknown class."""
    if not text:
        return list(QUICK if quick else FAULTS)
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "all":
            names = list(FAULTS)
        elif part in FAULTS:
            names = [part]
        else:
            names = [n for n in FAULTS if n.startswith(part + "-")]
            if not names:
                raise ValueError(f"unknown fault class {part!r}; choose from {', '.join(FAULTS)} (or all, slow)")
        out.extend(n for n in names if n not in out)
    return out


def plan_trials(classes: list[str], trials: int, clean: int) -> list[tuple[str, int]]:
    """The order of the trials: rounds of every class once, with the clean runs spread evenly among
    them, so that the machine's load over time weighs on faults and controls alike (and an
    interrupted selftest has measured some of each)."""
    faults = [(c, i) for i in range(trials) for c in classes]
    if not faults:
        return [(CLEAN, i) for i in range(clean)]
    out: list[tuple[str, int]] = []
    done = 0
    for n, item in enumerate(faults, 1):
        out.append(item)
        due = clean * n // len(faults)
        out.extend((CLEAN, j) for j in range(done, due))
        done = due
    return out


def scenario_phases(classes: list[str], phase: str | None = None) -> tuple[str, ...]:
    """The probe phases every trial's scenario has: baseline, after, and after-exit only when a chosen
    class is injected there (it costs the worker's exit and a phase of probes per trial); ``phase``
    overrides every class's own."""
    used = {phase} if phase else {FAULTS[c].phase for c in classes if c in FAULTS}
    extra = ("after-exit",) if "after-exit" in used else ()
    return ("baseline", "after", *extra)
