"""The schema of report.json: pydantic models (``report_json_schema()`` exports them as JSON Schema).
docs/report-format.md describes each section."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class VerdictModel(_Strict):
    verdict: str = Field(description="reproduced | not-reproduced | inconclusive | error | invalid | incomplete")
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
    regressed: bool = Field(False, description="the judge's word: this kind regressed in a later phase")


class ProbeVisit(_Strict):
    phase: str
    visit: int = Field(description="ordinal of the phase visit (the during phase has many)")
    kind: str
    repeat: int = Field(description="0: the visit's own probes; 1, 2, ...: a repeat round of a borderline phase")
    t: float = Field(description="seconds since the run started: the first probe of the group")
    t_end: float = Field(description="seconds since the run started: the last probe of the group")
    n: int
    failed: int = Field(description="fail + timeout + error")
    median_s: float | None = Field(description="median latency_s of the ok probes")


class Probes(_Strict):
    total: int
    rows: list[ProbeRow]
    compare: list[ProbeCompare]
    visits: list[ProbeVisit] = Field(default_factory=list, description=(
        "per phase visit, kind and repeat round, in time order: what the probe latency / host load chart draws"))


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
    changed: bool = Field(False, description="the judge's word (stress.analysis.metric_changed): worth listing")


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
    images_skipped: int = Field(0, description="skipped by the preflight (predicted not to fit): a decision")
    images_unfinished: int = Field(description="started and never finished (the run stopped during them)")
    outcomes: dict[str, int]
    latent_positions: int = Field(description="sum over ok images of (width/8)*(height/8)")
    unet_evaluations: int = Field(description="sum over ok images of (steps + refiner_steps) * (2 if cfg > 1 else 1)")
    wall_s: float | None
    workload_s: float | None
    images_per_min: float | None = Field(description="ok images per minute of busy_s (stress.record.derived)")
    busy_s: float | None = Field(None, description="seconds in which images were in flight (overlaps merged)")
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
    evidence: dict | None = Field(None, description="fingerprint, capture at failure, previous boot, "
                                                    "NVIDIA template facts (docs/evidence.md)")
    experiment: dict | None = Field(None, description="a matrix cell's condition and its read-backs: cell, env, "
                                                      "settings_asked, env_readbacks, settings (docs/experiments.md)")
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
