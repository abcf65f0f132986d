"""JUnit XML for CI: one test case per run (a soak iteration), the verdict as its outcome.

The shape is the common denominator that Jenkins, GitLab, GitHub Actions reporters and
``junitparser`` read: ``testsuites`` > ``testsuite`` (tests, failures, errors, skipped, time,
timestamp, hostname) > ``testcase`` (name, classname, time) with at most one ``failure``, ``error``
or ``skipped`` child, and ``system-out``. Verdicts map as: ``reproduced`` -> failure,
``error`` -> error, ``inconclusive`` -> skipped (with the reason as its message),
``not-reproduced`` -> passed, ``invalid`` (a setting of the experiment was not in effect) -> error.
"""
from __future__ import annotations

import re
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Outcome = Literal["passed", "failure", "error", "skipped"]

VERDICT_OUTCOME: dict[str, Outcome] = {"reproduced": "failure", "error": "error", "inconclusive": "skipped",
                                       "not-reproduced": "passed", "invalid": "error"}

# XML 1.0 forbids most control characters; stderr tails in reasons can carry them.
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: object) -> str:
    return _BAD_XML.sub("?", str(text))


@dataclass
class Case:
    name: str
    classname: str
    time_s: float = 0.0
    outcome: Outcome = "passed"
    message: str = ""
    type: str = ""
    details: str = ""
    timestamp: float | None = None
    system_out: str = ""
    properties: dict[str, str] = field(default_factory=dict)


def case_from_verdict(name: str, classname: str, verdict: str | None, reasons: list[str], time_s: float | None,
                      **kw: object) -> Case:
    """A test case whose outcome is the run's verdict; an unknown or missing verdict is an error."""
    outcome: Outcome = VERDICT_OUTCOME.get(verdict or "", "error")
    first = reasons[0] if reasons else (verdict or "no verdict recorded")
    return Case(name=name, classname=classname, time_s=float(time_s or 0.0), outcome=outcome,
                message="" if outcome == "passed" else f"{verdict or 'no verdict'}: {first}",
                type=verdict or "no-verdict", details="\n".join(reasons), **kw)  # type: ignore[arg-type]


def _iso(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t if t is not None else time.time()))


def to_xml(suites: dict[str, list[Case]], *, name: str = "gpu-stress",
           properties: dict[str, str] | None = None) -> bytes:
    """The JUnit document for ``{suite name: cases}``."""
    root = ET.Element("testsuites", name=_clean(name))
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    host = socket.gethostname()
    for sid, (suite_name, cases) in enumerate(suites.items()):
        counts = {"tests": len(cases), "failures": sum(c.outcome == "failure" for c in cases),
                  "errors": sum(c.outcome == "error" for c in cases),
                  "skipped": sum(c.outcome == "skipped" for c in cases)}
        t = sum(c.time_s for c in cases)
        stamps = [c.timestamp for c in cases if c.timestamp is not None]
        suite = ET.SubElement(root, "testsuite", name=_clean(suite_name), id=str(sid),
                              timestamp=_iso(min(stamps) if stamps else None), hostname=host,
                              time=f"{t:.3f}", **{k: str(v) for k, v in counts.items()})
        if properties:
            props = ET.SubElement(suite, "properties")
            for k, v in properties.items():
                ET.SubElement(props, "property", name=_clean(k), value=_clean(v))
        for c in cases:
            tc = ET.SubElement(suite, "testcase", name=_clean(c.name), classname=_clean(c.classname),
                               time=f"{c.time_s:.3f}")
            if c.outcome != "passed":
                child = ET.SubElement(tc, c.outcome, message=_clean(c.message))
                if c.outcome != "skipped":
                    child.set("type", _clean(c.type or c.outcome))
                    child.text = _clean(c.details or c.message)
            if c.system_out:
                ET.SubElement(tc, "system-out").text = _clean(c.system_out)
        for k in totals:
            totals[k] += counts[k]
        total_time += t
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(path: str | Path, suites: dict[str, list[Case]], *, name: str = "gpu-stress",
                properties: dict[str, str] | None = None) -> None:
    """Write the document atomically (a CI job reading it mid-soak sees a whole file)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(to_xml(suites, name=name, properties=properties))
    os.replace(tmp, path)


def soak_suites(summary: dict) -> dict[str, list[Case]]:
    """The cases of a soak (``summary.json`` of stress.soak): one per iteration, grouped by scenario."""
    suites: dict[str, list[Case]] = {name: [] for name in summary.get("scenarios", [])}
    for it in summary.get("iterations", []):
        scen = it.get("scenario") or "?"
        out = [f"run: {it.get('run_id')}", f"run dir: {it.get('run_dir')}", f"status: {it.get('status')}"]
        if it.get("report_dir") and Path(it["report_dir"]).exists():
            out.append(f"report: {it['report_dir']}")
        case = case_from_verdict(f"iteration {it['iteration']:04d}", f"gpu-stress.soak.{scen}", it.get("verdict"),
                                 list(it.get("reasons") or []), it.get("wall_s"), timestamp=it.get("started_at"),
                                 system_out="\n".join(out))
        suites.setdefault(scen, []).append(case)
    for intr in summary.get("interruptions", []):
        scen = intr.get("scenario") or "?"
        suites.setdefault(scen, []).append(Case(
            name=f"iteration {intr['iteration']:04d} attempt {intr.get('attempt', 1)} (interrupted)",
            classname=f"gpu-stress.soak.{scen}", outcome="skipped", timestamp=intr.get("t"),
            message=f"interrupted: {intr.get('reason')}", system_out=str(intr.get("cause") or "")))
    if summary.get("status") in ("disk-floor", "harness-errors"):
        suites.setdefault("soak", []).append(Case(
            name="soak harness", classname="gpu-stress.soak", outcome="error", type=summary["status"],
            message=f"the soak stopped early: {summary.get('message', summary['status'])}",
            details=str(summary.get("message", ""))))
    return suites


def write_soak_junit(path: str | Path, summary: dict) -> None:
    inc = summary.get("incidence") or {}
    props = {"soak_id": str(summary.get("soak_id")), "status": str(summary.get("status")),
             "reproduced": str(inc.get("reproduced")), "conclusive": str(inc.get("conclusive")),
             "frequency": str(inc.get("frequency"))}
    if inc.get("ci95"):
        props["incidence_ci95"] = f"{inc['ci95'][0]:.4f}-{inc['ci95'][1]:.4f}"
    write_junit(path, soak_suites(summary), name=f"gpu-stress soak {summary.get('soak_id')}", properties=props)
