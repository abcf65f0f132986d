"""Numbers derived from a run record, each defined once: run.json, report.json, the history, the soak
ledger and the planner's bench all take them from here, so they cannot disagree.

- **images ok / failed / skipped / unfinished**: from the last record of each image index (a resumed
  run's redo wins). *Failed* is every recorded outcome other than ``ok`` and ``skipped`` (a preflight
  skip is a decision, not a failure); *unfinished* is an image that started and has no record.
- **image time** (``image_s``): per ``ok`` image, from its ``image_start`` to its record (the wall time
  of the pipeline call that made it, batch-mates share it); the sum of its stage timings where the
  start is missing.
- **images/min**: ``ok`` images per minute of time in which images were in flight (``image_start`` ..
  record, overlapping batches merged): model loading, probes and the downtime before a resume do not
  count, so a resumed run and a run with long probe phases compare with one that had neither.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from stress.record.fold import RunRecord, iso, num, to_int


NOT_FAILED = ("ok", "skipped")


@dataclass
class Windows:
    """The phases of a run as time spans (unix seconds)."""

    baseline: tuple[float, float] | None
    after: list[tuple[float, float]]
    after_exit: list[tuple[float, float]]
    spans: list[dict] = field(default_factory=list)


def phase_windows(rec: RunRecord, missing: list[str] | None = None) -> Windows:
    open_: dict[str, float] = {}
    spans: list[dict] = []
    for phase, state, t in rec.phase_events:
        if state == "start":
            open_[phase] = t
        elif state == "end":
            start = open_.pop(phase, None)
            spans.append({"phase": phase, "start": start if start is not None else t, "end": t})
    for phase, start in open_.items():
        spans.append({"phase": phase, "start": start, "end": None})
        if missing is not None:
            missing.append(f"phase '{phase}' started at {iso(start)} and never ended")
    spans.sort(key=lambda s: s["start"])
    last = rec.last_t or 0.0

    def of(name: str) -> list[tuple[float, float]]:
        return [(s["start"], s["end"] if s["end"] is not None else last) for s in spans if s["phase"] == name]

    workload_start = next((s["start"] for s in spans if s["phase"] in ("load", "workload")), None)
    if workload_start is None and rec.image_starts:
        workload_start = min(e["t"] for e in rec.image_starts.values())
    baseline = (rec.first_t or 0.0, workload_start) if workload_start is not None else None
    return Windows(baseline, of("after"), of("after-exit"), spans)


def outcomes(rec: RunRecord) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rec.images.values():
        key = str(r.get("outcome") or "unknown")
        out[key] = out.get(key, 0) + 1
    return out


@dataclass(frozen=True)
class Counts:
    planned: int | None
    started: int          # images with a start or a record
    ok: int
    failed: int
    skipped: int
    unfinished: int
    outcomes: dict


def counts(rec: RunRecord) -> Counts:
    oc = outcomes(rec)
    planned = to_int((rec.plan or {}).get("images"))
    return Counts(planned=planned, started=len(set(rec.images) | set(rec.image_starts)), ok=oc.get("ok", 0),
                  failed=sum(v for k, v in oc.items() if k not in NOT_FAILED), skipped=oc.get("skipped", 0),
                  unfinished=len(rec.in_flight), outcomes=oc)


def image_seconds(rec: RunRecord) -> dict[int, float]:
    """Per ``ok`` image index: its image time (see the module docstring)."""
    out: dict[int, float] = {}
    for idx, r in rec.images.items():
        if r.get("outcome") != "ok":
            continue
        start = rec.image_starts.get(idx)
        t_end = num(r.get("t"))
        if start is not None and t_end is not None and t_end >= start["t"]:
            out[idx] = round(t_end - start["t"], 6)
            continue
        timings = r.get("timings") if isinstance(r.get("timings"), dict) else {}
        vals = [v for v in (num(x) for x in timings.values()) if v is not None]
        vals += [v for v in rec.stages.get(idx, {}).values()] if not vals else []
        if vals:
            out[idx] = round(sum(vals), 6)
    return out


def busy_seconds(rec: RunRecord) -> float | None:
    """Seconds in which at least one image was in flight (overlapping spans merged)."""
    spans = sorted((rec.image_starts[i]["t"], num(r.get("t"))) for i, r in rec.images.items()
                   if i in rec.image_starts and num(r.get("t")) is not None and num(r.get("t")) >= rec.image_starts[i]["t"])
    total = 0.0
    cur_a = cur_b = None
    for a, b in spans:
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    if not total:
        per = image_seconds(rec)
        total = sum(per.values())
    return total or None


def images_per_min(rec: RunRecord) -> float | None:
    ok = counts(rec).ok
    busy = busy_seconds(rec)
    return round(ok / busy * 60, 4) if ok and busy else None


def wall_seconds(rec: RunRecord) -> float | None:
    """The run's wall time: ``run_end.wall_s`` when it finished, else first to last event."""
    wall = num((rec.run_end or {}).get("wall_s"))
    if wall is not None:
        return wall
    start = num((rec.run_start or {}).get("t")) or rec.first_t
    end = num((rec.run_end or {}).get("t")) or rec.last_t
    return round(end - start, 3) if start is not None and end is not None else None


def missing(rec: RunRecord) -> list[str]:
    """What the record lacks, one sentence each (empty: complete)."""
    out: list[str] = []
    if rec.count == 0:
        out.append("the journal holds no events")
        return out
    if rec.run_start is None:
        out.append("the journal has no run_start event (its beginning is missing)")
    if rec.torn_tail:
        out.append("the last journal line was cut off mid-write (a crash or power loss while writing)")
    if rec.bad_lines:
        shown = ", ".join(str(i) for i in rec.bad_lines[:5]) + (" ..." if len(rec.bad_lines) > 5 else "")
        out.append(f"{len(rec.bad_lines)} journal line(s) are not valid JSON and were skipped (line {shown})")
    if rec.newer_format:
        out.append(f"the journal is format {rec.newer_format}, newer than this version reads; some events may be "
                   "left out")
    if rec.run_end is None:
        t0 = rec.first_t or 0.0
        out.append(f"journal ends without run_end: the run was interrupted or the machine froze at "
                   f"{iso(rec.last_t)} ({(rec.last_t or t0) - t0:.0f} s after the start; last event: {rec.last_ev})")
    for idx in rec.in_flight:
        st = rec.image_starts[idx]
        out.append(f"image {idx} (seed {st.get('seed')}, {st.get('width')}x{st.get('height')}) started at "
                   f"{iso(st['t'])} and never finished")
    if rec.verdict is None:
        out.append("no verdict event: the run did not reach its conclusion")
    c = counts(rec)
    if c.planned is not None and c.started < c.planned:
        out.append(f"{c.planned - c.started} of {c.planned} planned images have no record")
    return out


def phase_host(rec: RunRecord, phases: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The host as each phase saw it, for the judge (stress.analysis): per phase with a window of its
    own (``baseline`` and those of ``phases`` that ran; a phase's visits pooled):

    - ``load``: the median 1-minute load average of the host samples in its window;
    - ``cpu_pressure``: the share of its time in which a runnable task waited for a CPU, the growth of
      ``/proc/pressure/cpu``'s ``some total`` (``cps``, microseconds) from the window's first host
      sample to its last over the seconds between them. Absent where the journal has no ``cps``
      (older journals, kernels without PSI) or a window has fewer than two samples."""
    import statistics

    win = phase_windows(rec)
    spans: dict[str, list[tuple[float, float]]] = {"baseline": [win.baseline] if win.baseline else []}
    for sp in win.spans:
        if sp["phase"] in phases:
            spans.setdefault(sp["phase"], []).append((sp["start"], sp["end"] if sp["end"] is not None
                                                     else rec.last_t or sp["start"]))
    out: dict[str, dict[str, float]] = {"load": {}, "cpu_pressure": {}}
    ts = rec.host.t
    for key, col in (("load", rec.host.one("load1")), ("cpu_pressure", rec.host.one("cpu_pressure_us"))):
        if not col:
            continue
        for phase, ws in spans.items():
            if key == "load":
                vals = [v for t, v in zip(ts, col) if type(v) in (int, float) and any(a <= t <= b for a, b in ws)]
                if vals:
                    out[key][phase] = round(statistics.median(vals), 2)
                continue
            grew = secs = 0.0
            for a, b in ws:
                pts = [(t, v) for t, v in zip(ts, col) if type(v) in (int, float) and a <= t <= b]
                if len(pts) >= 2 and pts[-1][0] > pts[0][0] and pts[-1][1] >= pts[0][1]:
                    grew += (pts[-1][1] - pts[0][1]) / 1e6
                    secs += pts[-1][0] - pts[0][0]
            if secs > 0:
                out[key][phase] = round(min(1.0, grew / secs), 4)
    return out
