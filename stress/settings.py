"""GPU settings a scenario asks for (``settings:``): applied with ``nvidia-smi``, read back through NVML.

One table, :data:`TABLE`: per setting, the ``nvidia-smi`` arguments that apply it, the ones that put
the previous state back, and the NVML read-back that proves it. Before the baseline probes the
supervisor reads each setting; one already in effect is left alone (no command, no root needed);
otherwise it runs the command and reads again. Every step is a ``setting`` event. A setting whose
read-back does not match makes the run ``invalid`` (stress.validity). At the end of the run, settings
the suite changed are restored (``restore: false`` keeps them) and read back again.

``STRESS_NVIDIA_SMI`` names the program to run instead of ``nvidia-smi`` (tests run a script that
changes the NVML stand-in's state). Supervisor side: never imports torch.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Callable

from stress.experiment import SettingSpec

COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class Setting:
    apply: Callable[[Any], list[str]]             # value -> nvidia-smi arguments (after -i GPU)
    restore: Callable[[Any], list[str]]           # previous read-back -> arguments
    read: Callable[[Any, Any], Any]               # (NvmlSession, handle) -> the value as the scenario writes it
    matches: Callable[[Any, Any], bool]           # (wanted, read) -> in effect?
    unit: str
    readback: str                                 # what is read, for the docs and the journal


def _q(session, fn: str, *args: Any) -> Any:
    from stress.hw.nvml import Failed, Unsupported

    r = session.query(fn, *args)
    if isinstance(r, (Unsupported, Failed)):
        raise LookupError(f"{fn}: {r}")
    return r


def _clock(session, h: Any, which: str, fn: str = "nvmlDeviceGetApplicationsClock") -> int:
    return int(_q(session, fn, h, getattr(session.nv, which)))


TABLE: dict[str, Setting] = {
    "persistence_mode": Setting(
        apply=lambda v: ["-pm", str(int(v))], restore=lambda prev: ["-pm", str(int(prev))],
        read=lambda s, h: int(_q(s, "nvmlDeviceGetPersistenceMode", h)),
        matches=lambda w, r: int(w) == int(r), unit="", readback="nvmlDeviceGetPersistenceMode (1: on)"),
    "power_limit_w": Setting(
        apply=lambda v: ["-pl", str(int(v))], restore=lambda prev: ["-pl", str(int(round(prev)))],
        read=lambda s, h: round(int(_q(s, "nvmlDeviceGetPowerManagementLimit", h)) / 1000, 1),
        matches=lambda w, r: abs(float(w) - float(r)) < 1.0, unit="W",
        readback="nvmlDeviceGetPowerManagementLimit (mW, within 1 W)"),
    "application_clocks": Setting(
        apply=lambda v: ["-ac", f"{v[0]},{v[1]}"], restore=lambda prev: ["-rac"],
        read=lambda s, h: [_clock(s, h, "NVML_CLOCK_MEM"), _clock(s, h, "NVML_CLOCK_GRAPHICS")],
        matches=lambda w, r: list(w) == list(r), unit="MHz [memory, graphics]",
        readback="nvmlDeviceGetApplicationsClock (memory, graphics)"),
    "locked_clocks": Setting(
        apply=lambda v: ["-lgc", f"{v[0]},{v[1]}"], restore=lambda prev: ["-rgc"],
        read=lambda s, h: _clock(s, h, "NVML_CLOCK_GRAPHICS", "nvmlDeviceGetClockInfo"),
        matches=lambda w, r: w[0] <= r <= w[1], unit="MHz [min, max]",
        readback="nvmlDeviceGetClockInfo(GRAPHICS) inside [min, max] (NVML has no getter for the lock)"),
}


def _program() -> list[str] | None:
    override = os.environ.get("STRESS_NVIDIA_SMI")
    if override:
        return shlex.split(override)
    exe = shutil.which("nvidia-smi")
    return [exe] if exe else None


def _run(args: list[str], gpu: int) -> tuple[list[str], str | None]:
    """Run ``nvidia-smi -i GPU ARGS``; (argv, None) or (argv, why it failed)."""
    prog = _program()
    argv = (prog or ["nvidia-smi"]) + ["-i", str(gpu)] + args
    if prog is None:
        return argv, "nvidia-smi is not installed (it comes with the NVIDIA driver)"
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return argv, f"{type(exc).__name__}: {exc}"
    if p.returncode != 0:
        last = (p.stderr.strip() or p.stdout.strip()).splitlines()[-1:] or ["no output"]
        hint = " (changing it needs root)" if os.geteuid() != 0 else ""
        return argv, f"exit status {p.returncode}: {last[0][:200]}{hint}"
    return argv, None


def _read(session, spec: SettingSpec) -> tuple[Any, str | None]:
    if session is None:
        return None, "NVML is not available"
    h = session.handles.get(spec.gpu)
    if h is None:
        return None, f"no GPU {spec.gpu} in NVML"
    try:
        return TABLE[spec.name].read(session, h), None
    except LookupError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a lost GPU or a driver error: this read-back failed
        return None, f"{type(exc).__name__}: {exc}"


def _open():
    from stress.hw.nvml import NvmlSession, NvmlUnavailable

    try:
        return NvmlSession.open()
    except NvmlUnavailable:
        return None


def apply_all(specs: list[SettingSpec], journal, out: list[dict] | None = None) -> list[dict]:
    """Apply and read back every setting; one ``setting`` event each, appended to ``out`` as it is
    written (so that an interrupted run restores what it changed). Returns ``out``."""
    out = [] if out is None else out
    if not specs:
        return out
    session = _open()
    try:
        for spec in specs:
            row = TABLE[spec.name]
            before, why = _read(session, spec)
            ev: dict[str, Any] = {"name": spec.name, "gpu": spec.gpu, "action": "apply", "wanted": spec.value,
                                  "before": before, "unit": row.unit, "readback": row.readback, "command": None}
            if before is not None and row.matches(spec.value, before):
                ev.update(after=before, status="ok", reason="already in effect; nothing run")
            elif before is None:
                ev.update(after=None, status="unreadable", reason=f"cannot read it back: {why}")
            else:
                argv, err = _run(row.apply(spec.value), spec.gpu)
                after, why2 = _read(session, spec)
                ok = after is not None and row.matches(spec.value, after)
                ev.update(command=argv, after=after, status="ok" if ok else "not-in-effect",
                          reason=None if ok else (err or why2 or f"read back {after} {row.unit}"))
                ev["changed"] = err is None
            out.append(journal.append("setting", **ev))
    finally:
        if session is not None:
            session.close()
    return out


def restore_all(specs: list[SettingSpec], applied: list[dict], journal) -> list[str]:
    """Put back what :func:`apply_all` changed (``restore: true``), reading each back again. Returns
    warnings (a failed restore is recorded, never a reason to lose the run's record)."""
    todo = [(s, ev) for s, ev in zip(specs, applied) if s.restore and ev.get("changed") and ev.get("before") is not None]
    if not todo:
        return []
    try:
        written = _restore(todo, journal)
    except Exception as exc:  # noqa: BLE001 - the verdict and run.json come next, whatever happened here
        return [f"GPU settings not restored ({type(exc).__name__}: {exc}); check them with nvidia-smi -q"]
    failed = [e for e in written if e.get("status") != "ok"]
    return [f"GPU setting {e['name']} on GPU {e['gpu']} not restored to {e['wanted']}: {e['reason']}" for e in failed]


def _restore(todo: list, journal) -> list[dict]:
    session = _open()
    written = []
    try:
        for spec, ev in todo:
            row = TABLE[spec.name]
            argv, err = _run(row.restore(ev["before"]), spec.gpu)
            after, why = _read(session, spec)
            scalar = spec.name in ("persistence_mode", "power_limit_w")   # the others are reset, not set
            ok = err is None and (not scalar or (after is not None and row.matches(ev["before"], after)))
            written.append(journal.append("setting", name=spec.name, gpu=spec.gpu, action="restore", wanted=ev["before"],
                           before=ev.get("after"), after=after, unit=row.unit, readback=row.readback, command=argv,
                           status="ok" if ok else "failed",
                           reason=None if ok else (err or why or f"read back {after} {row.unit}")))
    finally:
        if session is not None:
            session.close()
    return written
