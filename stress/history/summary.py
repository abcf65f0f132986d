"""What the history keeps about one run, derived from its run directory (the journal is the record of
truth), never typed in: a :class:`RunSummary` with the run's machine, GPU, driver, kernel, compositor,
Python and library versions, scenario, verdict, named metrics and raw samples."""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

from stress.errors import StressError
from stress.journal import RunDir
from stress.record import derived, load
from stress.stats import finite, median, rnd

# ---------------------------------------------------------------------------------------------
# What a run contributes: derived from its directory
# ---------------------------------------------------------------------------------------------

@dataclass
class RunSummary:
    """One run as the history sees it."""

    run_id: str
    run_dir: str | None = None
    report_path: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    wall_s: float | None = None
    hostname: str | None = None
    gpu: str | None = None
    driver: str | None = None
    cuda_driver: str | None = None
    kernel: str | None = None
    python: str | None = None
    libraries: dict = field(default_factory=dict)
    scenario: str | None = None
    scenario_sha256: str | None = None
    verdict: str | None = None
    reasons: list[str] = field(default_factory=list)
    exit_code: int | None = None
    status: str | None = None
    images_ok: int = 0
    images_failed: int = 0
    soak_id: str | None = None
    soak_iteration: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    # Machine identity (schema revision 0002): a salted hash of /etc/machine-id (stress.hw.machine_id),
    # the compositor and display server under test and the session type (x11, wayland, tty, none).
    machine_id: str | None = None
    compositor: str | None = None
    display_server: str | None = None
    session_type: str | None = None

    def to_json(self, *, with_samples: bool = False) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "samples"}
        if with_samples:
            out["samples"] = self.samples
        return out


def _environment(rd: RunDir, events_env: dict | None) -> dict:
    try:
        env = json.loads(rd.environment.read_text(encoding="utf-8"))
        if isinstance(env, dict):
            return env
    except (OSError, ValueError):
        pass
    return events_env or {}


def _gpu_facts(env: dict, statics: list[dict]) -> tuple[str | None, str | None, str | None]:
    """GPU name(s), driver and CUDA driver version, from environment.json or gpu_static events."""
    gpu = env.get("gpu") if isinstance(env.get("gpu"), dict) else {}
    names = [g.get("name") for g in gpu.get("gpus") or [] if isinstance(g, dict) and g.get("name")]
    driver, cuda = gpu.get("driver"), gpu.get("cuda_driver")
    for ev in statics:
        if ev.get("name") and ev["name"] not in names:
            names.append(ev["name"])
        driver = driver or ev.get("driver")
        cuda = cuda or ev.get("cuda_driver")
    return (", ".join(names) or None), (str(driver) if driver else None), (str(cuda) if cuda else None)


def _machine_id(host: dict) -> str | None:
    """The run's machine id from environment.json; for a run recorded before environment.json carried
    one, this machine's id when the run's host name is this machine's (a run copied from elsewhere
    gets none rather than a wrong one)."""
    if isinstance(host.get("machine_id"), str) and host["machine_id"]:
        return host["machine_id"]
    if host.get("hostname") and host["hostname"] == socket.gethostname():
        from stress.hw.machine_id import machine_id

        return machine_id()
    return None


def _display_facts(env: dict) -> tuple[str | None, str | None, str | None]:
    """Compositor, display server and session type, as environment.json's ``display`` has them."""
    display = env.get("display") if isinstance(env.get("display"), dict) else {}

    def name(v: object) -> str | None:
        if isinstance(v, dict):
            v = v.get("name")
        return str(v) if v else None

    return (name(display.get("compositor") or display.get("window_manager")),
            name(display.get("display_server") or display.get("server")),
            name(display.get("type") or display.get("session_type")))


def summarize_run(run_dir: str | Path, report_dir: str | Path | None = None) -> RunSummary:
    """Everything the history keeps about one run, from its record (``stress.record``): the same
    numbers run.json and report.json show (``stress.record.derived``)."""
    rd = RunDir(run_dir)
    if not rd.journal.exists():
        raise StressError(f"{run_dir}: not a run directory (no journal.jsonl)")
    rec = load(rd.root)
    start = rec.run_start or {}
    end = rec.run_end
    verdict = rec.verdict or {}
    env = _environment(rd, rec.env_event.get("env") if rec.env_event else None)
    s = RunSummary(run_id=start.get("run_id") or rd.run_id, run_dir=str(rd.root.resolve()))
    if report_dir is not None:
        report_dir = Path(report_dir)
        for candidate in (report_dir / "report.json", report_dir):
            if candidate.exists():
                s.report_path = str(candidate.resolve())
                break
    s.started_at = start.get("t") or rec.first_t
    s.ended_at = end.get("t") if end else rec.last_t
    s.wall_s = derived.wall_seconds(rec)
    host = env.get("host") if isinstance(env.get("host"), dict) else {}
    s.hostname = host.get("hostname")
    s.machine_id = _machine_id(host)
    s.compositor, s.display_server, s.session_type = _display_facts(env)
    s.gpu, s.driver, s.cuda_driver = _gpu_facts(env, list(rec.gpu_static.values()))
    os_ = env.get("os") if isinstance(env.get("os"), dict) else {}
    s.kernel = os_.get("release")
    py = env.get("python") if isinstance(env.get("python"), dict) else {}
    s.python = py.get("version")
    libs = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    s.libraries = {k: v for k, v in libs.items() if v}
    s.scenario = start.get("scenario")
    s.scenario_sha256 = start.get("scenario_sha256")
    s.verdict = verdict.get("verdict")
    s.reasons = [str(r) for r in verdict.get("reasons") or []]
    s.exit_code = verdict.get("exit_code")
    s.status = end.get("status") if end else "incomplete"

    counts = derived.counts(rec)
    s.images_ok, s.images_failed = counts.ok, counts.failed
    m = s.metrics
    m["images_ok"], m["images_failed"] = float(s.images_ok), float(s.images_failed)
    per_image = [v for _, v in sorted(derived.image_seconds(rec).items())]
    if per_image:
        s.samples["image_s"] = per_image
        m["image_s_median"] = rnd(median(per_image), 4)
    stages: dict[str, list[float]] = {}
    for idx in sorted(rec.images):
        r = rec.images[idx]
        if r.get("outcome") != "ok":
            continue
        timings = r.get("timings") if isinstance(r.get("timings"), dict) else {}
        for k, v in timings.items():
            if finite(v) is not None:
                stages.setdefault(k, []).append(float(v))
    for stage, vals in stages.items():
        s.samples[f"stage_s:{stage}"] = vals
        m[f"stage_s_median:{stage}"] = median(vals)
    m["images_per_min"] = derived.images_per_min(rec)
    probe_lat: dict[str, list[float]] = {}
    probe_fail: dict[str, int] = {}
    for ev in rec.probes:
        key = f"{ev.get('phase')}:{ev.get('kind')}"
        # A kind whose latency was redefined says from where it times (display-wayland: "connect"); its
        # medians get their own metric, so a trend or compare never sets one definition against another.
        since = (ev.get("metrics") or {}).get("latency_from") if isinstance(ev.get("metrics"), dict) else None
        if isinstance(since, str) and since:
            key += f"@{since}"
        if ev.get("status") == "ok" and finite(ev.get("latency_s")) is not None:
            probe_lat.setdefault(key, []).append(float(ev["latency_s"]))
        elif ev.get("status") in ("fail", "timeout", "error"):
            probe_fail[ev.get("phase") or "?"] = probe_fail.get(ev.get("phase") or "?", 0) + 1
    for key, vals in probe_lat.items():
        s.samples[f"probe_latency_s:{key}"] = vals
        m[f"probe_latency_median:{key}"] = median(vals)
    m["probe_failures"] = float(sum(probe_fail.values()))
    for phase, n in probe_fail.items():
        m[f"probe_failures:{phase}"] = float(n)
    m["xid_events"] = float(len(rec.xids))
    inc = (verdict.get("details") or {}).get("incidence") if isinstance(verdict.get("details"), dict) else None
    if isinstance(inc, dict) and isinstance(inc.get("affected"), int):
        m["probe_visits_affected"] = float(inc["affected"])
        m["probe_visits_after"] = float(inc.get("visits") or 0)
    m["gpu_mem_used_peak_bytes"] = _column_max([c.cols.get("mem_used") for c in rec.nvml.values()])
    m["torch_peak_reserved_bytes"] = _column_max([rec.alloc.cols.get("peak_reserved")])
    m["worker_peak_rss_bytes"] = _column_max([rec.alloc.cols.get("peak_rss")])
    load_s = [w["load_s"] for _, w in sorted(rec.workers.items(), key=lambda kv: str(kv[0]))
              if finite(w.get("load_s")) is not None]
    if load_s:
        m["load_s"] = load_s[0]
    if s.wall_s is not None:
        m["wall_s"] = s.wall_s
    s.metrics = {k: v for k, v in m.items() if v is not None}
    return s


def _column_max(columns: list[list | None]) -> float | None:
    vals = [float(v) for col in columns if col for v in col if finite(v) is not None]
    return max(vals) if vals else None


