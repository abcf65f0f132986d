"""selftest's results as data: one record per trial, the confusion matrix per fault class, the
clean control's false alarms, the targets, and their JSON / Markdown / one-screen forms. Pure.

A fault trial is **detected** when its run's verdict is ``reproduced`` *and* a reason names the
fault's class (stress.selftest.faults.CATEGORY_PATTERNS). A clean run is a **false alarm** when its
verdict is ``reproduced``. Targets: every class detected in at least 95% of its trials; no false alarm.

Each rate comes with its 95% Wilson interval (stress.stats.wilson_interval, the same as a run's
incidence): 10 of 10 detected only shows a rate of at least 72%, 0 false alarms in 30 runs one of at
most 11%. The targets are judged on the observed rates; the intervals say how much the trials show,
and the pooled figure (every fault trial together) how much all of them show at once.
"""
from __future__ import annotations

import statistics
from typing import Any

from stress.selftest.faults import CLEAN, FAULTS, reason_categories
from stress.stats import wilson_interval

FORMAT = 1
DETECTION_TARGET = 0.95
FALSE_ALARM_TARGET = 0
VERDICTS = ("reproduced", "inconclusive", "not-reproduced", "error")
_FAILING = ("fail", "timeout", "error")
_SLOW_RATIO = 1.5


def trial_result(fault: str, index: int, *, phase: str | None, verdict: dict | None, t_inject: float | None,
                 detect_s: float | None, run_dir: str | None, wall_s: float, error: str | None = None,
                 note: str = "", returncode: int | None = None) -> dict:
    reasons = [str(r) for r in (verdict or {}).get("reasons") or []]
    v = (verdict or {}).get("verdict") or "error"
    cats = reason_categories(reasons)
    expected = FAULTS[fault].expected if fault in FAULTS else None
    named = expected in cats if expected else False
    return {"fault": fault, "trial": index, "phase": phase, "verdict": v, "exit_code": (verdict or {}).get("exit_code"),
            "reasons": reasons, "categories": cats, "expected": expected, "named": named,
            "detected": v == "reproduced" and named if expected else None,
            "false_alarm": v == "reproduced" if fault == CLEAN else None,
            "injected": t_inject is not None, "detect_s": round(detect_s, 3) if detect_s is not None else None,
            "run_dir": run_dir, "wall_s": round(wall_s, 1), "error": error, "note": note, "returncode": returncode}


def detection_time(events: list[dict], t_inject: float) -> float | None:
    """Seconds from the injection to the first event after it that shows a fault: a screen or decode
    probe that failed, timed out or crashed, or measured at least 1.5x its kind's baseline median; an
    Xid, a classified kernel-log line, a lost GPU, a display process gone."""
    base: dict[str, list[float]] = {}
    for e in events:
        if e.get("ev") == "probe" and e.get("phase") == "baseline" and e.get("status") == "ok" \
                and isinstance(e.get("latency_s"), (int, float)):
            base.setdefault(str(e.get("kind")), []).append(float(e["latency_s"]))
    med = {k: statistics.median(v) for k, v in base.items() if v}
    for e in events:
        t = e.get("t")
        if not isinstance(t, (int, float)) or t < t_inject:
            continue
        kind = e.get("ev")
        hit = False
        if kind == "probe" and e.get("phase") != "baseline":
            if e.get("status") in _FAILING:
                hit = True
            elif e.get("status") == "ok" and isinstance(e.get("latency_s"), (int, float)):
                b = med.get(str(e.get("kind")))
                hit = bool(b) and e["latency_s"] >= _SLOW_RATIO * b
        elif kind == "xid" or (kind == "kmsg" and e.get("cls")):
            hit = True
        elif kind == "source" and e.get("status") == "unavailable" and "lost" in str(e.get("reason", "")):
            hit = True
        elif kind == "host" and e.get("dsgone"):
            hit = True
        if hit:
            return max(0.0, float(t) - t_inject)
    return None


def _rate(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def _ci95(k: int, n: int) -> list[float] | None:
    return [round(v, 4) for v in wilson_interval(k, n)] if n else None


def _pct(ci: list[float] | None) -> str:
    return f"{ci[0]:.0%}-{ci[1]:.0%}" if ci else "-"


def summarize(trials: list[dict], *, machine: dict, display: str, started: str, wall_s: float,
              options: dict) -> dict:
    """The selftest report (report.json-like): per class its confusion row, the clean control, targets."""
    classes: dict[str, Any] = {}
    order = [f for f in FAULTS if any(t["fault"] == f for t in trials)]
    for name in order:
        ts = [t for t in trials if t["fault"] == name]
        counts = {v: sum(t["verdict"] == v for t in ts) for v in VERDICTS}
        detected = sum(bool(t["detected"]) for t in ts)
        times = [t["detect_s"] for t in ts if t["detected"] and t["detect_s"] is not None]
        rate = _rate(detected, len(ts))
        classes[name] = {
            "what": FAULTS[name].what, "phase": FAULTS[name].phase, "expected_reason": FAULTS[name].expected,
            "trials": len(ts), "verdicts": counts, "reason_names_class": sum(bool(t["named"]) for t in ts),
            "detected": detected, "detection_rate": rate, "detection_ci95": _ci95(detected, len(ts)),
            "detect_s": {"median": round(statistics.median(times), 2), "max": round(max(times), 2)} if times else None,
            "target_met": rate is not None and rate >= DETECTION_TARGET,
            "missed": [{"trial": t["trial"], "verdict": t["verdict"], "reasons": t["reasons"][:3], "error": t["error"]}
                       for t in ts if not t["detected"]],
        }
    clean = [t for t in trials if t["fault"] == CLEAN]
    false_alarms = [t for t in clean if t["false_alarm"]]
    ccounts = {v: sum(t["verdict"] == v for t in clean) for v in VERDICTS}
    control = {"runs": len(clean), "verdicts": ccounts, "false_alarms": len(false_alarms),
               "false_alarm_rate": _rate(len(false_alarms), len(clean)),
               "false_alarm_ci95": _ci95(len(false_alarms), len(clean)),
               "inconclusive_rate": _rate(ccounts["inconclusive"], len(clean)),
               "load": "one core busy, disk I/O (fsync'd 1 MiB writes), a browser-like window redrawing and remapping",
               "false_alarm_reasons": [r for t in false_alarms for r in t["reasons"]][:20],
               "inconclusive_reasons": [r for t in clean if t["verdict"] == "inconclusive" for r in t["reasons"]][:20]}
    faults = [t for t in trials if t["fault"] in FAULTS]
    caught = sum(bool(t["detected"]) for t in faults)
    pooled = {"trials": len(faults), "detected": caught, "detection_rate": _rate(caught, len(faults)),
              "detection_ci95": _ci95(caught, len(faults))}
    missed = [f"{n}: detected {c['detected']}/{c['trials']} (target {DETECTION_TARGET:.0%})"
              for n, c in classes.items() if not c["target_met"]]
    if clean and len(false_alarms) > FALSE_ALARM_TARGET:
        missed.append(f"clean: {len(false_alarms)} false alarm(s) in {len(clean)} runs (target {FALSE_ALARM_TARGET})")
    return {"kind": "selftest", "format": FORMAT, "started": started, "wall_s": round(wall_s, 1),
            "machine": machine, "display": display, "options": options,
            "targets": {"detection_rate": DETECTION_TARGET, "false_alarms": FALSE_ALARM_TARGET},
            "classes": classes, "pooled": pooled, "clean": control, "passed": not missed, "missed": missed, "trials": trials}


def markdown(summary: dict) -> str:
    """The confusion matrix and the clean control as Markdown tables."""
    m = summary.get("machine") or {}
    shown = m.get("display_version") or summary.get("display")
    lines = [f"selftest on {shown}, {m.get('cpu', '?')} ({m.get('cores', '?')} cores), "
             f"load {m.get('load1_start', '?')} at start, {summary.get('started')}, {summary.get('wall_s')} s", "",
             "| fault class | injected in | trials | reproduced | inconclusive | not-reproduced | error "
             "| reason names class | detected | 95% interval | detection s (median / max) | target |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for name, c in summary["classes"].items():
        v = c["verdicts"]
        t = c["detect_s"]
        when = f"{t['median']} / {t['max']}" if t else "-"
        lines.append(f"| {name} | {c['phase']} | {c['trials']} | {v['reproduced']} | {v['inconclusive']} | "
                     f"{v['not-reproduced']} | {v['error']} | {c['reason_names_class']} | "
                     f"{c['detected']}/{c['trials']} | {_pct(c.get('detection_ci95'))} | {when} | "
                     f"{'met' if c['target_met'] else 'MISSED'} |")
    pooled = summary.get("pooled")
    if pooled and pooled["trials"]:
        lines.append(f"| **every class** | | {pooled['trials']} | | | | | | {pooled['detected']}/{pooled['trials']} | "
                     f"{_pct(pooled['detection_ci95'])} | | |")
    cl = summary["clean"]
    if cl["runs"]:
        v = cl["verdicts"]
        lines += ["", "| clean control (background load) | runs | reproduced (false alarms) | false-alarm rate, "
                  "95% interval | inconclusive | not-reproduced | error | inconclusive rate |",
                  "|---|---:|---:|---|---:|---:|---:|---:|",
                  f"| {cl['load']} | {cl['runs']} | {cl['false_alarms']} | {_pct(cl.get('false_alarm_ci95'))} | "
                  f"{v['inconclusive']} | {v['not-reproduced']} | {v['error']} | {cl['inconclusive_rate']:.0%} |"]
    return "\n".join(lines) + "\n"


def screen(summary: dict) -> str:
    """The one-screen summary selftest prints."""
    out = [f"selftest: {len(summary['trials'])} runs on {summary['display']} in {summary['wall_s']:.0f} s"]
    for name, c in summary["classes"].items():
        t = c["detect_s"]
        out.append(f"  {name:<12} {c['detected']:>3}/{c['trials']:<3} detected"
                   + (f" [{_pct(c['detection_ci95'])}]" if c.get("detection_ci95") else "")
                   + (f", {t['median']:.1f} s to detection" if t else "")
                   + ("" if c["target_met"] else "   MISSED: " + ", ".join(
                       f"{k} {n}" for k, n in c["verdicts"].items() if n and k != "reproduced")
                      + (" (reason did not name the class)" if c["verdicts"]["reproduced"] > c["detected"] else "")))
    cl = summary["clean"]
    if cl["runs"]:
        out.append(f"  {'clean':<12} {cl['false_alarms']:>3}/{cl['runs']:<3} false alarms"
                   + (f" [{_pct(cl['false_alarm_ci95'])}]" if cl.get("false_alarm_ci95") else "") + ", "
                   f"{cl['verdicts']['inconclusive']} inconclusive ({cl['inconclusive_rate']:.0%})")
    pooled = summary.get("pooled")
    if pooled and pooled["trials"]:
        out.append(f"  {'every class':<12} {pooled['detected']:>3}/{pooled['trials']:<3} detected "
                   f"[{_pct(pooled['detection_ci95'])}]   (brackets: 95% interval of the rate)")
    out.append("targets met" if summary["passed"] else "targets MISSED: " + "; ".join(summary["missed"]))
    return "\n".join(out)
