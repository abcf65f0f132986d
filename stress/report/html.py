"""report.html: one self-contained page (inline CSS, charts as inline PNG data URIs, no network).

Made from report.json alone (plus the charts drawn from it). The top of the page answers what a driver
maintainer asks first: the verdict and why, on what machine and driver, what changed, what to attach.
"""
from __future__ import annotations

import base64
import json
import math
from typing import Any

import jinja2

from stress.report.charts import Chart

VERDICT_COLORS = {"reproduced": "#c62828", "not-reproduced": "#2e7d32", "inconclusive": "#ef6c00",
                  "error": "#6a1b9a", "incomplete": "#616161",
                  "invalid": "#37474f"}

# Metrics worth a row in "What changed", in this order (a key may match several series: per GPU, per process).
KEY_METRICS = (
    ("nvml", "mem_used"), ("nvml", "bar1_used"), ("nvml", "gfx_procs_mem"), ("nvml", "procs["),
    ("nvml", "worker_gpu_mem"), ("host", "display["), ("host", "swap_used"), ("host", "mem_used"),
    ("host", "worker.rss"), ("nvml", "temp"), ("nvml", "power"), ("nvml", "clk_gfx"), ("nvml", "pcie_replay"),
    ("nvml", "remapped_"), ("nvml", "retired_"), ("allocator", "peak_reserved"), ("allocator", "num_alloc_retries"),
    ("allocator", "num_ooms"),
)
_DISPLAY_FIELDS = (".rss", ".fds", ".threads")


def fmt(value: Any, unit: str = "", *, signed: bool = False) -> str:
    """A number for people: bytes as MiB/GiB, seconds with sensible precision, '-' for nothing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if not isinstance(value, (int, float)):
        return str(value)
    sign = "+" if signed and value > 0 else ("−" if signed and value < 0 else "")
    v = abs(value) if signed else value
    if unit == "bytes":
        for div, name in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB"), (1024, "KiB")):
            if abs(v) >= div:
                return f"{sign}{v / div:.2f} {name}" if div == 1024 ** 3 else f"{sign}{v / div:.0f} {name}"
        return f"{sign}{v:.0f} B"
    if unit == "s":
        if abs(v) >= 3600:
            return f"{sign}{int(v // 3600)}h{int(v % 3600 // 60):02d}m"
        if abs(v) >= 120:
            return f"{sign}{int(v // 60)}m{int(v % 60):02d}s"
        if abs(v) >= 1:
            return f"{sign}{v:.2f} s"
        return f"{sign}{v * 1000:.1f} ms"
    if unit == "count" or (isinstance(v, float) and v.is_integer() and abs(v) >= 10):
        return f"{sign}{v:.0f}" + (f" {unit}" if unit and unit != "count" else "")
    text = f"{v:.3g}" if isinstance(v, float) else str(v)
    return f"{sign}{text}" + (f" {unit}" if unit else "")


def fmt_rel(t: Any) -> str:
    """Seconds since the run started, as +1h02m03s."""
    if not isinstance(t, (int, float)):
        return "–"
    t = float(t)
    h, rem = divmod(int(round(t)), 3600)
    m, s = divmod(rem, 60)
    return f"+{h}h{m:02d}m{s:02d}s" if h else (f"+{m}m{s:02d}s" if m else f"+{t:.1f}s")


def key_metrics(report: dict) -> list[dict]:
    """The rows of "What changed": baseline, peak, after, after-exit and the change, per metric."""
    metrics = (report.get("monitors") or {}).get("metrics") or []
    rows, seen = [], set()
    for src, prefix in KEY_METRICS:
        for m in metrics:
            if m["src"] != src or id(m) in seen:
                continue
            k = m["key"]
            if prefix.endswith(("[", "_")):
                if not k.startswith(prefix):
                    continue
                if prefix == "display[" and not k.endswith(_DISPLAY_FIELDS):
                    continue
            elif k != prefix:
                continue
            if prefix == "procs[" and m.get("group") != "graphics":
                continue        # compute processes are the worker: its row is worker_gpu_mem
            if prefix in ("remapped_", "retired_") and not m.get("peak"):
                continue        # all zero (or not an ECC GPU): nothing to say
            seen.add(id(m))
            delta = m["delta_after_exit"] if m.get("delta_after_exit") is not None else (
                m["delta_after"] if m.get("delta_after") is not None else m.get("delta_last"))
            changed = bool(m.get("changed"))      # the judge's word (stress.analysis.metric_changed)
            label = m["label"] + (f" (GPU {m['gpu']})" if m.get("gpu") not in (None, 0) else "")
            rows.append({"label": label, "key": k, "unit": m["unit"], "kind": m["kind"],
                         "baseline": fmt(m.get("baseline"), m["unit"]), "peak": fmt(m.get("peak"), m["unit"]),
                         "peak_t": fmt_rel(m.get("peak_t")), "after": fmt(m.get("after"), m["unit"]),
                         "after_exit": fmt(m.get("after_exit"), m["unit"]), "last": fmt(m.get("last"), m["unit"]),
                         "delta": fmt(delta, m["unit"], signed=True), "changed": changed})
    return rows


def attachments(report: dict) -> list[dict]:
    return list(report.get("attachments") or [])


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("stress.report", "templates"),
                             autoescape=jinja2.select_autoescape(("html", "j2")), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.ChainableUndefined)
    env.filters["fmt"] = fmt
    env.filters["rel"] = fmt_rel
    env.filters["tojson_pretty"] = lambda o: json.dumps(o, indent=1, ensure_ascii=False, default=str)
    return env


def render_html(report: dict, charts: list[Chart]) -> str:
    """The page as a string (UTF-8 when written)."""
    verdict = report.get("verdict") or {}
    images = report.get("images") or []
    failed = [i for i in images if i.get("outcome") != "ok"]
    chart_views = [{"id": c.id, "title": c.title, "alt": c.alt, "empty": c.empty,
                    "src": "data:image/png;base64," + base64.b64encode(c.png).decode("ascii")} for c in charts]
    tpl = _env().get_template("report.html.j2")
    return tpl.render(r=report, v=verdict, color=VERDICT_COLORS.get(verdict.get("verdict"), "#424242"),
                      key_metrics=key_metrics(report), charts=chart_views, failed=failed[:200],
                      failed_more=max(0, len(failed) - 200), attachments=attachments(report),
                      machine=report.get("machine") or {}, workload=report.get("workload") or {},
                      completeness=report.get("completeness") or {}, run=report.get("run") or {})
