"""report.json: one document, built in one pass over the journal, that every rendering is made from.

The journal (docs/journal.md) is read line by line; each event updates a small aggregate, and sample
events (``nvml``, ``host``, ``alloc``) become columns of numbers that numpy summarises and downsamples
at the end. A damaged run directory (torn last line, no ``run_end``, missing files) still gives a
report: what is missing is listed under ``completeness`` instead of failing.

The schema of report.json is the pydantic model :class:`Report` (``report_json_schema()`` exports it
as JSON Schema); docs/report-format.md describes each section.
"""
from __future__ import annotations

import gc
import json
import math
import os
import re
import shlex
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stress import __version__
from stress.errors import StressError
from stress.journal import JournalStream, RunDir
from stress.report.redact import Redactor, prompt_digest, prompt_placeholder

SCHEMA_VERSION = 1
TIMELINE_BUCKETS = 500           # per series: at most 2 points (min and max) per bucket
ZOOM_AFTER_S = 1200              # runs longer than this get a detailed view of their end
ZOOM_LEAD_S = (60, 300)          # ... from 2x the after-workload time (within these bounds) before its end
PROBE_PHASES = ("baseline", "during", "after", "after-exit")
FAILED_PROBE = ("fail", "timeout", "error")


# --------------------------------------------------------------------------------------------
# What the samplers' numbers mean. Unknown keys are still summarised (label = key, no unit), so a
# new sampler field shows up in report.json without a change here.


@dataclass(frozen=True)
class MetricInfo:
    label: str
    unit: str = ""
    kind: Literal["gauge", "counter"] = "gauge"
    chart: bool = False     # goes into the timeline (report.json) and the charts


# The samplers write compact keys (docs/monitors.md, stress/hw/nvml.py); they are renamed to these
# readable names on the way in. Long names in a journal are taken as they are.
NVML_KEYS = {"mu": "mem_used", "mf": "mem_free", "mr": "mem_reserved", "mt": "mem_total", "b1u": "bar1_used",
             "b1t": "bar1_total", "ug": "util_gpu", "um": "util_mem", "cg": "clk_gfx", "cm": "clk_mem",
             "thr": "throttle", "tc": "temp", "pw": "power", "ps": "pstate", "pg": "pcie_gen",
             "pwd": "pcie_width", "pl": "power_limit", "prc": "pcie_replay", "da": "display_active",
             "dm": "display_mode"}
NVML_LIST_KEYS = {"rr": ("remapped_corr", "remapped_unc", "remap_pending", "remap_failure"),
                  "rp": ("retired_sbe", "retired_dbe", "retired_pending")}
# Written only when they change: a reader carries the last value forward (stress.hw.nvml.CHANGE_ONLY_KEYS).
NVML_CARRY = frozenset({"mem_reserved", "mem_total", "bar1_total", "power_limit", "pcie_gen", "pcie_width",
                        "pcie_replay", "display_active", "display_mode", *NVML_LIST_KEYS["rr"],
                        *NVML_LIST_KEYS["rp"]})
HOST_KEYS = {"ma": "mem_available", "mu": "mem_used", "su": "swap_used", "mt": "mem_total", "st": "swap_total"}
HOST_CARRY = frozenset({"mem_total", "swap_total"})

NVML_METRICS: dict[str, MetricInfo] = {
    "mem_used": MetricInfo("GPU memory used", "bytes", chart=True),
    "mem_free": MetricInfo("GPU memory free", "bytes"),
    "mem_total": MetricInfo("GPU memory total", "bytes"),
    "mem_reserved": MetricInfo("GPU memory reserved by the driver", "bytes"),
    "bar1_used": MetricInfo("BAR1 used", "bytes", chart=True),
    "bar1_total": MetricInfo("BAR1 total", "bytes"),
    "util_gpu": MetricInfo("GPU utilization", "%", chart=True),
    "util_mem": MetricInfo("memory controller utilization", "%"),
    "clk_gfx": MetricInfo("graphics clock", "MHz", chart=True),
    "clk_sm": MetricInfo("SM clock", "MHz"),
    "clk_mem": MetricInfo("memory clock", "MHz", chart=True),
    "clk_video": MetricInfo("video clock", "MHz"),
    "temp": MetricInfo("GPU temperature", "°C", chart=True),
    "temp_mem": MetricInfo("memory temperature", "°C"),
    "power": MetricInfo("power draw", "W", chart=True),
    "power_limit": MetricInfo("power limit", "W"),
    "fan": MetricInfo("fan speed", "%"),
    "pstate": MetricInfo("performance state", ""),
    "pcie_replay": MetricInfo("PCIe replay counter", "count", "counter", chart=True),
    "pcie_gen": MetricInfo("PCIe link generation", ""),
    "pcie_width": MetricInfo("PCIe link width", ""),
    "throttle": MetricInfo("clock event (throttle) reasons, bitmask", ""),
    "display_active": MetricInfo("display active", ""),
    "display_mode": MetricInfo("display mode", ""),
    "remapped_corr": MetricInfo("rows remapped (correctable errors)", "count", "counter"),
    "remapped_unc": MetricInfo("rows remapped (uncorrectable errors)", "count", "counter"),
    "remap_pending": MetricInfo("row remapping pending", ""),
    "remap_failure": MetricInfo("row remapping failed", ""),
    "retired_sbe": MetricInfo("pages retired (single-bit ECC)", "count", "counter"),
    "retired_dbe": MetricInfo("pages retired (double-bit ECC)", "count", "counter"),
    "retired_pending": MetricInfo("page retirement pending", ""),
    "gfx_procs_mem": MetricInfo("GPU memory of graphics processes", "bytes", chart=True),
    "worker_gpu_mem": MetricInfo("GPU memory of the worker (NVML)", "bytes", chart=True),
}
HOST_METRICS: dict[str, MetricInfo] = {
    "mem_used": MetricInfo("system memory used", "bytes", chart=True),
    "mem_available": MetricInfo("system memory available", "bytes"),
    "mem_total": MetricInfo("system memory total", "bytes"),
    "swap_used": MetricInfo("swap used", "bytes", chart=True),
    "swap_total": MetricInfo("swap total", "bytes"),
    "load1": MetricInfo("load average (1 min)", ""),
    "load5": MetricInfo("load average (5 min)", ""),
    "load15": MetricInfo("load average (15 min)", ""),
    "cpu": MetricInfo("CPU utilization", "%"),
    "worker.rss": MetricInfo("worker RSS (process tree)", "bytes", chart=True),
    "worker.cpu": MetricInfo("worker CPU (process tree)", "%"),
    "worker.threads": MetricInfo("worker threads (process tree)", ""),
    "worker.procs": MetricInfo("worker processes (tree)", ""),
    "worker.zombies": MetricInfo("worker zombie processes", ""),
}
ALLOC_METRICS: dict[str, MetricInfo] = {
    "allocated": MetricInfo("CUDA memory allocated (torch)", "bytes", chart=True),
    "reserved": MetricInfo("CUDA memory reserved (torch)", "bytes", chart=True),
    "peak_allocated": MetricInfo("peak CUDA memory allocated (torch)", "bytes"),
    "peak_reserved": MetricInfo("peak CUDA memory reserved (torch)", "bytes"),
    "num_alloc_retries": MetricInfo("allocator retries (cudaMalloc after cache flush)", "count", "counter"),
    "num_ooms": MetricInfo("allocator out-of-memory events", "count", "counter"),
    "inactive_split": MetricInfo("inactive split blocks (fragmentation)", "bytes"),
    "rss": MetricInfo("worker RSS (CPU device)", "bytes", chart=True),
    "peak_rss": MetricInfo("worker peak RSS (CPU device)", "bytes"),
}
_COUNTER_RE = re.compile(r"replay|_count$|^ecc|retired|errors?$|num_")
_ENVELOPE = frozenset({"ev", "t", "gpu", "worker", "pid", "index", "at"})
_DISPLAY_LIST_KEYS = ("display", "compositor", "display_procs")
_DISPLAY_FIELDS = {"r": "rss", "c": "cpu", "t": "threads", "fd": "fds"}
_WORKER_FIELDS = (("r", "worker.rss"), ("c", "worker.cpu"), ("t", "worker.threads"), ("n", "worker.procs"),
                  ("z", "worker.zombies"))
_GRAPHICS_TYPES = ("graphics", "g", "c+g", "gfx")


def _metric_info(src: str, key: str) -> MetricInfo:
    table = {"nvml": NVML_METRICS, "host": HOST_METRICS, "allocator": ALLOC_METRICS}.get(src, {})
    if key in table:
        return table[key]
    m = re.fullmatch(r"(display|procs)\[(.+)\]\.(\w+)", key)
    if m:
        what, name, fld = m.groups()
        if what == "procs":
            return MetricInfo(f"GPU memory of {name} (NVML)", "bytes", chart=True)
        label, unit = {"rss": ("RSS", "bytes"), "cpu": ("CPU", "%"), "threads": ("threads", ""),
                       "fds": ("open files", "")}.get(fld, (fld, ""))
        return MetricInfo(f"{name} {label}", unit, chart=fld == "rss")
    kind: Literal["gauge", "counter"] = "counter" if _COUNTER_RE.search(key) else "gauge"
    return MetricInfo(key, "", kind)


# --------------------------------------------------------------------------------------------
# Schema (pydantic models; the JSON Schema is exported from them)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class VerdictModel(_Strict):
    verdict: str = Field(description="reproduced | not-reproduced | inconclusive | error | incomplete")
    reasons: list[str]
    exit_code: int | None
    source: Literal["journal", "derived"] = Field(description="journal: the runner's verdict event; derived: "
                                                  "there was none, the report says why")
    details: Any = None


class RunInfo(_Strict):
    run_id: str
    scenario: str | None
    scenario_sha256: str | None
    command: str | None = Field(description="the command line that started the run (redacted)")
    argv: list[str]
    stress_version: str | None
    started_at: float | None
    started: str | None = Field(description="local time with UTC offset")
    ended_at: float | None
    ended: str | None
    status: str = Field(description="run_end status, or 'incomplete' when the journal has no run_end")
    resumed: bool
    wall_s: float | None


class GpuInfo(_Open):
    index: int | None = None
    name: str | None = None
    uuid: str | None = None
    nvidia_smi_l: str = Field(description="the line `nvidia-smi -L` prints for this GPU (UUID masked)")


class Machine(_Strict):
    os: str | None
    kernel: str | None
    kernel_uname: str | None = Field(description="as `uname -a` prints it (host name masked)")
    kernel_stable: bool | None = Field(description="false for -rc kernels, which NVIDIA does not take reports on")
    driver: str | None
    driver_flavor: str | None = Field(description="open | proprietary kernel modules, when known")
    cuda_driver: str | None
    gpus: list[GpuInfo]
    display_server: str | None
    session_type: str | None
    desktop: str | None
    compositor: str | None
    cpu: str | None
    ram_total: int | None
    python: str | None
    libraries: dict[str, str | None]


class LatencyStats(_Strict):
    n: int
    min: float | None
    p50: float | None
    p95: float | None
    max: float | None
    mean: float | None


class ProbeRow(_Strict):
    phase: str
    kind: str
    n: int
    statuses: dict[str, int]
    failures: int = Field(description="fail + timeout + error")
    latency: LatencyStats = Field(description="over probes with status ok")
    latencies: list[float] = Field(description="every ok probe's latency in seconds, in order")
    reasons: dict[str, int] = Field(description="failure reasons and how often each occurred")
    first_failure_t: float | None = Field(description="seconds since the run started")


class ProbeCompare(_Strict):
    kind: str
    baseline_p50: float | None
    after_p50: float | None
    after_exit_p50: float | None
    ratio_after: float | None
    ratio_after_exit: float | None
    baseline_failures: int
    after_failures: int
    after_exit_failures: int


class Probes(_Strict):
    total: int
    rows: list[ProbeRow]
    compare: list[ProbeCompare]


class Metric(_Strict):
    key: str
    src: str
    gpu: int | None
    group: str | None = Field(None, description="as in timeline series: graphics | compute | display")
    label: str
    unit: str
    kind: Literal["gauge", "counter"]
    n: int
    first: float | None
    baseline: float | None = Field(description="median before the workload started")
    peak: float | None
    peak_t: float | None
    min: float | None
    after: float | None = Field(description="median in the 'after' phase (worker still alive)")
    after_exit: float | None = Field(description="median in the 'after-exit' phase (worker gone)")
    last: float | None
    delta_after: float | None
    delta_after_exit: float | None
    delta_last: float | None
    increments: int | None = Field(None, description="counters: how many samples saw the counter rise")
    first_increase_t: float | None = None


class Gap(_Strict):
    start_t: float
    end_t: float
    s: float


class SourceEvent(_Strict):
    t: float | None
    status: str
    reason: str | None


class SourceInfo(_Strict):
    src: str
    gpu: int | None
    status: str = Field(description="available | unavailable | absent (no source event and no samples); "
                        "the last word of the samplers on this source")
    reason: str | None
    unsupported: dict[str, str] = Field(description="fields this GPU/driver could not give, and why")
    info: dict = Field(description="what the source event said besides its status (e.g. kernel log: via)")
    history: list[SourceEvent] = Field(description="every status change, in order")
    samples: int
    first_t: float | None
    last_t: float | None
    interval_s: float | None
    gaps: list[Gap] = Field(description="the longest breaks in sampling (a frozen machine shows here)")


class ProcessChange(_Strict):
    t: float
    name: str
    change: Literal["restarted", "vanished", "appeared"]
    old_pid: int | None
    new_pid: int | None


class Monitors(_Strict):
    sources: list[SourceInfo]
    metrics: list[Metric]
    display_processes: list[ProcessChange]
    gpus: list[dict]
    summary: dict | None = Field(None, description="the samplers' own account (monitors_summary event): ticks, "
                                 "skipped ticks, CPU overhead, suppressed kernel-log lines")


class XidEvent(_Open):
    duplicate: bool = Field(False, description="the same Xid already reported by the other source "
                            "(NVML event vs kernel log) within 3 s")
    t: float | None
    t_rel: float | None
    time: str | None
    gpu: Any = None
    xid: int | None
    category: str | None = None
    description: str | None = None
    source: str | None = None
    raw: str | None = None


class KernelLog(_Strict):
    lines: int
    suppressed: int = Field(0, description="lines the samplers' rate limit dropped (a flood of driver messages)")
    tail: list[dict]


class WorkerInfo(_Open):
    worker: int | None
    pid: int | None
    reason: str | None
    started_t: float | None
    ready_t: float | None = None
    load_s: float | None = None
    device: str | None = None
    dtype: str | None = None
    exit_t: float | None = None
    returncode: int | None = None
    signal: str | None = None
    exit_reason: str | None = None
    stderr_tail: str | None = None
    load_error: str | None = None


class ImageRecord(_Open):
    index: int
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    refiner_steps: int | None = None
    cfg: float | None = None
    outcome: str = Field(description="ok | oom | crash | timeout | error | skipped | incomplete (started, "
                         "never finished)")
    error: str | None = None
    t_start: float | None = Field(None, description="seconds since the run started")
    t_end: float | None = None
    wall_s: float | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    sha256: str | None = None
    file: str | None = None
    prompt: Any = None
    alloc: dict[str, float] = Field(default_factory=dict)


class Workload(_Strict):
    images_planned: int | None
    images_started: int
    images_ok: int
    images_failed: int = Field(description="oom, crash, timeout, error")
    images_unfinished: int = Field(description="started and never finished (the run stopped during them)")
    outcomes: dict[str, int]
    latent_positions: int = Field(description="sum over ok images of (width/8)*(height/8)")
    unet_evaluations: int = Field(description="sum over ok images of (steps + refiner_steps) * (2 if cfg > 1 else 1)")
    wall_s: float | None
    workload_s: float | None
    images_per_min: float | None
    image_s: LatencyStats
    stage_s: dict[str, float] = Field(description="total seconds per stage over all images")
    resolutions: dict[str, int]
    scheduler: Any = None


class Series(_Strict):
    key: str
    src: str
    gpu: int | None
    label: str
    unit: str
    group: str | None = Field(None, description="procs[...] series: graphics | compute (NVML's process lists); "
                              "display[...]: display")
    t: list[float] = Field(description="seconds since the run started")
    v: list[float | None] = Field(description="null breaks the line where sampling stopped")
    n: int = Field(description="samples before downsampling")


class PhaseSpan(_Strict):
    phase: str
    start: float
    end: float | None


class ImageSpan(_Strict):
    index: int
    start: float | None
    end: float | None
    outcome: str


class TimelineMark(_Strict):
    t: float
    kind: str
    label: str


class Zoom(_Strict):
    start: float
    end: float
    series: list[Series]


class Timeline(_Strict):
    t0: float | None = Field(description="unix time of the run's start; every t in the report is relative to it")
    downsample: dict
    series: list[Series]
    zoom: Zoom | None = Field(None, description="runs over 20 min: the end of the run in finer detail (from 1-5 "
                              "min before the workload ended), where the after phases show")
    phases: list[PhaseSpan]
    images: list[ImageSpan]
    marks: list[TimelineMark] = Field(description="Xid events, worker crashes/exits, display process restarts")


class Completeness(_Strict):
    complete: bool
    missing: list[str] = Field(description="what the run dir lacks because the run did not end normally")
    notes: list[str] = Field(description="facts about the data (a source unavailable, a gap in sampling)")
    torn_tail: bool
    bad_lines: int
    events: int
    event_counts: dict[str, int]
    first_event_t: float | None
    last_event_t: float | None
    last_event: str | None
    files: dict[str, bool]


class Report(_Strict):
    schema_version: Literal[1]
    generated_at: float
    generator: str
    run_id: str
    verdict: VerdictModel
    exit_code: int | None
    run: RunInfo
    machine: Machine
    environment: dict
    scenario: dict | None
    images: list[ImageRecord]
    probes: Probes
    monitors: Monitors
    xid_events: list[XidEvent]
    kernel_log: KernelLog
    workers: list[WorkerInfo]
    workload: Workload
    timeline: Timeline
    completeness: Completeness
    redaction: dict
    attachments: list[dict] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


def report_json_schema() -> dict:
    """JSON Schema (draft 2020-12) of report.json."""
    schema = Report.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "stress report.json"
    schema["description"] = f"schema_version {SCHEMA_VERSION}; see docs/report-format.md"
    return schema


def validate_report(report: dict) -> None:
    """Raise pydantic.ValidationError if ``report`` does not follow the schema."""
    Report.model_validate(report)


# --------------------------------------------------------------------------------------------
# Reading


def _read_json_file(path: Path, notes: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} cannot be read ({type(exc).__name__}); it is left out")
        return None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(v: Any) -> int | None:
    f = _num(v)
    return int(f) if f is not None else None


def _str(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else str(v)


def iso(t: float | None) -> str | None:
    """Local wall-clock time with its UTC offset: what the user's own logs (journalctl) show."""
    if t is None:
        return None
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(t))
    except (OverflowError, OSError, ValueError):
        return None


class _Columns:
    """Samples of one source as aligned columns (None where a tick lacked a field)."""

    __slots__ = ("t", "cols")

    def __init__(self) -> None:
        self.t: list[float] = []
        self.cols: dict[str, list] = {}

    def add(self, t: float, values: dict) -> None:
        n = len(self.t)
        cols = self.cols
        for k, v in values.items():
            col = cols.get(k)
            if col is None:
                col = cols[k] = [None] * n
            col.append(v)
        self.t.append(t)
        if len(values) < len(cols):   # some column got nothing this tick: pad it
            n += 1
            for col in cols.values():
                if len(col) < n:
                    col.append(None)


def _numbers(ev: dict, out: dict, prefix: str = "") -> None:
    """Top-level numbers of a sample and one level of nested dicts (``worker.rss``)."""
    for k, v in ev.items():
        tv = type(v)
        if tv is int or tv is float:
            if not prefix and k in _ENVELOPE:
                continue
            out[prefix + k] = v
        elif tv is dict and not prefix:
            _numbers(v, out, k + ".")


class _Agg:
    """Everything the report needs, collected in one pass."""

    def __init__(self) -> None:
        self.count = 0
        self.kinds: Counter = Counter()
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.last_ev: str | None = None
        self.run_start: dict | None = None
        self.run_end: dict | None = None
        self.verdict: dict | None = None
        self.env_event: dict | None = None
        self.plan: dict | None = None
        self.phase_events: list[tuple[str, str, float]] = []
        self.workers: dict[int, dict] = {}
        self.worker_pids: set[int] = set()
        self.image_starts: dict[int, dict] = {}
        self.images: dict[int, dict] = {}
        self.stages: dict[int, dict] = {}
        self.alloc_by_image: dict[int, dict] = {}
        self.source_events: list[dict] = []
        self.gpu_static: dict[Any, dict] = {}
        self.nvml: dict[int, _Columns] = {}
        self.host = _Columns()
        self.alloc = _Columns()
        self.xids: list[dict] = []
        self.kmsg_count = 0
        self.kmsg_suppressed = 0
        self.kmsg_tail: deque = deque(maxlen=100)
        self.probes: list[tuple] = []
        self.display_changes: list[dict] = []
        self._display_pids: dict[str, int | None] = {}
        self._display_seen_any = False
        self._display_last_pid: dict[str, int] = {}
        self._nvml_carry: dict[int, dict] = {}
        self._nvml_procs: dict[int, dict] = {}
        self._host_carry: dict = {}
        self.proc_groups: dict[str, str] = {}
        self._keys: dict[tuple, str] = {}      # column names built once, not once per tick
        self.prompts: list[str] = []
        self.resumes: list[dict] = []
        self.monitors_summary: dict | None = None

    def feed(self, ev: dict) -> None:
        kind = ev.get("ev")
        t = ev.get("t")
        if type(t) is not float and type(t) is not int:
            t = _num(t)
            if t is None:
                self.kinds[str(kind)] += 1
                return
        self.count += 1
        self.kinds[kind] += 1
        if self.first_t is None or t < self.first_t:
            self.first_t = t
        if self.last_t is None or t >= self.last_t:
            self.last_t = t
            self.last_ev = kind
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, ev, t)

    # ---- handlers ----
    def _nvml(self, ev: dict, t: float) -> None:
        gpu = ev.get("gpu")
        gpu = gpu if type(gpu) is int else (_int(gpu) or 0)
        cols = self.nvml.get(gpu)
        if cols is None:
            cols = self.nvml[gpu] = _Columns()
            self._nvml_carry[gpu] = {}
            self._nvml_procs[gpu] = {}
        carry = self._nvml_carry[gpu]
        values: dict = {}
        for k, v in ev.items():
            tv = type(v)
            if tv is int or tv is float:
                if k in _ENVELOPE:
                    continue
                name = NVML_KEYS.get(k, k)
                values[name] = v
                if name in NVML_CARRY:
                    carry[name] = v
            elif tv is list:
                names = NVML_LIST_KEYS.get(k)
                if names:
                    for name, x in zip(names, v):
                        if type(x) is int or type(x) is float:
                            values[name] = carry[name] = x
                elif k in ("gp", "cp", "procs"):
                    self._nvml_procs[gpu][k] = v     # change-only: kept until the next list
                    for p in v:
                        if type(p) is list and len(p) >= 2:
                            self.proc_groups[str(p[1])] = "graphics" if k == "gp" else "compute"
                        elif type(p) is dict and p.get("name"):
                            ptype = str(p.get("type", "graphics" if k == "gp" else "compute")).lower()
                            self.proc_groups[str(p["name"])] = "graphics" if ptype in _GRAPHICS_TYPES else "compute"
            elif tv is dict:
                for k2, v2 in v.items():
                    if type(v2) is int or type(v2) is float:
                        values[f"{k}.{k2}"] = v2
        for name, v in carry.items():
            if name not in values:
                values[name] = v
        procs = self._nvml_procs[gpu]
        if procs:
            gfx = 0
            worker_mem = None
            pids = self.worker_pids
            for k, lst in procs.items():
                for p in lst:
                    if type(p) is list and len(p) >= 3:        # compact: [pid, name, mem]
                        pid, name, mem = p[0], p[1], p[2]
                        ptype = "graphics" if k == "gp" else "compute"
                    elif type(p) is dict:
                        pid, name, mem = p.get("pid"), p.get("name"), p.get("mem")
                        ptype = str(p.get("type", "graphics" if k == "gp" else "compute")).lower()
                    else:
                        continue
                    if type(mem) is not int and type(mem) is not float:
                        continue
                    key = self._keys.get((k, name, pid))
                    if key is None:
                        key = self._keys[(k, name, pid)] = f"procs[{name or f'pid {pid}'}].mem"
                    values[key] = values.get(key, 0) + mem
                    if ptype in _GRAPHICS_TYPES:
                        gfx += mem
                    if pid in pids:
                        worker_mem = (worker_mem or 0) + mem
            values["gfx_procs_mem"] = gfx
            if worker_mem is not None:
                values["worker_gpu_mem"] = worker_mem
        cols.add(t, values)

    def _host(self, ev: dict, t: float) -> None:
        values: dict = {}
        carry = self._host_carry
        for k, v in ev.items():
            tv = type(v)
            if tv is int or tv is float:
                if k in _ENVELOPE:
                    continue
                name = HOST_KEYS.get(k, k)
                values[name] = v
                if name in HOST_CARRY:
                    carry[name] = v
            elif k == "ld" and tv is list:
                for name, x in zip(("load1", "load5", "load15"), v):
                    if type(x) is int or type(x) is float:
                        values[name] = x
            elif k == "wk" and tv is list:          # one entry per worker process tree
                for w in v:
                    if type(w) is not dict:
                        continue
                    for short, name in _WORKER_FIELDS:
                        x = w.get(short)
                        if type(x) is int or type(x) is float:
                            values[name] = values.get(name, 0) + x
            elif tv is dict and k not in _DISPLAY_LIST_KEYS:
                for k2, v2 in v.items():
                    if type(v2) is int or type(v2) is float:
                        values[f"{k}.{k2}"] = v2
        for name, v in carry.items():
            if name not in values:
                values[name] = v
        for lk in ("ds",) + _DISPLAY_LIST_KEYS:
            lst = ev.get(lk)
            if type(lst) is not list:
                continue
            seen: dict[str, int | None] = {}
            for p in lst:
                if type(p) is not dict:
                    continue
                pid = p.get("p", p.get("pid"))
                name = str(p.get("nm") or p.get("name") or f"pid {pid}")
                seen.setdefault(name, pid if type(pid) is int else None)
                keys = self._keys
                for k, v in p.items():
                    if (type(v) is int or type(v) is float) and k != "p" and k != "pid":
                        key = keys.get((name, k))
                        if key is None:
                            key = keys[(name, k)] = f"display[{name}].{_DISPLAY_FIELDS.get(k, k)}"
                        values[key] = values.get(key, 0) + v
            self._track_display(t, seen)
            break
        self.host.add(t, values)

    def _track_display(self, t: float, seen: dict[str, int | None]) -> None:
        """Note when a display-server/compositor process restarts (new pid), vanishes or appears."""
        known = self._display_pids
        changes = self.display_changes
        for name, pid in seen.items():
            if name not in known:
                if self._display_seen_any:   # not part of the first sample's set: it appeared mid-run
                    changes.append({"t": t, "name": name, "change": "appeared", "old_pid": None, "new_pid": pid})
            elif known[name] is None:
                old = self._display_last_pid.get(name)
                changes.append({"t": t, "name": name, "change": "restarted" if old not in (None, pid) else "appeared",
                                "old_pid": old, "new_pid": pid})
            elif pid is not None and known[name] != pid:
                changes.append({"t": t, "name": name, "change": "restarted", "old_pid": known[name],
                                "new_pid": pid})
            known[name] = pid
            if pid is not None:
                self._display_last_pid[name] = pid
        for name, old in known.items():
            if name not in seen and old is not None:
                changes.append({"t": t, "name": name, "change": "vanished", "old_pid": old, "new_pid": None})
                known[name] = None
        if seen:
            self._display_seen_any = True

    def _alloc(self, ev: dict, t: float) -> None:
        values: dict = {}
        _numbers(ev, values)
        self.alloc.add(t, values)
        idx = ev.get("index")
        if type(idx) is int:
            peaks = self.alloc_by_image.setdefault(idx, {})
            for k, v in values.items():
                if k in ("allocated", "reserved", "free", "total"):
                    continue
                peaks[k] = max(peaks.get(k, v), v)

    def _image_start(self, ev: dict, t: float) -> None:
        idx = _int(ev.get("index"))
        if idx is not None:
            self.image_starts[idx] = dict(ev, t=t)

    def _image(self, ev: dict, t: float) -> None:
        idx = _int(ev.get("index"))
        if idx is None:
            return
        self.images[idx] = dict(ev, t=t)
        for k in ("prompt", "negative_prompt"):
            if isinstance(ev.get(k), str):
                self.prompts.append(ev[k])

    def _stage(self, ev: dict, t: float) -> None:
        idx = _int(ev.get("index"))
        s = _num(ev.get("s"))
        if idx is not None and s is not None and ev.get("stage"):
            st = self.stages.setdefault(idx, {})
            st[str(ev["stage"])] = st.get(str(ev["stage"]), 0.0) + s

    def _phase(self, ev: dict, t: float) -> None:
        self.phase_events.append((str(ev.get("phase")), str(ev.get("state")), t))

    def _worker_start(self, ev: dict, t: float) -> None:
        w = _int(ev.get("worker"))
        pid = _int(ev.get("pid"))
        if pid is not None:
            self.worker_pids.add(pid)
        self.workers[w if w is not None else len(self.workers)] = {
            "worker": w, "pid": pid, "reason": _str(ev.get("reason")), "started_t": t}

    def _worker_ready(self, ev: dict, t: float) -> None:
        w = self.workers.setdefault(_int(ev.get("worker")) or 0, {"worker": _int(ev.get("worker")),
                                                                    "pid": _int(ev.get("pid")),
                                                                    "reason": None, "started_t": None})
        w.update(ready_t=t, load_s=_num(ev.get("load_s")), device=_str(ev.get("device")),
                 dtype=_str(ev.get("dtype")))
        for k in ("torch", "cuda", "models"):
            if ev.get(k) is not None:
                w[k] = ev[k]

    def _worker_exit(self, ev: dict, t: float) -> None:
        w = self.workers.setdefault(_int(ev.get("worker")) or 0, {"worker": _int(ev.get("worker")),
                                                                    "pid": _int(ev.get("pid")),
                                                                    "reason": None, "started_t": None})
        tail = _str(ev.get("stderr_tail")) or None
        w.update(exit_t=t, returncode=_int(ev.get("returncode")), signal=_str(ev.get("signal")),
                 exit_reason=_str(ev.get("reason")), stderr_tail=tail[-2000:] if tail else None)

    def _load_failed(self, ev: dict, t: float) -> None:
        w = self.workers.setdefault(_int(ev.get("worker")) or 0, {"worker": _int(ev.get("worker")),
                                                                    "pid": None, "reason": None,
                                                                    "started_t": None})
        w["load_error"] = _str(ev.get("error"))

    def _source(self, ev: dict, t: float) -> None:
        self.source_events.append(dict(ev, t=t))

    def _gpu_static(self, ev: dict, t: float) -> None:
        self.gpu_static[ev.get("gpu", len(self.gpu_static))] = ev

    def _xid(self, ev: dict, t: float) -> None:
        self.xids.append(dict(ev, t=t))

    def _kmsg(self, ev: dict, t: float) -> None:
        self.kmsg_count += 1
        self.kmsg_suppressed += _int(ev.get("suppressed")) or 0
        self.kmsg_tail.append({"t": t, "line": _str(ev.get("line")) or ""})

    def _probe(self, ev: dict, t: float) -> None:
        self.probes.append((str(ev.get("phase")), str(ev.get("kind")), str(ev.get("status")),
                            _num(ev.get("latency_s")), _str(ev.get("reason")), t))

    def _resume(self, ev: dict, t: float) -> None:
        self.resumes.append(ev)


def _keep_first(name: str):
    def handler(agg: _Agg, ev: dict, t: float) -> None:
        if getattr(agg, name) is None:
            setattr(agg, name, ev)
    return handler


def _keep_last(name: str):
    def handler(agg: _Agg, ev: dict, t: float) -> None:
        setattr(agg, name, ev)
    return handler


_HANDLERS = {
    "nvml": _Agg._nvml, "host": _Agg._host, "alloc": _Agg._alloc, "image_start": _Agg._image_start,
    "image": _Agg._image, "stage": _Agg._stage, "phase": _Agg._phase, "worker_start": _Agg._worker_start,
    "worker_ready": _Agg._worker_ready, "worker_exit": _Agg._worker_exit, "load_failed": _Agg._load_failed,
    "source": _Agg._source, "gpu_static": _Agg._gpu_static, "xid": _Agg._xid, "kmsg": _Agg._kmsg,
    "probe": _Agg._probe, "run_start": _keep_first("run_start"), "environment": _keep_last("env_event"),
    "plan": _keep_last("plan"), "verdict": _keep_last("verdict"), "run_end": _keep_last("run_end"),
    "monitors_summary": _keep_last("monitors_summary"),
    "resume": _Agg._resume,
}


# --------------------------------------------------------------------------------------------
# Numbers


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "min": None, "p50": None, "p95": None, "max": None, "mean": None}
    a = np.asarray(values, dtype=float)
    return {"n": int(a.size), "min": _r(a.min()), "p50": _r(np.median(a)), "p95": _r(np.percentile(a, 95)),
            "max": _r(a.max()), "mean": _r(a.mean())}


def _r(x: Any, nd: int = 4) -> float | None:
    """A float for JSON: rounded, and None for NaN/inf (JSON has no NaN)."""
    if x is None:
        return None
    f = float(x)
    if not math.isfinite(f):
        return None
    if f == int(f) and abs(f) < 2**53:
        return float(int(f))
    return round(f, nd)


def minmax_downsample(t: np.ndarray, v: np.ndarray, buckets: int = TIMELINE_BUCKETS,
                      gap_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """At most 2 points per time bucket (its minimum and maximum, in time order), so peaks survive.

    NaN samples are dropped; where sampling stopped for longer than ``gap_s`` a NaN is inserted, so a
    chart breaks its line there instead of drawing a straight line across a freeze.
    """
    ok = ~np.isnan(v)
    t, v = t[ok], v[ok]
    n = t.size
    # Gaps are found in the raw samples: after downsampling, neighbours are a bucket apart anyway.
    gap_at = np.empty(0)
    if gap_s is not None and n > 1:
        g = np.flatnonzero(np.diff(t) > gap_s)
        gap_at = (t[g] + t[g + 1]) / 2
    if n > 2 * buckets:
        span = t[-1] - t[0]
        if span <= 0:
            return t[:1], v[:1]
        ids = np.minimum(((t - t[0]) / span * buckets).astype(np.int64), buckets - 1)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        mins = np.minimum.reduceat(v, starts)
        maxs = np.maximum.reduceat(v, starts)
        bucket_of = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, n]))
        # the first index in each bucket where its min (max) is reached
        idx = np.arange(n)
        imin = np.minimum.reduceat(np.where(v == mins[bucket_of], idx, n), starts)
        imax = np.minimum.reduceat(np.where(v == maxs[bucket_of], idx, n), starts)
        keep = np.unique(np.r_[imin, imax])
        t, v = t[keep], v[keep]
    if gap_at.size:
        pos = np.searchsorted(t, gap_at)
        t = np.insert(t, pos, gap_at)
        v = np.insert(v, pos, np.nan)
    return t, v


def _gaps(t: np.ndarray) -> tuple[float | None, list[dict]]:
    if t.size < 3:
        return None, []
    dt = np.diff(t)
    interval = float(np.median(dt))
    limit = max(10.0, 10 * interval)
    idx = np.flatnonzero(dt > limit)
    top = idx[np.argsort(dt[idx])[::-1][:5]] if idx.size else idx
    return interval, [{"start_t": _r(t[i]), "end_t": _r(t[i + 1]), "s": _r(dt[i], 1)} for i in sorted(top)]


# --------------------------------------------------------------------------------------------
# Building the report


@dataclass
class _Windows:
    baseline: tuple[float, float] | None
    after: list[tuple[float, float]]
    after_exit: list[tuple[float, float]]
    spans: list[dict] = field(default_factory=list)


def _phase_windows(agg: _Agg, missing: list[str]) -> _Windows:
    open_: dict[str, float] = {}
    spans: list[dict] = []
    for phase, state, t in agg.phase_events:
        if state == "start":
            open_[phase] = t
        elif state == "end":
            start = open_.pop(phase, None)
            spans.append({"phase": phase, "start": start if start is not None else t, "end": t})
    for phase, start in open_.items():
        spans.append({"phase": phase, "start": start, "end": None})
        missing.append(f"phase '{phase}' started at {iso(start)} and never ended")
    spans.sort(key=lambda s: s["start"])
    last = agg.last_t or 0.0

    def of(name: str) -> list[tuple[float, float]]:
        return [(s["start"], s["end"] if s["end"] is not None else last) for s in spans if s["phase"] == name]

    workload_start = next((s["start"] for s in spans if s["phase"] in ("load", "workload")), None)
    if workload_start is None and agg.image_starts:
        workload_start = min(e["t"] for e in agg.image_starts.values())
    baseline = (agg.first_t or 0.0, workload_start) if workload_start is not None else None
    return _Windows(baseline, of("after"), of("after-exit"), spans)


def _window_median(t: np.ndarray, v: np.ndarray, windows: list[tuple[float, float]]) -> float | None:
    if not windows:
        return None
    mask = np.zeros(t.size, dtype=bool)
    for a, b in windows:
        mask |= (t >= a) & (t <= b)
    sel = v[mask]
    sel = sel[~np.isnan(sel)]
    return _r(np.median(sel)) if sel.size else None


def _metric_summary(src: str, gpu: int | None, key: str, info: MetricInfo, t: np.ndarray, v: np.ndarray,
                    win: _Windows, t0: float) -> dict | None:
    ok = ~np.isnan(v)
    n = int(ok.sum())
    if n == 0:
        return None
    vv, tt = v[ok], t[ok]
    if win.baseline is not None:
        baseline = _window_median(tt, vv, [win.baseline])
    else:
        baseline = _r(np.median(vv[:10]))
    after = _window_median(tt, vv, win.after)
    after_exit = _window_median(tt, vv, win.after_exit)
    last = _r(vv[-1])
    ipk = int(np.argmax(vv))
    d = {"key": key, "src": src, "gpu": gpu, "label": info.label, "unit": info.unit, "kind": info.kind, "n": n,
         "first": _r(vv[0]), "baseline": baseline, "peak": _r(vv[ipk]), "peak_t": _r(tt[ipk] - t0, 2),
         "min": _r(vv.min()), "after": after, "after_exit": after_exit, "last": last,
         "delta_after": _r(after - baseline) if after is not None and baseline is not None else None,
         "delta_after_exit": _r(after_exit - baseline) if after_exit is not None and baseline is not None else None,
         "delta_last": _r(last - baseline) if last is not None and baseline is not None else None}
    if info.kind == "counter":
        rises = np.flatnonzero(np.diff(vv) > 0)
        d["increments"] = int(rises.size)
        d["first_increase_t"] = _r(tt[rises[0] + 1] - t0, 2) if rises.size else None
        d["delta_last"] = _r(vv[-1] - vv[0])
    return d


def _arrays(cols: _Columns) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    t = np.asarray(cols.t, dtype=float)
    order = np.argsort(t, kind="stable")
    sorted_already = bool(np.all(order == np.arange(t.size)))
    out = {}
    for k, col in cols.cols.items():
        try:
            a = np.asarray(col, dtype=float)
        except (TypeError, ValueError):
            continue
        out[k] = a if sorted_already else a[order]
    return (t if sorted_already else t[order]), out


def _machine(env: dict, agg: _Agg) -> dict:
    osd = env.get("os") if isinstance(env.get("os"), dict) else {}
    dist = osd.get("distribution") if isinstance(osd.get("distribution"), dict) else {}
    gpu_env = env.get("gpu") if isinstance(env.get("gpu"), dict) else {}
    display = env.get("display") if isinstance(env.get("display"), dict) else {}
    env_vars = env.get("env_vars") if isinstance(env.get("env_vars"), dict) else {}
    libs = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
    mem = env.get("memory") if isinstance(env.get("memory"), dict) else {}
    py = env.get("python") if isinstance(env.get("python"), dict) else {}

    def pick(d: dict, *keys: str) -> Any:
        for k in keys:
            if d.get(k) not in (None, "", {}):
                return d[k]
        return None

    statics = [agg.gpu_static[k] for k in sorted(agg.gpu_static, key=lambda x: (str(type(x)), x))]
    env_gpus = gpu_env.get("gpus") if isinstance(gpu_env.get("gpus"), list) else []
    gpus = []
    for i, g in enumerate(statics or env_gpus):
        if not isinstance(g, dict):
            continue
        other = env_gpus[i] if i < len(env_gpus) and isinstance(env_gpus[i], dict) else {}
        idx = _int(pick(g, "gpu", "index"))
        idx = idx if idx is not None else i
        name = pick(g, "name") or pick(other, "name") or "unknown GPU"
        uuid = pick(g, "uuid") or pick(other, "uuid")
        info = {"index": idx, "name": name, "uuid": uuid,
                "nvidia_smi_l": f"GPU {idx}: {name}" + (f" (UUID: {uuid})" if uuid else "")}
        for k in ("bus_id", "vbios", "memory_total", "persistence_mode", "serial", "pcie_gen_max",
                  "pcie_width_max", "power_limit"):
            val = pick(g, k) if pick(g, k) is not None else pick(other, k)
            if val is not None:
                info[k] = val
        gpus.append(info)
    first_static = statics[0] if statics else {}
    driver = pick(first_static, "driver") or pick(gpu_env, "driver", "driver_version")
    cuda = pick(first_static, "cuda_driver") or pick(gpu_env, "cuda_driver", "cuda_driver_version", "cuda")
    flavor = pick(gpu_env, "kernel_module", "driver_flavor", "module_type", "open_kernel_module")
    if isinstance(flavor, bool):
        flavor = "open" if flavor else "proprietary"
    release = pick(osd, "release")
    uname = None
    if osd.get("system"):
        # the host name means nothing to a maintainer and a short one would survive free-text masking
        uname = " ".join(str(x) for x in (osd.get("system"), "<host>", release, osd.get("version"),
                                          osd.get("machine")) if x)
        if osd.get("system") == "Linux":
            uname += " GNU/Linux"
    session_type = pick(display, "session_type", "type") or env_vars.get("XDG_SESSION_TYPE")
    server = pick(display, "server", "display_server", "x_server")
    if server is None and session_type:
        server = {"x11": "Xorg", "wayland": "Wayland"}.get(str(session_type).lower())
    desktop = pick(display, "desktop", "desktop_environment", "current_desktop") or env_vars.get("XDG_CURRENT_DESKTOP")
    compositor = pick(display, "compositor", "window_manager")
    if isinstance(compositor, dict):
        compositor = pick(compositor, "name")
    if isinstance(server, dict):
        server = " ".join(str(x) for x in (server.get("name"), server.get("version")) if x) or None
    return {
        "os": pick(dist, "pretty_name") or (" ".join(str(x) for x in (osd.get("system"), release) if x) or None),
        "kernel": _str(release),
        "kernel_uname": uname,
        "kernel_stable": (not re.search(r"-rc\d", str(release))) if release else None,
        "driver": _str(driver),
        "driver_flavor": _str(flavor),
        "cuda_driver": _str(cuda),
        "gpus": gpus,
        "display_server": _str(server),
        "session_type": _str(session_type),
        "desktop": _str(desktop),
        "compositor": _str(compositor),
        "cpu": _str(pick(cpu, "model")),
        "ram_total": _int(pick(mem, "total")),
        "python": _str(pick(py, "version")),
        "libraries": {str(k): _str(v) for k, v in libs.items()},
    }


def _image_records(agg: _Agg, t0: float, include_prompts: bool) -> list[dict]:
    out = []
    for idx in sorted(set(agg.images) | set(agg.image_starts)):
        rec = agg.images.get(idx)
        start = agg.image_starts.get(idx)
        if rec is None:
            rec = {"index": idx, "seed": start.get("seed"), "width": start.get("width"),
                   "height": start.get("height"), "worker": start.get("worker"), "outcome": "incomplete",
                   "error": "started but never finished (the run stopped or the machine froze during it)"}
            t_end = None
        else:
            t_end = rec.get("finished_at", rec.get("t"))
        r: dict[str, Any] = {}
        for k, v in rec.items():
            if k in ("ev", "t", "finished_at", "scheduler", "path", "prompt", "negative_prompt", "timings"):
                continue
            if isinstance(v, (str, int, float, bool)) or v is None:
                r[k] = v
        r["index"] = idx
        r["outcome"] = str(rec.get("outcome") or "unknown")
        for k in ("seed", "width", "height", "steps", "refiner_steps"):
            r[k] = _int(rec.get(k))
        r["cfg"] = _num(rec.get("cfg"))
        t_start = start["t"] if start else None
        r["t_start"] = _r(t_start - t0, 2) if t_start is not None else None
        r["t_end"] = _r(t_end - t0, 2) if isinstance(t_end, (int, float)) else None
        r["wall_s"] = _r(t_end - t_start, 3) if isinstance(t_end, (int, float)) and t_start is not None else None
        timings = {}
        if isinstance(rec.get("timings"), dict):
            timings = {str(k): _r(v, 4) for k, v in rec["timings"].items() if _num(v) is not None}
        for k, v in agg.stages.get(idx, {}).items():
            timings.setdefault(k, _r(v, 4))
        r["timings"] = timings
        path = rec.get("path") or rec.get("file")
        r["file"] = os.path.basename(str(path)) if path else None
        r["alloc"] = {k: _r(v) for k, v in agg.alloc_by_image.get(idx, {}).items()}
        text = rec.get("prompt")
        if isinstance(text, str) and text:
            r["prompt"] = text if include_prompts else prompt_digest(text, _int(rec.get("prompt_tokens")))
        else:
            r["prompt"] = None
        out.append(r)
    return out


def _probes(agg: _Agg, t0: float) -> dict:
    rows: dict[tuple[str, str], dict] = {}
    for phase, kind, status, lat, reason, t in agg.probes:
        row = rows.get((phase, kind))
        if row is None:
            row = rows[(phase, kind)] = {"phase": phase, "kind": kind, "n": 0, "statuses": Counter(),
                                         "lat": [], "reasons": Counter(), "first_failure_t": None}
        row["n"] += 1
        row["statuses"][status] += 1
        if status == "ok" and lat is not None:
            row["lat"].append(lat)
        if status in FAILED_PROBE:
            row["reasons"][(reason or status)[:200]] += 1
            if row["first_failure_t"] is None:
                row["first_failure_t"] = _r(t - t0, 2)
    order = {p: i for i, p in enumerate(PROBE_PHASES)}
    out_rows = []
    for (phase, kind), row in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][0], kv[0][1])):
        out_rows.append({"phase": phase, "kind": kind, "n": row["n"], "statuses": dict(row["statuses"]),
                         "failures": sum(row["statuses"].get(s, 0) for s in FAILED_PROBE),
                         "latency": _stats(row["lat"]), "latencies": [_r(x, 5) for x in row["lat"]],
                         "reasons": dict(row["reasons"].most_common(10)),
                         "first_failure_t": row["first_failure_t"]})
    compare = []
    kinds = sorted({k for (_, k) in rows})
    for kind in kinds:
        def p50(phase: str) -> float | None:
            row = rows.get((phase, kind))
            return _stats(row["lat"])["p50"] if row else None

        def fails(phase: str) -> int:
            row = rows.get((phase, kind))
            return sum(row["statuses"].get(s, 0) for s in FAILED_PROBE) if row else 0

        b, a, ae = p50("baseline"), p50("after"), p50("after-exit")
        compare.append({"kind": kind, "baseline_p50": b, "after_p50": a, "after_exit_p50": ae,
                        "ratio_after": _r(a / b, 3) if a is not None and b else None,
                        "ratio_after_exit": _r(ae / b, 3) if ae is not None and b else None,
                        "baseline_failures": fails("baseline"), "after_failures": fails("after"),
                        "after_exit_failures": fails("after-exit")})
    return {"total": len(agg.probes), "rows": out_rows, "compare": compare}


def _workload(agg: _Agg, images: list[dict], scenario: dict | None, win: _Windows, t0: float) -> dict:
    sc = scenario or {}
    plan = agg.plan or {}
    refiner_on = bool((sc.get("model") or {}).get("refiner")) if isinstance(sc.get("model"), dict) else bool(
        plan.get("refiner"))
    default_steps = _int(plan.get("base_steps_per_image")) or _int(sc.get("steps"))
    default_ref = _int(plan.get("refiner_steps_per_image"))
    if default_ref is None:
        default_ref = (_int((sc.get("refiner") or {}).get("steps")) or _int(sc.get("steps")) or 0) if refiner_on else 0
    default_cfg = _num(sc.get("cfg"))
    outcomes: Counter = Counter(r["outcome"] for r in images)
    ok = [r for r in images if r["outcome"] == "ok"]
    latent = 0
    unet = 0
    res: Counter = Counter()
    for r in ok:
        w, h = r.get("width") or 0, r.get("height") or 0
        latent += (w // 8) * (h // 8)
        steps = r.get("steps") if r.get("steps") is not None else (default_steps or 0)
        ref = r.get("refiner_steps") if r.get("refiner_steps") is not None else default_ref
        cfg = r.get("cfg") if r.get("cfg") is not None else default_cfg
        unet += (steps + (ref or 0)) * (2 if (cfg or 0) > 1 else 1)
    for r in images:
        if r.get("width") and r.get("height"):
            res[f"{r['width']}x{r['height']}"] += 1
    start = agg.run_start.get("t") if agg.run_start else agg.first_t
    end = agg.run_end.get("t") if agg.run_end else agg.last_t
    wall = _num(agg.run_end.get("wall_s")) if agg.run_end else None
    if wall is None and start is not None and end is not None:
        wall = end - start
    wl = [s for s in win.spans if s["phase"] == "workload"]
    workload_s = None
    if wl:
        workload_s = sum(((s["end"] if s["end"] is not None else (agg.last_t or s["start"])) - s["start"]) for s in wl)
    elif images:
        ts = [r["t_start"] for r in images if r["t_start"] is not None]
        te = [r["t_end"] for r in images if r["t_end"] is not None]
        if ts and te:
            workload_s = max(te) - min(ts)
    per_image = [r["wall_s"] if r.get("wall_s") is not None else sum(r["timings"].values())
                 for r in ok if r.get("wall_s") is not None or r["timings"]]
    stage_s: dict[str, float] = {}
    for r in images:
        for k, v in r["timings"].items():
            if v is not None:
                stage_s[k] = _r(stage_s.get(k, 0.0) + v, 3)
    scheduler = next((agg.images[i].get("scheduler") for i in sorted(agg.images)
                      if isinstance(agg.images[i].get("scheduler"), dict)), None)
    planned = _int(plan.get("images")) if plan else _int(sc.get("images"))
    return {"images_planned": planned, "images_started": len(images), "images_ok": len(ok),
            "images_failed": sum(v for k, v in outcomes.items() if k not in ("ok", "skipped", "incomplete")),
            "images_unfinished": outcomes.get("incomplete", 0),
            "outcomes": dict(outcomes), "latent_positions": int(latent), "unet_evaluations": int(unet),
            "wall_s": _r(wall, 2), "workload_s": _r(workload_s, 2),
            "images_per_min": _r(len(ok) / workload_s * 60, 3) if workload_s else None,
            "image_s": _stats(per_image), "stage_s": stage_s, "resolutions": dict(res), "scheduler": scheduler}


def _source_states(events: list[dict], t0: float) -> dict[tuple[str, int | None], dict]:
    """Per (source, GPU): the last available/unavailable word, unsupported fields, the history."""
    out: dict[tuple[str, int | None], dict] = {}
    for ev in events:
        src = str(ev.get("src"))
        gpu = ev.get("gpu") if type(ev.get("gpu")) is int else None
        st = out.setdefault((src, gpu), {"status": "available", "reason": None, "unsupported": {}, "info": {},
                                         "history": []})
        status = str(ev.get("status") or "unknown")
        reason = _str(ev.get("reason"))
        st["history"].append({"t": _r(ev["t"] - t0, 2), "status": status, "reason": reason})
        if status == "unsupported-fields":
            fields = ev.get("fields")
            if isinstance(fields, dict):
                st["unsupported"].update({str(k): str(v) for k, v in fields.items()})
            elif isinstance(fields, list):
                st["unsupported"].update({str(k): "unsupported" for k in fields})
            continue
        st["status"], st["reason"], st["t_rel"] = status, reason, ev["t"] - t0
        st["info"].update({k: v for k, v in ev.items() if k not in ("ev", "t", "src", "status", "reason", "gpu")
                           and v is not None})
    return out


def _verdict(agg: _Agg, missing: list[str]) -> dict:
    v = agg.verdict
    if v is None:
        reasons = missing[:5] or ["the journal has no verdict event"]
        return {"verdict": "incomplete", "reasons": reasons, "exit_code": None, "source": "derived",
                "details": None}
    reasons = v.get("reasons")
    if not isinstance(reasons, list):
        reasons = [reasons] if reasons else []
    reasons = [r if isinstance(r, str) else (r.get("message") if isinstance(r, dict) and r.get("message")
                                             else json.dumps(r, default=str)) for r in reasons]
    return {"verdict": str(v.get("verdict") or "unknown"), "reasons": reasons, "exit_code": _int(v.get("exit_code")),
            "source": "journal", "details": v.get("details")}


def _prompts_in_outputs(run_dir: Path, limit: int = 3) -> list[str]:
    """Prompts embedded in output images (A1111 'parameters'), so they can be masked elsewhere too."""
    outputs = run_dir / "outputs"
    if not outputs.is_dir():
        return []
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return []
    found: list[str] = []
    files = sorted(p for p in outputs.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    for p in files[:limit]:
        try:
            with Image.open(p) as im:
                texts = [im.info.get("parameters"), im.info.get("comment")]
                exif = im.getexif()
                texts.append(exif.get_ifd(0x8769).get(0x9286) if exif else None)
        except Exception:  # noqa: BLE001 - a damaged output is not a reason to stop the report
            continue
        for raw in texts:
            if isinstance(raw, bytes):
                raw = _decode_user_comment(raw)
            if isinstance(raw, str) and raw.strip():
                prompt, neg = _split_parameters(raw)
                for x in (raw, prompt, neg):
                    if x and x not in found:
                        found.append(x)
    return found


def _decode_user_comment(raw: bytes) -> str:
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        for enc in ("utf-16-be", "utf-16-le"):
            try:
                return body.decode(enc)
            except UnicodeDecodeError:
                continue
    return body.decode("utf-8", "replace") if head.startswith(b"ASCII") else raw.decode("utf-8", "replace")


def _split_parameters(text: str) -> tuple[str, str | None]:
    """A1111 'parameters': prompt, then 'Negative prompt: ...', then a 'Steps: ...' line."""
    lines = text.split("\n")
    prompt, neg, where = [], [], "p"
    for line in lines:
        if line.startswith("Negative prompt:"):
            where = "n"
            neg.append(line[len("Negative prompt:"):].strip())
        elif re.match(r"^Steps: \d+", line):
            break
        else:
            (prompt if where == "p" else neg).append(line)
    return "\n".join(prompt).strip(), ("\n".join(neg).strip() or None)


def _scenario_prompts(scenario: dict | None, base_dir: str | None) -> list[str]:
    out = []
    for key in ("prompt", "negative_prompt"):
        spec = (scenario or {}).get(key)
        if isinstance(spec, str):
            out.append(spec)
        elif isinstance(spec, dict):
            if isinstance(spec.get("text"), str):
                out.append(spec["text"])
            if isinstance(spec.get("file"), str):
                p = Path(spec["file"]).expanduser()
                if not p.is_absolute() and base_dir:
                    p = Path(base_dir) / p
                try:
                    out.append(p.read_text(encoding="utf-8").strip())
                except (OSError, UnicodeDecodeError):
                    pass
    return [p for p in out if p]


def _redacted_scenario(scenario: dict | None, include_prompts: bool) -> dict | None:
    if not isinstance(scenario, dict):
        return None
    sc = json.loads(json.dumps(scenario, default=str))
    if include_prompts:
        return sc
    for key in ("prompt", "negative_prompt"):
        spec = sc.get(key)
        if isinstance(spec, dict) and isinstance(spec.get("text"), str) and spec["text"]:
            spec["digest"] = prompt_digest(spec["text"])
            spec["text"] = prompt_placeholder(spec["text"])
        elif isinstance(spec, str) and spec:
            sc[key] = prompt_placeholder(spec)
    return sc


@dataclass
class BuiltReport:
    report: dict
    warnings: list[str]
    redactor: Redactor
    output_prompts: list[str]


def build_report(run_dir: str | os.PathLike, *, include_prompts: bool = False,
                 redact: bool = True) -> BuiltReport:
    """report.json's content for ``run_dir`` (redacted unless ``redact=False``).

    Raises :class:`StressError` only when there is no journal; anything else damaged is reported in
    ``completeness`` and the returned warnings.
    """
    rd = RunDir(run_dir)
    if not rd.journal.is_file():
        raise StressError(f"{rd.root}: no journal.jsonl there; give a run directory (artifacts/<run-id>)")
    warnings: list[str] = []
    missing: list[str] = []
    notes: list[str] = []
    files = {name: (rd.root / name).exists() for name in ("journal.jsonl", "run.json", "environment.json",
                                                          "scenario.resolved.json")}
    env_file = _read_json_file(rd.environment, notes)
    scenario = _read_json_file(rd.scenario, notes)

    agg = _Agg()
    stream = JournalStream(rd.journal)
    gc_was = gc.isenabled()
    gc.disable()   # hundreds of thousands of small dicts: the cyclic GC would run constantly for nothing
    try:
        for ev in stream:
            agg.feed(ev)
    except OSError as exc:
        raise StressError(f"{rd.journal}: cannot be read ({exc.strerror or exc})") from None
    finally:
        if gc_was:
            gc.enable()

    env = env_file if isinstance(env_file, dict) else (
        agg.env_event.get("env") if agg.env_event and isinstance(agg.env_event.get("env"), dict) else {})
    if not files["environment.json"]:
        notes.append("environment.json is missing" + ("; taken from the journal's environment event"
                                                      if env else ""))
    if not files["scenario.resolved.json"]:
        notes.append("scenario.resolved.json is missing; the scenario section is empty")

    t0 = (agg.run_start or {}).get("t") or agg.first_t or 0.0
    t0 = float(t0)

    # ---- completeness ----
    if agg.count == 0:
        missing.append("the journal holds no events")
    if agg.run_start is None and agg.count:
        missing.append("the journal has no run_start event (its beginning is missing)")
    if stream.torn_tail:
        missing.append("the last journal line was cut off mid-write (a crash or power loss while writing)")
    if stream.bad_lines:
        shown = ", ".join(str(i) for i in stream.bad_lines[:5]) + (" ..." if len(stream.bad_lines) > 5 else "")
        missing.append(f"{len(stream.bad_lines)} journal line(s) are not valid JSON and were skipped (line {shown})")
    if agg.run_end is None and agg.count:
        missing.append(f"journal ends without run_end: the run was interrupted or the machine froze at "
                       f"{iso(agg.last_t)} ({(agg.last_t or t0) - t0:.0f} s after the start; last event: "
                       f"{agg.last_ev})")
    for idx in sorted(set(agg.image_starts) - set(agg.images)):
        st = agg.image_starts[idx]
        missing.append(f"image {idx} (seed {st.get('seed')}, {st.get('width')}x{st.get('height')}) started at "
                       f"{iso(st['t'])} and never finished")
    win = _phase_windows(agg, missing)
    if agg.verdict is None and agg.count:
        missing.append("no verdict event: the run did not reach its conclusion")

    # ---- prompts and redaction ----
    base_dir = (agg.run_start or {}).get("base_dir")
    output_prompts = _prompts_in_outputs(rd.root)
    serials = [g.get("serial") for g in agg.gpu_static.values() if g.get("serial")]
    redactor = Redactor.for_run(environment=env, extra_serials=serials,
                                prompts=_scenario_prompts(scenario, base_dir) + agg.prompts + output_prompts,
                                include_prompts=include_prompts, enabled=redact)

    # ---- monitors ----
    sources: list[dict] = []
    metrics: list[dict] = []
    series: list[dict] = []

    source_state = _source_states(agg.source_events, t0)
    zoom_series: list[dict] = []
    zoom_from: float | None = None
    if agg.count and (agg.last_t or t0) - t0 > ZOOM_AFTER_S:
        wl_end = next((s["end"] for s in reversed(win.spans) if s["phase"] == "workload" and s["end"]), None)
        if wl_end is None:
            ends = [r.get("t") for r in agg.images.values() if isinstance(r.get("t"), (int, float))]
            wl_end = max(ends) if ends else agg.last_t
        wl_end = min(wl_end, agg.last_t or wl_end)
        lead = min(ZOOM_LEAD_S[1], max(ZOOM_LEAD_S[0], 2 * ((agg.last_t or wl_end) - wl_end)))
        zoom_from = max(t0, wl_end - lead)

    def summarise(src: str, gpu: int | None, cols: _Columns, prefix: str) -> None:
        t, arrays = _arrays(cols)
        # gaps only mean something for sources that sample on a clock (allocator events follow the images)
        interval, gaps = _gaps(t) if src in ("nvml", "host") else (None, [])
        st = source_state.pop((src, gpu), None) or source_state.get((src, None)) or {}
        sources.append({"src": src, "gpu": gpu, "status": st.get("status", "available"),
                        "reason": st.get("reason"), "unsupported": st.get("unsupported", {}),
                        "info": st.get("info", {}), "history": st.get("history", []),
                        "samples": int(t.size), "first_t": _r(t[0] - t0, 2) if t.size else None,
                        "last_t": _r(t[-1] - t0, 2) if t.size else None,
                        "interval_s": _r(interval, 3) if interval else None,
                        "gaps": [dict(g, start_t=_r(g["start_t"] - t0, 2), end_t=_r(g["end_t"] - t0, 2))
                                 for g in gaps]})
        where = "" if gpu is None else f" GPU {gpu}"
        for g in gaps:
            notes.append(f"{src}{where}: no samples for {g['s']:.0f} s from {iso(g['start_t'])}")
        if st.get("status") == "unavailable":
            notes.append(f"{src}{where}: stopped: {st.get('reason') or 'unavailable'}"
                         + (f" ({_r(st['t_rel'], 1)} s after the start)" if st.get("t_rel") is not None else ""))
        if st.get("unsupported"):
            notes.append(f"{src}{where}: not supported here: " + ", ".join(
                f"{k} ({v})" for k, v in sorted(st["unsupported"].items())))
        glimit = max(10.0, 10 * interval) if interval else None
        for key, v in arrays.items():
            info = _metric_info(src, key)
            m = _metric_summary(src, gpu, key, info, t, v, win, t0)
            if m is None:
                continue
            pm = re.fullmatch(r"procs\[(.+)\]\.mem", key)
            group = agg.proc_groups.get(pm.group(1)) if pm else ("display" if key.startswith("display[") else None)
            m["group"] = group
            metrics.append(m)
            if info.chart:
                tt, vv = minmax_downsample(t, v, TIMELINE_BUCKETS, glimit)
                series.append({"key": f"{prefix}{key}", "src": src, "gpu": gpu, "label": info.label,
                               "unit": info.unit, "group": group, "t": [round(float(x) - t0, 2) for x in tt],
                               "v": [_r(x) for x in vv], "n": m["n"]})
                if zoom_from is not None:
                    sel = t >= zoom_from
                    if sel.any():
                        zt, zv = minmax_downsample(t[sel], v[sel], TIMELINE_BUCKETS, glimit)
                        zoom_series.append(dict(series[-1], t=[round(float(x) - t0, 2) for x in zt],
                                                v=[_r(x) for x in zv], n=int(sel.sum())))

    for gpu in sorted(agg.nvml):
        summarise("nvml", gpu, agg.nvml[gpu], f"nvml[{gpu}].")
    source_state.pop(("nvml", None), None) if agg.nvml else None
    if agg.host.t:
        summarise("host", None, agg.host, "host.")
    if agg.alloc.t:
        summarise("allocator", None, agg.alloc, "allocator.")
    for (src, gpu), st in sorted(source_state.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1)):
        if any(s["src"] == src and (gpu is None or s["gpu"] == gpu) for s in sources):
            continue
        sources.append({"src": src, "gpu": gpu, "status": st["status"], "reason": st.get("reason"),
                        "unsupported": st.get("unsupported", {}), "info": st.get("info", {}),
                        "history": st.get("history", []), "samples": 0, "first_t": None, "last_t": None,
                        "interval_s": None, "gaps": []})
        why = f" ({st['reason']})" if st.get("reason") else ""
        if src in ("nvml", "host"):
            notes.append(f"no samples from {src}: {st['status']}{why}")
        elif st["status"] != "available":
            notes.append(f"{src}: {st['status']}{why}")
    mon_cfg = (scenario or {}).get("monitors") if isinstance((scenario or {}).get("monitors"), dict) else {}
    if mon_cfg.get("enabled", True):
        for src in ("nvml", "host"):
            if mon_cfg.get(src, True) and not any(s["src"] == src for s in sources):
                sources.append({"src": src, "gpu": None, "status": "absent",
                                "reason": "no source event and no samples", "unsupported": {}, "info": {},
                                "history": [], "samples": 0, "first_t": None, "last_t": None,
                                "interval_s": None, "gaps": []})
                notes.append(f"no samples from {src} and no 'source' event saying why")
    display_changes = [dict(c, t=_r(c["t"] - t0, 2)) for c in agg.display_changes]

    # ---- other sections ----
    images = _image_records(agg, t0, include_prompts)
    probes = _probes(agg, t0)
    xids = []
    last_seen: dict[tuple, tuple[float, str]] = {}
    for x in sorted(agg.xids, key=lambda e: e["t"]):
        code, source = _int(x.get("xid")), str(x.get("source"))
        # NVML's event and the kernel log usually report the same Xid: the second report is marked
        prev = last_seen.get((code, x.get("gpu"))) or last_seen.get((code, None))
        dup = prev is not None and prev[1] != source and x["t"] - prev[0] <= 3.0
        last_seen[(code, x.get("gpu"))] = (x["t"], source)
        xids.append({**{k: v for k, v in x.items() if k not in ("ev", "t")}, "t": _r(x["t"]),
                     "t_rel": _r(x["t"] - t0, 2), "time": iso(x["t"]), "xid": code,
                     "gpu": x.get("gpu"), "raw": _str(x.get("raw")), "duplicate": dup})
    workers = []
    for w in sorted(agg.workers.values(), key=lambda w: (w.get("worker") is None, w.get("worker") or 0)):
        d = dict(w)
        for k in ("started_t", "ready_t", "exit_t"):
            if d.get(k) is not None:
                d[k] = _r(d[k] - t0, 2)
        d.setdefault("started_t", None)
        workers.append(d)
        if d.get("exit_reason") in ("crash", "killed-timeout"):
            notes.append(f"worker {d.get('worker')} (pid {d.get('pid')}) exited: {d.get('exit_reason')}"
                         + (f", signal {d['signal']}" if d.get("signal") else "")
                         + (f", status {d['returncode']}" if d.get("returncode") not in (None, 0) else ""))
    workload = _workload(agg, images, scenario, win, t0)

    # ---- timeline marks ----
    marks: list[dict] = []
    for x in xids:
        if not x["duplicate"]:
            marks.append({"t": x["t_rel"], "kind": "xid", "label": f"Xid {x['xid']}"})
    for w in workers:
        if w.get("exit_t") is not None and w.get("exit_reason") not in (None, "requested"):
            marks.append({"t": w["exit_t"], "kind": "worker-exit", "label": f"worker {w.get('exit_reason')}"})
    for c in display_changes:
        marks.append({"t": c["t"], "kind": "display-process", "label": f"{c['name']} {c['change']}"})
    marks.sort(key=lambda m: m["t"])

    run_start = agg.run_start or {}
    argv = run_start.get("argv") if isinstance(run_start.get("argv"), list) else []
    argv = [str(a) for a in argv]
    run_end = agg.run_end or {}
    ended_at = run_end.get("t") if agg.run_end else agg.last_t
    run = {"run_id": str(run_start.get("run_id") or rd.run_id), "scenario": _str(run_start.get("scenario")),
           "scenario_sha256": _str(run_start.get("scenario_sha256")),
           "command": _command(argv), "argv": argv, "stress_version": _str(run_start.get("stress_version")),
           "started_at": _r(t0) if agg.count else None, "started": iso(t0) if agg.count else None,
           "ended_at": _r(ended_at), "ended": iso(ended_at),
           "status": str(run_end.get("status")) if agg.run_end else "incomplete",
           "resumed": bool(run_start.get("resumed")) or bool(agg.resumes),
           "wall_s": workload["wall_s"]}
    verdict = _verdict(agg, missing)
    completeness = {"complete": not missing, "missing": missing, "notes": notes, "torn_tail": stream.torn_tail,
                    "bad_lines": len(stream.bad_lines), "events": agg.count,
                    "event_counts": dict(agg.kinds.most_common()),
                    "first_event_t": _r(agg.first_t), "last_event_t": _r(agg.last_t), "last_event": agg.last_ev,
                    "files": files}
    report = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": round(time.time(), 3),
        "generator": f"gpu-stress {__version__}",
        "run_id": run["run_id"],
        "verdict": verdict,
        "exit_code": verdict["exit_code"],
        "run": run,
        "machine": _machine(env, agg),
        "environment": env,
        "scenario": _redacted_scenario(scenario, include_prompts),
        "images": images,
        "probes": probes,
        "monitors": {"sources": sources, "metrics": metrics, "display_processes": display_changes,
                     "gpus": [dict(g) for g in agg.gpu_static.values()],
                     "summary": {k: v for k, v in agg.monitors_summary.items() if k not in ("ev", "t")}
                     if agg.monitors_summary else None},
        "xid_events": xids,
        "kernel_log": {"lines": agg.kmsg_count, "suppressed": agg.kmsg_suppressed,
                       "tail": [{"t": _r(k["t"] - t0, 2), "line": k["line"]} for k in agg.kmsg_tail]},
        "workers": workers,
        "workload": workload,
        "timeline": {"t0": _r(t0) if agg.count else None,
                     "downsample": {"method": "minmax", "buckets": TIMELINE_BUCKETS,
                                    "note": "each series keeps the minimum and maximum of every time bucket"},
                     "series": series,
                     "zoom": {"start": _r(zoom_from - t0, 2), "end": _r((agg.last_t or t0) - t0, 2),
                              "series": zoom_series} if zoom_from is not None else None,
                     "phases": [dict(s, start=_r(s["start"] - t0, 2),
                                                       end=_r(s["end"] - t0, 2) if s["end"] is not None else None)
                                                  for s in win.spans],
                     "images": [{"index": r["index"], "start": r["t_start"], "end": r["t_end"],
                                 "outcome": r["outcome"]} for r in images],
                     "marks": marks},
        "completeness": completeness,
        "redaction": redactor.summary(),
        "attachments": [],
        "warnings": warnings,
    }
    report = redactor.obj(report)
    return BuiltReport(report, warnings, redactor, output_prompts)


def _command(argv: list[str]) -> str | None:
    """The command line as a user would retype it: ``gpu-stress run ...`` rather than a venv path."""
    if not argv:
        return None
    args = list(argv)
    first = os.path.basename(args[0])
    if first.startswith("python") and len(args) > 2 and args[1] == "-m":
        args = ["gpu-stress" if args[2] == "stress" else f"python -m {args[2]}"] + args[3:]
    elif first in ("gpu-stress", "__main__.py", "stress") or args[0].endswith("stress/__main__.py"):
        args = ["gpu-stress"] + args[1:]
    return shlex.join(args)


def dumps_report(report: dict) -> str:
    """report.json text: strict JSON (no NaN), UTF-8, compact (``python -m json.tool`` pretty-prints it)."""
    return json.dumps(report, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str) + "\n"
