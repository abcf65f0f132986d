"""Desktop cycles inside a scenario: display off/on, a VT switch, an idle period, suspend/resume,
between images or after the workload, each journalled (``cycle`` events) and followed by a probe
phase (``cycle``, visit = the cycle's index) that the judge compares with baseline like the others.

The scenario's ``cycles:`` section is a list of :class:`CycleSpec`; docs/scenarios.md#cycles. What a
cycle needs (a display with a way to switch it off, root and chvt and a real VT, root and rtcwake and a
wake-up clock and the ``--allow-suspend`` opt-in) is checked before the run starts
(:func:`preflight`: one line and exit 3, or 2 for the missing opt-in, nothing run); a cycle that fails
when it runs is recorded (``status: error`` / ``refused``) and makes the verdict inconclusive unless
the desktop regressed anyway. The actions themselves are in stress/cycle_actions.py; every command
they run has a timeout, so a frozen display server cannot hang the supervisor.
"""
from __future__ import annotations

import os
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stress.errors import ExitCode, StressError

CycleDo = Literal["display_off_on", "idle", "vt_switch", "suspend"]
ALIASES = {"dpms_off_on": "display_off_on", "dpms": "display_off_on", "display": "display_off_on",
           "vt": "vt_switch", "suspend_resume": "suspend"}
ALLOW_SUSPEND_ENV = "STRESS_ALLOW_SUSPEND"     # set to 1 by `gpu-stress run --allow-suspend`


class CycleSpec(BaseModel):
    """One desktop cycle: what to do and when."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    do: CycleDo = Field(..., description=(
        "display_off_on (alias dpms_off_on): the display off for off_s, then on; idle: nothing for "
        "`seconds`; vt_switch: to VT `vt` for off_s and back (root, chvt); suspend: suspend to RAM and wake "
        "after `seconds` through rtcwake (root, --allow-suspend)"))
    after_image: int | None = Field(None, ge=1, le=1_000_000, description=(
        "run after this many images are done (1: after the first)"))
    after: Literal["workload"] | None = Field(None, description="workload: after the last image, before `after`")
    off_s: float | None = Field(None, gt=0, le=3600, description="display_off_on / vt_switch: seconds away (default 2)")
    seconds: float | None = Field(None, gt=0, le=86400, description="idle / suspend: seconds (default 30)")
    vt: int | None = Field(None, ge=1, le=63, description="vt_switch: the VT to switch to (default: the next one)")
    method: Literal["auto", "dpms", "screensaver", "sway"] = Field("auto", description=(
        "display_off_on: auto (X11: DPMS through xset when the server has the extension, else the X screen "
        "saver's blanking; Wayland: sway's output dpms); dpms, screensaver, sway: only that way"))
    probe: bool = Field(True, description="run the probes after the cycle (phase `cycle`)")

    @field_validator("do", mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return ALIASES.get(v, v) if isinstance(v, str) else v

    @field_validator("off_s", "seconds", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        from stress.scenario import parse_duration   # `30`, `"90s"`, `"10m"`

        return None if v is None else parse_duration(v)

    @model_validator(mode="after")
    def _when(self) -> "CycleSpec":
        if (self.after_image is None) == (self.after is None):
            raise ValueError("give exactly one of after_image (a number of images) or after: workload")
        if self.off_s is not None and self.do not in ("display_off_on", "vt_switch"):
            raise ValueError(f"off_s is for display_off_on and vt_switch; {self.do} takes `seconds`")
        if self.seconds is not None and self.do not in ("idle", "suspend"):
            raise ValueError(f"seconds is for idle and suspend; {self.do} takes `off_s`")
        if self.vt is not None and self.do != "vt_switch":
            raise ValueError("vt is for vt_switch only")
        if self.method != "auto" and self.do != "display_off_on":
            raise ValueError("method is for display_off_on only")
        if self.do in ("display_off_on", "vt_switch") and self.off_s is None:
            self.off_s = 2.0
        if self.do in ("idle", "suspend") and self.seconds is None:
            self.seconds = 30.0
        return self

    @property
    def at(self) -> str:
        return f"after image {self.after_image}" if self.after_image is not None else "after the workload"

    def label(self, index: int) -> str:
        return f"cycles[{index}] ({self.do} {self.at})"


def check_images(cycles: list[CycleSpec], images: int) -> str | None:
    """The scenario's cross-check: a cycle after an image the run never makes."""
    for i, c in enumerate(cycles):
        if c.after_image is not None and c.after_image > images:
            return (f"cycles.after_image: cycle {i} runs after image {c.after_image}, but the scenario makes "
                    f"{images}; use a number up to {images} or after: workload")
    return None


# ---------------------------------------------------------------------------------------------
# What a cycle needs, checked before the run and again when it runs
# ---------------------------------------------------------------------------------------------

def refusal(spec: CycleSpec, env: dict[str, str]) -> tuple[str, ExitCode] | None:
    """Why this machine cannot do ``spec`` (one clause, and the exit code of a refused run), or None."""
    from stress import cycle_actions as act

    if spec.do == "idle":
        return None
    if spec.do == "display_off_on":
        method, why = act.display_method(env, spec.method)
        return None if method else (why, ExitCode.ENVIRONMENT)
    if spec.do == "vt_switch":
        missing = act.vt_missing()
        return ("a VT switch needs " + "; ".join(missing), ExitCode.ENVIRONMENT) if missing else None
    missing = act.suspend_missing()
    if missing:
        return ("this machine cannot suspend and wake itself here: " + "; ".join(missing), ExitCode.ENVIRONMENT)
    if os.environ.get(ALLOW_SUSPEND_ENV) != "1":
        return ("suspending the machine needs the opt-in: gpu-stress run --allow-suspend", ExitCode.BAD_INPUT)
    return None


def preflight(sc, source: str) -> None:
    """Refuse a scenario whose cycles this machine cannot do, before anything runs (one line)."""
    if not getattr(sc, "cycles", None):
        return
    from stress.probes.phases import probe_env

    env = probe_env(sc.probes)
    for i, spec in enumerate(sc.cycles):
        why = refusal(spec, env)
        if why:
            raise StressError(f"{source}: {spec.label(i)}: refused: {why[0]}; nothing was run "
                              "(remove the cycle, or run where it can be done)", exit_code=why[1])


# ---------------------------------------------------------------------------------------------
# Running them from the supervisor
# ---------------------------------------------------------------------------------------------

class Cycles:
    """The supervisor's side: runs each cycle once at its point, journals it, probes after it."""

    def __init__(self, sup) -> None:
        self.sup = sup
        self.specs: list[CycleSpec] = list(getattr(sup.sc, "cycles", None) or [])
        self.done: set[int] = set()
        if sup.resume and self.specs:
            from stress.record import load

            self.done = {int(c["index"]) for c in load(sup.rd.root).cycles if isinstance(c.get("index"), int)}

    def after_images(self, n_done: int) -> None:
        for i, spec in enumerate(self.specs):
            if spec.after_image is not None and spec.after_image <= n_done and i not in self.done:
                self._run(i, spec)

    def after_workload(self) -> None:
        for i, spec in enumerate(self.specs):
            if i not in self.done:          # after: workload, and any after_image the run never reached
                self._run(i, spec)

    def _run(self, index: int, spec: CycleSpec) -> None:
        from stress import cycle_actions as act
        from stress.probes.phases import probe_env, run_phase

        sup, journal = self.sup, self.sup.journal
        self.done.add(index)
        env = probe_env(sup.sc.probes)
        sup.progress.note(f"cycle {index}: {spec.do} ({spec.at})")
        journal.append("phase", phase="cycle", state="start")
        try:
            journal.append("cycle", index=index, do=spec.do, at=spec.at, state="start",
                           off_s=spec.off_s, seconds=spec.seconds)
            t0 = time.monotonic()
            why = refusal(spec, env)
            if why:
                result = {"status": "refused", "reason": why[0]}
            else:
                try:
                    result = act.perform(spec, env)
                except Exception as exc:  # noqa: BLE001 - a cycle that breaks is a result to record
                    result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:300]}
            journal.append("cycle", index=index, do=spec.do, at=spec.at, state="end",
                           s=round(time.monotonic() - t0, 3), **result)
            if result.get("status") != "ok":
                sup.progress.note(f"cycle {index} {result.get('status')}: {result.get('reason')}")
            if spec.probe and sup.sc.probes.enabled:
                cfg = sup.sc.probes.model_copy(update={"phases": [*sup.sc.probes.phases, "cycle"]})
                images = [r for r in sup.records.values() if r.get("outcome") == "ok"]
                try:          # as the runner's own phases: borderline kinds repeated against the history
                    sup.probe_history += run_phase("cycle", cfg, sup.rd, journal, images, visit=index,
                                                   history=sup.probe_history)
                except Exception as exc:  # noqa: BLE001 - a probe harness bug is a result, not a reason to die
                    journal.append("probe", phase="cycle", kind="harness", rep=0, status="error", latency_s=None,
                                   metrics={}, reason=f"{type(exc).__name__}: {exc}", visit=index)
        finally:
            journal.append("phase", phase="cycle", state="end")
