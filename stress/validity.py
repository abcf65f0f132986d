"""Was the experiment's condition in effect? Pure: a run's record in, the validity of its result out.

A scenario's ``env:`` and ``settings:`` (stress.experiment, stress.settings) are the condition a run
(a matrix cell) tests. The run is valid only when every process the condition was meant for was read
back with it: each worker (``/proc/<pid>/environ`` right after its start), each probe child that
measured something, and each GPU setting (NVML). Otherwise the judge (stress.analysis.judge) makes
the verdict ``invalid``: what the probes observed is kept (``details.observed_verdict`` and the
reasons) but counts for no cell. Rules in docs/experiments.md.
"""
from __future__ import annotations

from typing import Any

MEASURED = ("ok", "fail", "timeout", "error")


def _shown(v: Any) -> str:
    return "unset" if v is None else repr(v)


def _env_problem(rb: dict, who: str) -> list[str]:
    if rb.get("status") == "ok":
        return []
    if rb.get("status") == "unreadable":
        return [f"the environment of {who} could not be read back ({rb.get('reason') or 'no reason'})"]
    expected, found = rb.get("expected") or {}, rb.get("found") or {}
    return [f"{name} was not in effect in {who}: asked for {_shown(expected.get(name))}, found "
            f"{_shown(found.get(name))}" for name in rb.get("wrong") or []]


def validity(record) -> dict | None:
    """``{"valid", "problems", "checked"}``, or None for a run that asked for no condition."""
    exp = record.experiment
    if exp is None and not record.env_readbacks and not record.settings:
        return None
    exp = exp or {}
    want = exp.get("env") if isinstance(exp.get("env"), dict) else {}
    problems: list[str] = []
    checked = {"workers": 0, "probe_children": 0, "settings": 0}
    workers = [rb for rb in record.env_readbacks if rb.get("target") == "worker"]
    probes = [rb for rb in record.env_readbacks if rb.get("target") == "probes"]
    if want.get("worker"):
        for w in sorted(record.workers.values(), key=lambda w: (w.get("worker") is None, w.get("worker") or 0)):
            pid = w.get("pid")
            who = f"worker {w.get('worker')} (pid {pid})"
            mine = [rb for rb in workers if rb.get("pid") == pid]
            if not mine:
                problems.append(f"the environment of {who} was never read back")
            for rb in mine:
                checked["workers"] += 1
                problems += _env_problem(rb, who)
    if want.get("probes"):
        seen = {(rb.get("phase"), rb.get("visit"), rb.get("kind")) for rb in probes}
        groups = {(e.get("phase"), e.get("visit") or 0, e.get("kind")) for e in record.probes
                  if e.get("status") in MEASURED and e.get("kind") != "harness"}
        for phase, visit, kind in sorted(groups, key=str):
            if (phase, visit, kind) not in seen:
                problems.append(f"the environment of the {kind} probe child ({phase}, visit {visit}) was never "
                                "read back")
        for rb in probes:
            checked["probe_children"] += 1
            problems += _env_problem(rb, f"the {rb.get('kind')} probe child of {rb.get('phase')} "
                                         f"(pid {rb.get('pid')})")
    applied = [s for s in record.settings if s.get("action") == "apply"]
    for spec in exp.get("settings") or []:
        name, gpu = spec.get("name"), spec.get("gpu", 0)
        mine = [s for s in applied if s.get("name") == name and s.get("gpu", 0) == gpu]
        if not mine:
            problems.append(f"the setting {name} on GPU {gpu} was never applied")
    for s in applied:
        checked["settings"] += 1
        if s.get("status") != "ok":
            unit = f" {s['unit']}" if s.get("unit") else ""
            problems.append(f"the setting {s.get('name')} = {s.get('wanted')}{unit} on GPU "
                            f"{s.get('gpu')} was not in effect: read back {_shown(s.get('after'))} through "
                            f"{s.get('readback')} ({s.get('reason') or 'no reason'})")
    problems = list(dict.fromkeys(problems))
    return {"valid": not problems, "problems": problems, "checked": checked, "cell": exp.get("cell") or {}}


def invalidate(v: dict, val: dict, exit_code: int) -> dict:
    """The verdict of a run whose condition was not in effect: ``invalid``, with the observation kept."""
    observed = v.get("verdict")
    reasons = [f"invalid: {p}" for p in val["problems"]]
    reasons += [f"observed ({observed}, not attributable to this cell): {r}" for r in v.get("reasons") or []]
    details = dict(v.get("details") or {}, observed_verdict=observed, validity=val)
    return {"verdict": "invalid", "reasons": reasons, "exit_code": int(exit_code), "details": details}
