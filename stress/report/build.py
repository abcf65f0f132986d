"""report.json: one document, built from the run's record, that every rendering is made from.

The record (``stress.record``, the one fold of the journal) gives the events; the sections
(``sections``), the sampler series (``series``) and the judgements (``stress.analysis``) are put
together here. A damaged run directory (torn last line, no ``run_end``, missing files) still gives a
report: what is missing is listed under ``completeness`` instead of failing.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from stress import __version__
from stress.background import Background
from stress.fields import field_of
from stress.journal import RunDir
from stress.record import RunRecord, derived, load
from stress.errors import StressError  # noqa: F401 - raised by load()
from stress.record.fold import Columns, iso, to_int, to_str
from stress.report.redact import Redactor
from stress.report.schema import SCHEMA_VERSION
from stress.report.sections import (_command, _image_records, _machine, _probes, _prompts_in_outputs,
                                    _redacted_scenario, _scenario_prompts, _source_states, _verdict, _workload)
from stress.report.sections import experiment as _experiment
from stress.report.series import TIMELINE_BUCKETS, _arrays, _gaps, _metric_summary, minmax_downsample
from stress.analysis import LATER_PHASES, incidence, metric_changed
from stress.stats import rnd

ZOOM_AFTER_S = 1200              # runs longer than this get a detailed view of their end
ZOOM_LEAD_S = (60, 300)          # ... from 2x the after-workload time (within these bounds) before its end


def _read_json_file(path: Path, notes: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} cannot be read ({type(exc).__name__}); it is left out")
        return None


def _evidence(rec: RunRecord, env: dict) -> dict:
    """What a driver maintainer acts on: the driver-event fingerprint (stress.hw.fingerprint), what was
    captured at the first failure, the previous boot's records, and the facts of NVIDIA's template that
    this machine could not give (each with the command that gets it)."""
    from stress.environment import missing_facts
    from stress.hw.fingerprint import fingerprint

    fp = fingerprint(sorted([*rec.xids, *rec.kmsg_classified], key=lambda e: e.get("t") or 0.0))
    facts = env.get("nvidia_template") if isinstance(env.get("nvidia_template"), dict) else None
    strip = lambda ev: {k: v for k, v in ev.items() if k not in ("ev",)} if ev else None   # noqa: E731
    return {"fingerprint": fp, "capture": strip(rec.capture), "previous_boot": strip(rec.previous_boot),
            "template_facts": facts, "template_missing": missing_facts(facts) if facts is not None else None}


def _probes_config(scenario: dict | None):
    from stress.probes.config import ProbesConfig

    try:
        return ProbesConfig.model_validate((scenario or {}).get("probes") or {})
    except ValueError:
        return ProbesConfig()


@dataclass
class BuiltReport:
    report: dict
    warnings: list[str]
    redactor: Redactor


# Event kinds whose handlers keep nothing the redactor is made from (prompts, GPU serials, the
# environment, the run's base folder): :func:`run_redactor` folds the journal without them.
_NOT_REDACTION_FACTS = ("nvml", "host", "probe", "stage", "alloc")


def _run_env(env_file: Any, rec: RunRecord) -> dict:
    """The run's environment: environment.json, else the journal's environment event."""
    if isinstance(env_file, dict):
        return env_file
    return rec.env_event.get("env") if rec.env_event and isinstance(rec.env_event.get("env"), dict) else {}


def _run_redactor(rd: RunDir, rec: RunRecord, env: dict, scenario: Any, *, include_prompts: bool,
                  redact: bool) -> Redactor:
    base_dir = (rec.run_start or {}).get("base_dir")
    serials = [g.get("serial") for g in rec.gpu_static.values() if g.get("serial")]
    return Redactor.for_run(environment=env, extra_serials=serials,
                            prompts=_scenario_prompts(scenario, base_dir) + rec.prompts + _prompts_in_outputs(rd.root),
                            include_prompts=include_prompts, enabled=redact)


def run_redactor(run_dir: str | os.PathLike, *, include_prompts: bool = False, redact: bool = True) -> Redactor:
    """The redactor :func:`build_report` makes for ``run_dir``, without folding the sampler ticks (a
    tenth of the time on a long run): the bundle's journal copy starts with it before the report's fold.
    Raises :class:`StressError` when there is no journal."""
    rd = RunDir(run_dir)
    rec = load(rd.root, skip_kinds=_NOT_REDACTION_FACTS)
    throwaway: list[str] = []
    env = _run_env(_read_json_file(rd.environment, throwaway), rec)
    return _run_redactor(rd, rec, env, _read_json_file(rd.scenario, throwaway), include_prompts=include_prompts,
                         redact=redact)


def _other_sections(rec: RunRecord, t0: float, include_prompts: bool, scenario: Any, win: Any) -> tuple:
    """The sections that need no sampler columns: images, probes, Xids, workers (and the notes on
    their exits), the workload. Made while the host's columns are made in the second process."""
    images = _image_records(rec, t0, include_prompts)
    probes = _probes(rec, t0)
    xids = []
    last_seen: dict[tuple, tuple[float, str]] = {}
    for x in sorted(rec.xids, key=lambda e: e["t"]):
        code, source = to_int(x.get("xid")), str(x.get("source"))
        # NVML's event and the kernel log usually report the same Xid: the second report is marked
        prev = last_seen.get((code, x.get("gpu"))) or last_seen.get((code, None))
        dup = prev is not None and prev[1] != source and x["t"] - prev[0] <= 3.0
        last_seen[(code, x.get("gpu"))] = (x["t"], source)
        xids.append({**{k: v for k, v in x.items() if k not in ("ev", "t")}, "t": rnd(x["t"]),
                     "t_rel": rnd(x["t"] - t0, 2), "time": iso(x["t"]), "xid": code,
                     "gpu": x.get("gpu"), "raw": to_str(x.get("raw")), "duplicate": dup})
    workers = []
    worker_notes: list[str] = []
    for w in sorted(rec.workers.values(), key=lambda w: (w.get("worker") is None, w.get("worker") or 0)):
        d = dict(w)
        for k in ("started_t", "ready_t", "exit_t"):
            if d.get(k) is not None:
                d[k] = rnd(d[k] - t0, 2)
        d.setdefault("started_t", None)
        workers.append(d)
        if d.get("exit_reason") in ("crash", "killed-timeout"):
            worker_notes.append(f"worker {d.get('worker')} (pid {d.get('pid')}) exited: {d.get('exit_reason')}"
                         + (f", signal {d['signal']}" if d.get("signal") else "")
                         + (f", status {d['returncode']}" if d.get("returncode") not in (None, 0) else ""))
    workload = _workload(rec, images, scenario, win, t0)
    return images, probes, xids, workers, worker_notes, workload


def build_report(run_dir: str | os.PathLike, *, include_prompts: bool = False, redact: bool = True,
                 record: RunRecord | None = None) -> BuiltReport:
    """report.json's content for ``run_dir`` (redacted unless ``redact=False``); ``record`` is the run's
    record when the caller has folded it already.

    Raises :class:`StressError` only when there is no journal; anything else damaged is reported in
    ``completeness`` and the returned warnings.
    """
    rd = RunDir(run_dir)
    rec = record if record is not None else load(rd.root)
    warnings: list[str] = []
    notes: list[str] = []
    files = {name: (rd.root / name).exists() for name in ("journal.jsonl", "run.json", "environment.json",
                                                          "scenario.resolved.json")}
    env_file = _read_json_file(rd.environment, notes)
    scenario = _read_json_file(rd.scenario, notes)

    env = _run_env(env_file, rec)
    if not files["environment.json"]:
        notes.append("environment.json is missing" + ("; taken from the journal's environment event"
                                                      if env else ""))
    if not files["scenario.resolved.json"]:
        notes.append("scenario.resolved.json is missing; the scenario section is empty")

    t0 = (rec.run_start or {}).get("t") or rec.first_t or 0.0
    t0 = float(t0)

    # ---- completeness ----
    missing = derived.missing(rec)
    win = derived.phase_windows(rec, missing)

    # ---- prompts and redaction ----
    redactor = _run_redactor(rd, rec, env, scenario, include_prompts=include_prompts, redact=redact)

    # ---- monitors ----
    sources: list[dict] = []
    metrics: list[dict] = []
    series: list[dict] = []

    source_state = _source_states(rec.source_events, t0)
    zoom_series: list[dict] = []
    zoom_from: float | None = None
    if rec.count and (rec.last_t or t0) - t0 > ZOOM_AFTER_S:
        wl_end = next((s["end"] for s in reversed(win.spans) if s["phase"] == "workload" and s["end"]), None)
        if wl_end is None:
            ends = [r.get("t") for r in rec.images.values() if isinstance(r.get("t"), (int, float))]
            wl_end = max(ends) if ends else rec.last_t
        wl_end = min(wl_end, rec.last_t or wl_end)
        lead = min(ZOOM_LEAD_S[1], max(ZOOM_LEAD_S[0], 2 * ((rec.last_t or wl_end) - wl_end)))
        zoom_from = max(t0, wl_end - lead)

    def summarise(src: str, gpu: int | None, cols: Columns, prefix: str, out: tuple | None = None) -> None:
        sources, metrics, series, zoom_series, notes = out or (all_sources, all_metrics, all_series, all_zoom, all_notes)
        t, arrays = _arrays(cols)
        # gaps only mean something for sources that sample on a clock (allocator events follow the images)
        interval, gaps = _gaps(t) if src in ("nvml", "host") else (None, [])
        st = source_state.pop((src, gpu), None) or source_state.get((src, None)) or {}
        sources.append({"src": src, "gpu": gpu, "status": st.get("status", "available"),
                        "reason": st.get("reason"), "unsupported": st.get("unsupported", {}),
                        "info": st.get("info", {}), "history": st.get("history", []),
                        "samples": int(t.size), "first_t": rnd(t[0] - t0, 2) if t.size else None,
                        "last_t": rnd(t[-1] - t0, 2) if t.size else None,
                        "interval_s": rnd(interval, 3) if interval else None,
                        "gaps": [dict(g, start_t=rnd(g["start_t"] - t0, 2), end_t=rnd(g["end_t"] - t0, 2))
                                 for g in gaps]})
        where = "" if gpu is None else f" GPU {gpu}"
        for g in gaps:
            notes.append(f"{src}{where}: no samples for {g['s']:.0f} s from {iso(g['start_t'])}")
        if st.get("status") == "unavailable":
            notes.append(f"{src}{where}: stopped: {st.get('reason') or 'unavailable'}"
                         + (f" ({rnd(st['t_rel'], 1)} s after the start)" if st.get("t_rel") is not None else ""))
        if st.get("unsupported"):
            notes.append(f"{src}{where}: not supported here: " + ", ".join(
                f"{k} ({v})" for k, v in sorted(st["unsupported"].items())))
        glimit = max(10.0, 10 * interval) if interval else None
        for key, v in arrays.items():
            info = field_of(src, key)
            m = _metric_summary(src, gpu, key, info, t, v, win, t0)
            if m is None:
                continue
            pm = re.fullmatch(r"procs\[(.+)\]\.mem", key)
            group = rec.proc_groups.get(pm.group(1)) if pm else ("display" if key.startswith("display[") else None)
            m["group"] = group
            m["changed"] = metric_changed(m)
            metrics.append(m)
            if info.chart:
                tt, vv = minmax_downsample(t, v, TIMELINE_BUCKETS, glimit)
                series.append({"key": f"{prefix}{key}", "src": src, "gpu": gpu, "label": info.label,
                               "unit": info.unit, "group": group, "t": [round(float(x) - t0, 2) for x in tt],
                               "v": [rnd(x) for x in vv], "n": m["n"]})
                if zoom_from is not None:
                    sel = t >= zoom_from
                    if sel.any():
                        zt, zv = minmax_downsample(t[sel], v[sel], TIMELINE_BUCKETS, glimit)
                        zoom_series.append(dict(series[-1], t=[round(float(x) - t0, 2) for x in zt],
                                                v=[rnd(x) for x in zv], n=int(sel.sum())))

    all_sources, all_metrics, all_series, all_zoom, all_notes = sources, metrics, series, zoom_series, notes

    def host_part() -> tuple:
        out: tuple = ([], [], [], [], [])
        summarise("host", None, rec.host, "host.", out)
        return (*out, rec.display_changes)

    # The host's columns and summaries are made in a second process while the GPUs' are made here
    # (stress.background); the same items, in the same order (GPUs first).
    host_job = Background(host_part) if rec.host.t else None
    try:
        for gpu in sorted(rec.nvml):
            summarise("nvml", gpu, rec.nvml[gpu], f"nvml[{gpu}].")
        source_state.pop(("nvml", None), None) if rec.nvml else None
        host_display_changes = None
        images, probes, xids, workers, worker_notes, workload = _other_sections(rec, t0, include_prompts,
                                                                                scenario, win)
        verdict = _verdict(rec, missing)
        if host_job is not None:
            *parts, host_display_changes = host_job.result()
            for target, items in zip((sources, metrics, series, zoom_series, notes), parts):
                target.extend(items)
            source_state.pop(("host", None), None)
    finally:
        if host_job is not None:
            host_job.cancel()
    if rec.alloc.t:
        summarise("allocator", None, rec.alloc, "allocator.")
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
    display_changes = [dict(c, t=rnd(c["t"] - t0, 2)) for c in (
        rec.display_changes if host_display_changes is None else host_display_changes)]

    notes.extend(worker_notes)

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

    run_start = rec.run_start or {}
    argv = run_start.get("argv") if isinstance(run_start.get("argv"), list) else []
    argv = [str(a) for a in argv]
    run_end = rec.run_end or {}
    ended_at = run_end.get("t") if rec.run_end else rec.last_t
    run = {"run_id": str(run_start.get("run_id") or rd.run_id), "scenario": to_str(run_start.get("scenario")),
           "scenario_sha256": to_str(run_start.get("scenario_sha256")),
           "command": _command(argv), "argv": argv, "stress_version": to_str(run_start.get("stress_version")),
           "started_at": rnd(t0) if rec.count else None, "started": iso(t0) if rec.count else None,
           "ended_at": rnd(ended_at), "ended": iso(ended_at),
           "status": str(run_end.get("status")) if rec.run_end else "incomplete",
           "resumed": bool(run_start.get("resumed")) or bool(rec.resumes),
           "wall_s": workload["wall_s"]}
    phases = (verdict.get("details") or {}).get("phases") if isinstance(verdict.get("details"), dict) else None
    for row in probes["compare"]:
        row["regressed"] = any(((phases or {}).get(ph) or {}).get(row["kind"], {}).get("regressed") is True
                               for ph in LATER_PHASES)
    if isinstance(verdict.get("details"), dict) and "incidence" not in verdict["details"]:
        # written by a version before the judge gave the incidence: the judge gives it now
        verdict["details"]["incidence"] = incidence(rec.probes, verdict, _probes_config(scenario))
    completeness = {"complete": not missing, "missing": missing, "notes": notes, "torn_tail": rec.torn_tail,
                    "bad_lines": len(rec.bad_lines), "events": rec.count,
                    "event_counts": dict(rec.kinds.most_common()),
                    "first_event_t": rnd(rec.first_t), "last_event_t": rnd(rec.last_t), "last_event": rec.last_ev,
                    "files": files}
    report = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": round(time.time(), 3),
        "generator": f"gpu-stress {__version__}",
        "run_id": run["run_id"],
        "verdict": verdict,
        "exit_code": verdict["exit_code"],
        "run": run,
        "machine": _machine(env, rec),
        "environment": env,
        "scenario": _redacted_scenario(scenario, include_prompts),
        "images": images,
        "probes": probes,
        "monitors": {"sources": sources, "metrics": metrics, "display_processes": display_changes,
                     "gpus": [dict(g) for g in rec.gpu_static.values()],
                     "summary": {k: v for k, v in rec.monitors_summary.items() if k not in ("ev", "t")}
                     if rec.monitors_summary else None},
        "xid_events": xids,
        "kernel_log": {"lines": rec.kmsg_count, "suppressed": rec.kmsg_suppressed,
                       "tail": [{"t": rnd(k["t"] - t0, 2), "line": k["line"]} for k in rec.kmsg_tail]},
        "workers": workers,
        "workload": workload,
        "timeline": {"t0": rnd(t0) if rec.count else None,
                     "downsample": {"method": "minmax", "buckets": TIMELINE_BUCKETS,
                                    "note": "each series keeps the minimum and maximum of every time bucket"},
                     "series": series,
                     "zoom": {"start": rnd(zoom_from - t0, 2), "end": rnd((rec.last_t or t0) - t0, 2),
                              "series": zoom_series} if zoom_from is not None else None,
                     "phases": [dict(s, start=rnd(s["start"] - t0, 2),
                                                       end=rnd(s["end"] - t0, 2) if s["end"] is not None else None)
                                                  for s in win.spans],
                     "images": [{"index": r["index"], "start": r["t_start"], "end": r["t_end"],
                                 "outcome": r["outcome"]} for r in images],
                     "marks": marks},
        "evidence": _evidence(rec, env),
        "experiment": _experiment(rec, t0),
        "completeness": completeness,
        "redaction": redactor.summary(),
        "attachments": [],
        "warnings": warnings,
    }
    report = redactor.obj(report)
    return BuiltReport(report, warnings, redactor)


def dumps_report(report: dict) -> str:
    """report.json text: strict JSON (no NaN), UTF-8, compact (``python -m json.tool`` pretty-prints it)."""
    return json.dumps(report, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str) + "\n"
