"""Charts for report.html, drawn with matplotlib (Agg) from report.json alone.

Every time chart shares one axis (time since the run started) and the same marks: probe/run phases as
shaded spans, image boundaries as a rug along the bottom (failed images in red), Xid events as red
lines, worker exits and display-process restarts as orange lines. A chart whose data is missing (no
NVML on this machine, no probes) says so in the picture instead of being blank.

The timeline in report.json is already downsampled with min/max buckets, so peaks survive drawing.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Callable

# Figures are drawn on an explicit Agg canvas, never through pyplot: no display is touched, no global
# backend is switched under a caller that uses matplotlib itself, and nothing is left open.
import matplotlib
import matplotlib.lines
import matplotlib.patches
import matplotlib.ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

WIDTH_IN = 10.0
ROW_IN = 2.1
DPI = 90
PHASE_COLORS = {"baseline": "#d9f0d3", "load": "#f0f0f0", "workload": "#dde8f7", "after": "#fde0c5",
                "after-exit": "#f8d0d0", "cycle": "#e8d8f0"}
STAGE_COLORS = {"text_encode": "#8da0cb", "base": "#4c72b0", "refiner": "#55a868", "vae_decode": "#dd8452",
                "save": "#937860"}
PROBE_PHASES = ("baseline", "during", "cycle", "after", "after-exit")


@dataclass
class Chart:
    id: str
    title: str
    png: bytes
    alt: str
    empty: bool = False      # True when the chart only says that its data is missing


# ---- helpers ---------------------------------------------------------------------------------


def _time_scale(span_s: float) -> tuple[float, str]:
    if span_s > 3 * 3600:
        return 3600.0, "hours since start"
    if span_s > 180:
        return 60.0, "minutes since start"
    return 1.0, "seconds since start"


def _bytes_scale(max_value: float) -> tuple[float, str]:
    if max_value >= 2 * 1024 ** 3:
        return 1024 ** 3, "GiB"
    if max_value >= 2 * 1024 ** 2:
        return 1024 ** 2, "MiB"
    return 1024, "KiB"


def _png(fig: Figure, *, tight: bool = False) -> bytes:
    """PNG bytes. Layout is set by hand (subplots_adjust) where possible: 'tight' and constrained
    layouts draw the figure twice, which doubles the time a long report takes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight" if tight else None, metadata={"Software": None},
                # zlib level 1: lossless, 9% larger, 38% less time encoding than level 6 (0.11 vs 0.17 s, 7 charts)
                pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def _frame(fig: Figure, height_in: float, *, left: float = 0.075, bottom_in: float = 0.5, top_in: float = 0.55) -> None:
    fig.subplots_adjust(left=left, right=0.985, bottom=bottom_in / height_in, top=1 - top_in / height_in,
                        hspace=0.12, wspace=0.25)


def _message_png(title: str, message: str) -> bytes:
    fig = Figure(figsize=(WIDTH_IN, 1.3))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.text(0.5, 0.62, title, ha="center", va="center", fontsize=12, fontweight="bold", transform=ax.transAxes)
    ax.text(0.5, 0.25, message, ha="center", va="center", fontsize=10, color="#555555", wrap=True,
            transform=ax.transAxes)
    return _png(fig)


def _values(series: dict, scale: float) -> list[float]:
    return [math.nan if v is None else v / scale for v in series["v"]]


def _ticks(ax: Any, xs: list[float], height: float, transform: Any, **style: Any) -> None:
    """Short vertical marks at ``xs`` from the axis up to ``height`` (axes fraction), as one path broken
    by NaNs: what ``ax.vlines`` draws, without one segment object per mark (500 images, 20 axes: 0.3 s)."""
    x = [v for v in xs for v in (v, v, math.nan)]
    y = [0.0, height, math.nan] * len(xs)
    ax.plot(x, y, transform=transform, solid_capstyle="butt", scalex=False, scaley=False, **style)


class _Time:
    """The shared time axis and marks of a report (or of its zoomed end, ``start``..``end``)."""

    def __init__(self, report: dict, window: tuple[float, float] | None = None):
        tl = report.get("timeline") or {}
        self.phases = tl.get("phases") or []
        self.images = tl.get("images") or []
        self.marks = tl.get("marks") or []
        ends = [0.0]
        for s in tl.get("series") or []:
            if s.get("t"):
                ends.append(s["t"][-1])
        ends += [p["end"] for p in self.phases if p.get("end") is not None]
        ends += [i["end"] for i in self.images if i.get("end") is not None]
        self.start = window[0] if window else 0.0
        self.span = window[1] if window else (max(ends) or 1.0)
        self.div, self.label = _time_scale(self.span - self.start)

    def x(self, ts: list[float]) -> list[float]:
        return [t / self.div for t in ts]

    def decorate(self, ax: Any, *, bottom: bool, legend_phases: bool = False) -> None:
        for p in self.phases:
            end = p["end"] if p.get("end") is not None else self.span
            ax.axvspan(p["start"] / self.div, end / self.div, color=PHASE_COLORS.get(p["phase"], "#eeeeee"),
                       alpha=0.6, lw=0, zorder=0)
        tr = ax.get_xaxis_transform()
        ok = [i["start"] / self.div for i in self.images if i.get("start") is not None and i["outcome"] == "ok"]
        bad = [i["start"] / self.div for i in self.images if i.get("start") is not None and i["outcome"] != "ok"]
        if ok:
            _ticks(ax, ok, 0.05, tr, color="#777777", lw=0.6, zorder=3)
        if bad:
            _ticks(ax, bad, 0.12, tr, color="#d62728", lw=1.4, zorder=4)
        for m in self.marks:
            if not self.start <= m["t"] <= self.span:
                continue
            color = "#d62728" if m["kind"] == "xid" else "#ff7f0e"
            ax.axvline(m["t"] / self.div, color=color, ls="--" if m["kind"] == "xid" else ":", lw=1.2, zorder=5)
            if legend_phases:
                ax.text(m["t"] / self.div, 1.0, " " + m["label"], transform=tr, rotation=90, va="top", ha="left",
                        fontsize=7, color=color)
        width = (self.span - self.start) / self.div
        ax.set_xlim(self.start / self.div, self.start / self.div + width * 1.01)
        ax.grid(True, axis="y", alpha=0.3)
        if bottom:
            ax.set_xlabel(self.label)
        else:
            ax.tick_params(labelbottom=False)


def _series(report: dict, pred: Callable[[dict], bool]) -> list[dict]:
    return [s for s in (report.get("timeline") or {}).get("series") or [] if pred(s)]


def _source_reason(report: dict, src: str) -> str:
    for s in (report.get("monitors") or {}).get("sources") or []:
        if s.get("src") == src and s.get("status") != "available":
            return f"{src} {s.get('status')}" + (f": {s['reason']}" if s.get("reason") else "")
    return f"the journal has no {src} samples"


def _plot_group(ax: Any, tm: _Time, groups: list[dict], *, unit: str, ylabel: str) -> bool:
    drawn = False
    if not groups:
        return False
    if unit == "bytes":
        mx = max((v for s in groups for v in s["v"] if v is not None), default=0)
        scale, ulabel = _bytes_scale(mx)
    else:
        scale, ulabel = 1.0, unit
    for s in groups:
        if not s["t"]:
            continue
        ax.plot(tm.x(s["t"]), _values(s, scale), lw=1.1, label=s["label"] + (f" (GPU {s['gpu']})"
                                                                             if s.get("gpu") else ""))
        drawn = True
    ax.set_ylabel(f"{ylabel} ({ulabel})" if ulabel else ylabel, fontsize=8)
    if drawn:
        ax.legend(loc="upper left", fontsize=7, framealpha=0.8)
    return drawn


def _time_figure(report: dict, rows: list[tuple[str, list[dict], str]], title: str,
                 window: tuple[float, float] | None = None) -> bytes:
    tm = _Time(report, window)
    height = ROW_IN * len(rows) + 0.9
    fig = Figure(figsize=(WIDTH_IN, height))
    _frame(fig, height)
    axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    for i, (ylabel, groups, unit) in enumerate(rows):
        ax = axes[i]
        tm.decorate(ax, bottom=i == len(rows) - 1, legend_phases=i == 0)
        if not _plot_group(ax, tm, groups, unit=unit, ylabel=ylabel):
            ax.text(0.5, 0.5, f"no data for {ylabel}", ha="center", va="center", transform=ax.transAxes,
                    color="#777777")
            ax.set_yticks([])
    fig.suptitle(title, fontsize=11, x=0.01, y=1 - 0.08 / height, ha="left", va="top")
    handles = [matplotlib.patches.Patch(color=PHASE_COLORS[p], label=p) for p in PHASE_COLORS
               if any(ph["phase"] == p for ph in tm.phases)]
    handles += [matplotlib.lines.Line2D([], [], color="#777777", lw=0.8, label="image start"),
                matplotlib.lines.Line2D([], [], color="#d62728", lw=1.4, label="failed image / Xid")]
    fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.99, 1 - 0.25 / height), ncol=len(handles),
               fontsize=7, frameon=False)
    return _png(fig)


# ---- the charts --------------------------------------------------------------------------------


def gpu_memory_chart(report: dict) -> Chart:
    title = "GPU memory and BAR1 over time"
    nv = _series(report, lambda s: s["src"] == "nvml")
    if not nv:
        return Chart("gpu-memory", title, _message_png(title, "No NVML data in this run: "
                                                     + _source_reason(report, "nvml")), "no NVML data", True)
    mem = [s for s in nv if s["key"].endswith((".mem_used", ".gfx_procs_mem", ".worker_gpu_mem"))]
    bar1 = [s for s in nv if s["key"].endswith(".bar1_used")]
    alloc = _series(report, lambda s: s["src"] == "allocator" and s["key"].endswith(".reserved"))
    png = _time_figure(report, [("GPU memory", mem + alloc, "bytes"), ("BAR1", bar1, "bytes")], title)
    return Chart("gpu-memory", title, png, "GPU memory used, graphics processes, worker and BAR1 over time")


def process_memory_chart(report: dict) -> Chart:
    title = "Display server, compositor and worker memory over time"
    host = _series(report, lambda s: s["src"] == "host")
    display = [s for s in host if s["key"].startswith("host.display[")]
    worker = [s for s in host if s["key"].startswith("host.worker")]
    system = [s for s in host if s["key"] in ("host.mem_used", "host.swap_used")]
    gproc = _series(report, lambda s: s["src"] == "nvml" and ".procs[" in s["key"] and s.get("group") == "graphics")
    if not host and not gproc:
        return Chart("process-memory", title, _message_png(title, "No host samples in this run: "
                                                          + _source_reason(report, "host")), "no host data", True)
    rows = [("display RSS", display, "bytes"), ("worker RSS", worker, "bytes"),
            ("system", system, "bytes")]
    if gproc:
        rows.insert(1, ("GPU mem, graphics", gproc, "bytes"))
    elif not _series(report, lambda s: s["src"] == "nvml"):
        rows.insert(1, ("GPU mem, graphics (no NVML)", [], "bytes"))
    return Chart("process-memory", title, _time_figure(report, rows, title),
                 "memory of the display server, compositor and worker over time")


def clocks_chart(report: dict) -> Chart:
    title = "Clocks, temperature and power over time"
    nv = _series(report, lambda s: s["src"] == "nvml")
    if not nv:
        return Chart("clocks", title, _message_png(title, "No NVML data in this run: "
                                                  + _source_reason(report, "nvml")), "no NVML data", True)
    rows = [("clocks", [s for s in nv if s["key"].endswith((".clk_gfx", ".clk_mem"))], "MHz"),
            ("temperature", [s for s in nv if s["key"].endswith(".temp")], "°C"),
            ("power", [s for s in nv if s["key"].endswith(".power")], "W"),
            ("utilization", [s for s in nv if s["key"].endswith(".util_gpu")], "%")]
    return Chart("clocks", title, _time_figure(report, rows, title), "GPU clocks, temperature, power, utilization")


def probe_latency_chart(report: dict) -> Chart:
    title = "Desktop probe latency per phase (ok probes; failures counted above each box)"
    rows = (report.get("probes") or {}).get("rows") or []
    kinds = sorted({r["kind"] for r in rows})
    if not kinds:
        return Chart("probe-latency", title, _message_png(title, "No probes ran in this run."), "no probes", True)
    fig = Figure(figsize=(WIDTH_IN, 2.8))
    _frame(fig, 2.8, left=0.06, bottom_in=0.55, top_in=0.6)
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        by_phase = {r["phase"]: r for r in rows if r["kind"] == kind}
        phases = [p for p in PROBE_PHASES if p in by_phase] + sorted(p for p in by_phase if p not in PROBE_PHASES)
        data = [[x * 1000 for x in by_phase[p]["latencies"]] for p in phases]
        positions = list(range(1, len(phases) + 1))
        nonempty = [(pos, d) for pos, d in zip(positions, data) if d]
        if nonempty:
            bp = ax.boxplot([d for _, d in nonempty], positions=[p for p, _ in nonempty], widths=0.55,
                            showfliers=False, patch_artist=True)
            for patch, (pos, _) in zip(bp["boxes"], nonempty):
                patch.set_facecolor(PHASE_COLORS.get(phases[pos - 1], "#eeeeee"))
            # the strip: every probe as a point, jittered deterministically so reruns draw the same picture
            for pos, d in nonempty:
                xs = [pos + ((i * 0.6180339887) % 1 - 0.5) * 0.35 for i in range(len(d))]
                ax.scatter(xs, d, s=6, color="#333333", alpha=0.55, zorder=3)
        if not nonempty:
            statuses: dict[str, int] = {}
            for p in phases:
                for st, n in by_phase[p]["statuses"].items():
                    statuses[st] = statuses.get(st, 0) + n
            ax.text(0.5, 0.5, "no measurements\n" + ", ".join(f"{n}× {st}" for st, n in sorted(statuses.items())),
                    ha="center", va="center", transform=ax.transAxes, color="#777777", fontsize=8)
            ax.set_yticks([])
        top = max((max(d) for d in data if d), default=1.0)
        for pos, p in zip(positions, phases):
            f = by_phase[p]["failures"]
            n = by_phase[p]["n"]
            ax.text(pos, top * 1.08 if top else 1, f"{f}/{n} failed" if f else f"n={n}", ha="center",
                    fontsize=7, color="#d62728" if f else "#555555")
        ax.set_xticks(positions)
        ax.set_xticklabels(phases, fontsize=7, rotation=20)
        ax.set_xlim(0.4, len(phases) + 0.6)
        ax.set_ylim(0, top * 1.25 if top else 1)
        ax.set_title(kind, fontsize=9)
        ax.set_ylabel("ms", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=11, x=0.01, y=1 - 0.08 / 2.8, ha="left", va="top")
    return Chart("probe-latency", title, _png(fig), "probe latency distributions per phase")


KIND_COLORS = {"screenshot": "#4c72b0", "decode": "#55a868", "display": "#c44e52", "display-wayland": "#8172b2",
               "viewer": "#937860"}
# Where on the runner's phases each probe phase's host load was taken (the verdict's context.load).
LOAD_SPANS = {"baseline": "baseline", "during": "workload", "after": "after", "after-exit": "after-exit"}


def probe_load_chart(report: dict) -> Chart:
    """Probe latency (median per phase visit, kind and repeat round) and, on a second axis, the host
    measure the verdict's host rule compared, over the run's time axis: whether a slow phase was a busy
    machine. Where the journal has CPU pressure samples, each phase's share of time a task waited for
    a CPU (``verdict.details.context.cpu_pressure``); else the 1-minute load with the per-phase medians
    the verdict compared (``context.load``, dashed)."""
    context = ((report.get("verdict") or {}).get("details") or {}).get("context") or {}
    pressure = context.get("cpu_pressure") or {}
    title = ("Probe latency per visit and host CPU pressure per phase" if pressure
             else "Probe latency per visit and host load (1-min average) over time")
    visits = [v for v in (report.get("probes") or {}).get("visits") or [] if v.get("median_s") or v.get("failed")]
    if not visits:
        return Chart("probe-load", title, _message_png(title, "No probe was measured in this run."), "no probes", True)
    tm = _Time(report)
    height = 3.6
    fig = Figure(figsize=(WIDTH_IN, height))
    _frame(fig, height, top_in=0.8)
    fig.subplots_adjust(right=0.92)
    ax = fig.add_subplot(1, 1, 1)
    tm.decorate(ax, bottom=True, legend_phases=True)
    handles = []
    lows = [v["median_s"] * 1000 for v in visits if v.get("median_s")]
    low, high = (min(lows), max(lows)) if lows else (1.0, 10.0)
    for kind in sorted({v["kind"] for v in visits}):
        color = KIND_COLORS.get(kind, "#333333")
        mine = [v for v in visits if v["kind"] == kind and v.get("median_s")]
        if mine:
            ax.plot(tm.x([v["t"] for v in mine]), [v["median_s"] * 1000 for v in mine], color=color, lw=0.8,
                    marker="o", ms=3, zorder=4)
            handles.append(matplotlib.lines.Line2D([], [], color=color, marker="o", ms=3, lw=0.8, label=kind))
        again = [v for v in mine if v.get("repeat")]
        if again:
            ax.scatter(tm.x([v["t"] for v in again]), [v["median_s"] * 1000 for v in again], s=46,
                       facecolors="none", edgecolors=color, lw=1.2, zorder=5)
        bad = [v for v in visits if v["kind"] == kind and v.get("failed")]
        if bad:
            ax.scatter(tm.x([v["t"] for v in bad]), [high * 1.6] * len(bad), marker="x", color=color, s=22, zorder=5)
    if any(v.get("repeat") for v in visits):
        handles.append(matplotlib.lines.Line2D([], [], color="#555555", marker="o", mfc="none", ms=7, lw=0,
                                               label="repeat round"))
    if any(v.get("failed") for v in visits):
        handles.append(matplotlib.lines.Line2D([], [], color="#555555", marker="x", lw=0, label="visit with failures"))
    ax.set_yscale("log")
    ax.set_ylim(low / 1.5, high * 2.2)
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylabel("probe latency, median (ms)", fontsize=8)
    ax2 = ax.twinx()
    if pressure:
        _pressure_axis(ax2, tm, report, pressure, handles)
    else:
        _load_axis(ax2, tm, report, context.get("load") or {}, handles)
    handles += [matplotlib.patches.Patch(color=PHASE_COLORS[p], label=p) for p in PHASE_COLORS
                if any(ph["phase"] == p for ph in tm.phases)]
    fig.suptitle(title, fontsize=11, x=0.01, y=1 - 0.08 / height, ha="left", va="top")
    fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.99, 1 - 0.25 / height),
               ncol=min(len(handles), 7), fontsize=7, frameon=False)
    return Chart("probe-load", title, _png(fig), "probe latency per visit and host "
                 + ("CPU pressure per phase (what the verdict compared)" if pressure else "load")
                 + " on a second axis over time")


def _phase_steps(ax: Any, tm: _Time, report: dict, values: dict, scale: float, **style: Any) -> bool:
    """Each phase's value the verdict compared, as a horizontal line over that phase's windows."""
    drawn = False
    for phase, value in values.items():
        for sp in (report.get("timeline") or {}).get("phases") or []:
            if sp.get("phase") == LOAD_SPANS.get(phase) and isinstance(value, (int, float)):
                end = sp["end"] if sp.get("end") is not None else tm.span
                ax.hlines(value * scale, sp["start"] / tm.div, end / tm.div, **style)
                drawn = True
    return drawn


def _load_axis(ax2: Any, tm: _Time, report: dict, medians: dict, handles: list) -> None:
    """The host's 1-minute load, and the per-phase medians the verdict compared (journals without
    CPU pressure samples)."""
    load = _series(report, lambda s: s.get("key") == "host.load1")
    if load and load[0]["t"]:
        ax2.plot(tm.x(load[0]["t"]), _values(load[0], 1.0), color="#555555", lw=1.0, alpha=0.75, zorder=2)
        handles.append(matplotlib.lines.Line2D([], [], color="#555555", lw=1.0, label="host load (1 min)"))
        if _phase_steps(ax2, tm, report, medians, 1.0, colors="#222222", linestyles="--", lw=1.2):
            handles.append(matplotlib.lines.Line2D([], [], color="#222222", ls="--", lw=1.2,
                                                   label="phase load the verdict compared"))
        ax2.set_ylim(0, max([v for v in load[0]["v"] if v is not None] + [1.0]) * 1.15)
    else:
        ax2.text(0.99, 0.95, "no host load samples (" + _source_reason(report, "host") + ")", ha="right", va="top",
                 transform=ax2.transAxes, fontsize=7, color="#777777")
        ax2.set_yticks([])
    ax2.set_ylabel("host load (1-min average)", fontsize=8)


def _pressure_axis(ax2: Any, tm: _Time, report: dict, shares: dict, handles: list) -> None:
    """The share of each phase's time a task waited for a CPU (/proc/pressure/cpu), as the verdict's
    host rule compared it (stress.analysis.host_busier), in percent."""
    _phase_steps(ax2, tm, report, shares, 100.0, colors="#222222", linestyles="-", lw=1.8)
    handles.append(matplotlib.lines.Line2D([], [], color="#222222", lw=1.8,
                                           label="CPU wait per phase (the verdict's host rule)"))
    ax2.set_ylim(0, max(100.0 * max(v for v in shares.values() if isinstance(v, (int, float))) * 1.3, 10.0))
    ax2.set_ylabel("host: share of time a task waited for a CPU (%)", fontsize=8)


def image_times_chart(report: dict) -> Chart:
    title = "Time per image and per stage"
    images = [i for i in report.get("images") or [] if i.get("timings") or i.get("wall_s")]
    if not images:
        return Chart("image-times", title, _message_png(title, "No image finished in this run."), "no images", True)
    fig = Figure(figsize=(WIDTH_IN, 3.0))
    _frame(fig, 3.0, bottom_in=0.5, top_in=0.6)
    ax = fig.add_subplot(1, 1, 1)
    xs = [i["index"] for i in images]
    stages = [s for s in STAGE_COLORS if any(s in i["timings"] for i in images)]
    stages += sorted({k for i in images for k in i["timings"]} - set(stages))
    bottom = [0.0] * len(images)
    many = len(images) > 80
    width = 1.0 if len(images) > 60 else 0.8

    def stack(vals: list[float], color: str | None, label: str) -> None:
        top = [b + v for b, v in zip(bottom, vals)]
        if many:   # hundreds of bars are thousands of patches: draw the same stack as step areas
            ax.fill_between(xs, bottom, top, step="mid", color=color, label=label, lw=0)
        else:
            ax.bar(xs, vals, bottom=bottom, width=width, color=color, label=label, lw=0)
        bottom[:] = top

    for st in stages:
        stack([i["timings"].get(st) or 0.0 for i in images], STAGE_COLORS.get(st), st)
    other = [max(0.0, (i.get("wall_s") or 0.0) - b) for i, b in zip(images, bottom)]
    if any(o > 0.05 for o in other):
        stack(other, "#dddddd", "other (wall - stages)")
    failed = [(i["index"], (i.get("wall_s") or b)) for i, b in zip(images, bottom) if i["outcome"] != "ok"]
    if failed:
        ax.scatter([f[0] for f in failed], [f[1] * 1.04 + 0.01 for f in failed], marker="v", color="#d62728",
                   s=22, zorder=4, label="failed image")
    ax.set_xlabel("image index")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("seconds")
    ax.grid(True, axis="y", alpha=0.3)
    fig.legend(loc="upper right", bbox_to_anchor=(0.99, 1 - 0.25 / 3.0), fontsize=7, ncol=min(len(stages) + 2, 7),
               frameon=False)
    fig.suptitle(title, fontsize=11, x=0.01, y=1 - 0.08 / 3.0, ha="left", va="top")
    return Chart("image-times", title, _png(fig), "stacked bars of seconds per stage for every image")


def end_zoom_chart(report: dict) -> Chart | None:
    """Long runs only: the last minutes of the workload and what came after, in detail."""
    zoom = (report.get("timeline") or {}).get("zoom")
    if not zoom:
        return None
    title = "End of the run in detail: the workload's last minutes, then after / after-exit"
    zs = zoom.get("series") or []

    def pick(pred: Callable[[dict], bool]) -> list[dict]:
        return [s for s in zs if pred(s)]

    rows = [("GPU memory", pick(lambda s: s["src"] == "nvml" and s["key"].endswith((".mem_used", ".gfx_procs_mem"))),
             "bytes"),
            ("BAR1", pick(lambda s: s["key"].endswith(".bar1_used")), "bytes"),
            ("display RSS", pick(lambda s: s["key"].startswith("host.display[")), "bytes"),
            ("GPU mem, graphics", pick(lambda s: ".procs[" in s["key"] and s.get("group") == "graphics"), "bytes")]
    rows = [r for r in rows if r[1]]
    if not rows:
        return None
    return Chart("end-zoom", title, _time_figure(report, rows, title, (zoom["start"], zoom["end"])),
                 "the end of the run in detail")


CHARTS: tuple[Callable[[dict], Chart | None], ...] = (gpu_memory_chart, process_memory_chart, end_zoom_chart,
                                                      clocks_chart, probe_latency_chart, probe_load_chart,
                                                      image_times_chart)


def _render(report: dict, fns) -> list[tuple[Chart | None, str | None]]:
    out: list[tuple[Chart | None, str | None]] = []
    for fn in fns:
        try:
            out.append((fn(report), None))  # None: a chart that only applies to some runs (the zoom)
        except Exception as exc:  # noqa: BLE001 - one bad chart must not cost the whole report
            name = fn.__name__.removesuffix("_chart").replace("_", "-")
            out.append((Chart(name, name, _message_png(name, f"could not be drawn: {type(exc).__name__}"),
                              "chart error", True), f"chart {name} could not be drawn: {type(exc).__name__}: {exc}"))
    return out


def render_charts(report: dict) -> tuple[list[Chart], list[str]]:
    """Every chart; a chart that fails to draw becomes a picture saying so, plus a warning. Half of them
    are drawn in a second process at the same time (``stress.background``), when it can fork."""
    from stress.background import Background

    mine, theirs = CHARTS[1::2], CHARTS[0::2]
    job = Background(lambda: _render(report, theirs))
    try:
        here = _render(report, mine)
        there = job.result()
    finally:
        job.cancel()
    done = dict(zip(mine, here)) | dict(zip(theirs, there))
    out, warnings = [], []
    for fn in CHARTS:
        chart, warning = done[fn]
        if chart is not None:
            out.append(chart)
        if warning:
            warnings.append(warning)
    return out, warnings
