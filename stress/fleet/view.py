"""The fleet view: machines x scenarios from the shared history, as data (:func:`fleet_matrix`, the
``--json`` output) and as one self-contained HTML page (:func:`render_html`: no script, no external
file; links to the reports are relative to the page).

Each cell: how many runs, their verdicts, the incidence of ``reproduced`` among the conclusive ones
with its 95 % Wilson interval (stress.stats.incidence), how many times the host stopped responding
(counted apart: it is not a verdict on the desktop, and it is the most important thing to look at),
and the last result with a link to its report. Per machine, a trend by day.
"""
from __future__ import annotations

import html
import os
import time
from pathlib import Path

from stress.fleet.records import HOST_STOPPED
from stress.history import RunSummary
from stress.stats import describe_incidence, incidence, median


def _day(t: float | None) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(t)) if t else "?"


def _when(r: RunSummary) -> float:
    return r.started_at or r.ended_at or 0.0


def fleet_matrix(runs: list[RunSummary], *, machines: list[str] | None = None,
                 scenarios: list[str] | None = None) -> dict:
    """Machines x scenarios (the fleet's, then any others the history holds), one cell each."""
    ms = list(machines or [])
    ss = list(scenarios or [])
    for r in runs:
        if r.hostname and r.hostname not in ms:
            ms.append(r.hostname)
        if r.scenario and r.scenario not in ss:
            ss.append(r.scenario)
    by_cell: dict[tuple[str, str], list[RunSummary]] = {}
    for r in sorted(runs, key=_when):
        by_cell.setdefault((r.hostname or "?", r.scenario or "?"), []).append(r)
    cells = []
    for m in ms:
        for s in ss:
            rs = by_cell.get((m, s), [])
            verdicts = [r.verdict for r in rs]
            last = rs[-1] if rs else None
            cells.append({
                "machine": m, "scenario": s, "runs": len(rs),
                "verdicts": {v or "none": verdicts.count(v) for v in sorted(set(verdicts), key=str)},
                "incidence": incidence(v for v in verdicts if v != HOST_STOPPED),
                "host_stopped": verdicts.count(HOST_STOPPED),
                "last": None if last is None else {
                    "run_id": last.run_id, "verdict": last.verdict, "status": last.status,
                    "started_at": last.started_at, "ended_at": last.ended_at, "gpu": last.gpu,
                    "driver": last.driver, "kernel": last.kernel, "report": last.report_path},
            })
    trends: dict[str, list[dict]] = {}
    for m in ms:
        days: dict[str, list[RunSummary]] = {}
        for r in sorted((r for r in runs if (r.hostname or "?") == m), key=_when):
            days.setdefault(_day(_when(r)), []).append(r)
        rows = []
        for day, rs in days.items():
            vs = [r.verdict for r in rs]
            ipm = [r.metrics["images_per_min"] for r in rs if r.metrics.get("images_per_min") is not None]
            rows.append({"day": day, "runs": len(rs), "incidence": incidence(v for v in vs if v != HOST_STOPPED),
                         "host_stopped": vs.count(HOST_STOPPED), "images_per_min_median": median(ipm),
                         "drivers": sorted({r.driver for r in rs if r.driver})})
        trends[m] = rows
    return {"generated_at": time.time(), "machines": ms, "scenarios": ss, "cells": cells, "trends": trends,
            "runs": len(runs)}


def _link(path: str | None, page_dir: Path) -> str | None:
    """A relative link from the page to a run's report.html (or report.json, or the note)."""
    if not path:
        return None
    p = Path(path)
    if p.name == "report.json" and (p.parent / "report.html").is_file():
        p = p.parent / "report.html"
    try:
        return os.path.relpath(p, page_dir)
    except ValueError:
        return str(p)


_CLASS = {"reproduced": "bad", HOST_STOPPED: "stopped", "not-reproduced": "good", "inconclusive": "meh",
          "error": "meh"}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.4em .6em;vertical-align:top}
th{background:#f4f4f4;text-align:left}.good{background:#e6f4e6}.bad{background:#f9d6d5}
.stopped{background:#222;color:#fff}.stopped a{color:#9cf}.meh{background:#f7f1dc}.none{color:#999}
small{color:#666}.stopped small{color:#ccc}
"""


def render_html(matrix: dict, *, title: str, page_dir: Path) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style>"
           "</head><body>", f"<h1>{e(title)}</h1>",
           f"<p>{matrix['runs']} runs in the history; generated {e(time.strftime('%Y-%m-%d %H:%M', time.localtime(matrix['generated_at'])))}. "
           "Incidence: reproduced among conclusive runs, 95% Wilson interval. "
           "<b>host stopped responding</b> is counted apart.</p>",
           "<table><tr><th>machine</th>" + "".join(f"<th>{e(s)}</th>" for s in matrix["scenarios"]) + "</tr>"]
    cells = {(c["machine"], c["scenario"]): c for c in matrix["cells"]}
    for m in matrix["machines"]:
        row = [f"<tr><th>{e(m)}</th>"]
        for s in matrix["scenarios"]:
            c = cells[(m, s)]
            if not c["runs"]:
                row.append("<td class='none'>no runs</td>")
                continue
            last = c["last"]
            cls = _CLASS.get(last["verdict"] or "", "meh")
            link = _link(last["report"], page_dir)
            verdict = "host stopped responding" if last["verdict"] == HOST_STOPPED else (last["verdict"] or "?")
            last_txt = e(verdict) if not link else f"<a href='{e(link)}'>{e(verdict)}</a>"
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last["ended_at"] or last["started_at"] or 0))
            stopped = f"<br><b>host stopped responding {c['host_stopped']}x</b>" if c["host_stopped"] else ""
            row.append(f"<td class='{cls}'>last: {last_txt} <small>{e(when)}</small><br>"
                       f"{c['runs']} runs: {e(describe_incidence(c['incidence']))}{stopped}<br>"
                       f"<small>{e(last['gpu'] or '')} {e(last['driver'] or '')}</small></td>")
        out.append("".join(row) + "</tr>")
    out.append("</table><h2>Trends per machine</h2>")
    for m, rows in matrix["trends"].items():
        out.append(f"<h3>{e(m)}</h3>")
        if not rows:
            out.append("<p class='none'>no runs</p>")
            continue
        out.append("<table><tr><th>day</th><th>runs</th><th>reproduced</th><th>host stopped</th>"
                   "<th>images/min (median)</th><th>drivers</th></tr>")
        for r in rows:
            ipm = r["images_per_min_median"]
            out.append(f"<tr><td>{e(r['day'])}</td><td>{r['runs']}</td><td>{e(describe_incidence(r['incidence']))}</td>"
                       f"<td>{r['host_stopped']}</td><td>{'-' if ipm is None else format(ipm, '.3g')}</td>"
                       f"<td>{e(', '.join(r['drivers']) or '-')}</td></tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
