"""Predicted against measured: a plan next to what a real run recorded in its journal.

A run's worker journals ``alloc`` events (docs/journal.md) after loading and after every stage,
with the caching allocator's ``peak_allocated`` / ``peak_reserved`` since the previous event, and the
samplers journal ``nvml`` ticks with the device's memory in use (``mu``). ``stress plan SCENARIO
--compare RUN_DIR`` puts them next to the prediction, per resolution and per stage: the table that
validates (or calibrates) the planner on a GPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from stress.errors import StressError
from stress.memory.overhead import CachingAllocatorModel, OverheadModel


def stage_peaks(trace: Any, overhead: OverheadModel) -> dict[str, dict[str, int]]:
    """Replay one traced image (after the prefix; with model offload also the steady image after it)
    and take the allocator's peaks per worker stage (``text_encode``, ``base``, ``refiner``,
    ``vae_decode``), as the worker's ``alloc`` events report them (peaks are reset after each stage;
    reserved is cumulative; a stage's worst over the images)."""
    marks: list[tuple[int, str]] = [(i, name) for i, name in trace.prefix.stages]
    offset = len(trace.prefix.events)
    marks += [(offset + i, name) for i, name in trace.image.stages]
    if trace.steady is not None:
        offset += len(trace.image.events)
        marks += [(offset + i, name) for i, name in trace.steady.stages]
    marks.sort()
    alloc = CachingAllocatorModel()
    alloc.malloc(-(1 << 62), overhead.cublas_workspace)
    out: dict[str, dict[str, int]] = {}
    events = trace.events
    bounds = [m[0] for m in marks] + [len(events)]
    for (start, name), end in zip(marks, bounds[1:], strict=True):
        stage = name.split(":")[0]
        alloc.peak_allocated = alloc.allocated
        for key, nbytes in events[start:end]:
            if nbytes > 0:
                alloc.malloc(key, nbytes)
            else:
                alloc.free(key)
        row = out.setdefault(stage, {"peak_allocated": 0, "peak_reserved": 0})
        row["peak_allocated"] = max(row["peak_allocated"], alloc.peak_allocated)
        row["peak_reserved"] = max(row["peak_reserved"], alloc.peak_reserved)
    return out


def measured_from_run(run_dir: Path) -> dict[str, Any]:
    """Per resolution and stage, the worst allocator peaks the run journaled; NVML's device peak."""
    from stress.record import load as load_record

    if not (Path(run_dir) / "journal.jsonl").is_file():
        raise StressError(f"{run_dir} is not a run directory (no journal.jsonl)")
    rec = load_record(run_dir)
    sizes = {i: (int(e["width"]), int(e["height"])) for i, e in rec.image_starts.items()
             if isinstance(e.get("width"), int) and isinstance(e.get("height"), int)}
    res: dict[tuple[int, int], dict[str, Any]] = {}
    load: dict | None = None
    first_worker = min((w["started_t"] for w in rec.workers.values() if w.get("started_t") is not None), default=None)
    device = next((w.get("device") for _, w in sorted(rec.workers.items(), key=lambda kv: str(kv[0]))
                   if w.get("device")), None)
    baseline_used: int | None = None
    device_peak = 0
    for cols in rec.nvml.values():
        for t, mu in zip(cols.t, cols.cols.get("mem_used") or []):
            if not isinstance(mu, (int, float)):
                continue
            if first_worker is None or t < first_worker:
                baseline_used = int(mu) if baseline_used is None else min(baseline_used, int(mu))
            else:
                device_peak = max(device_peak, int(mu))
    for idx, r in rec.images.items():
        if r.get("outcome") == "oom" and idx in sizes:
            res.setdefault(sizes[idx], {"images": set(), "stages": {}, "peak_allocated": 0, "peak_reserved": 0,
                                        "ooms": 0})["ooms"] += 1
    for ev in rec.alloc_events:
        at = str(ev.get("at", ""))
        if at == "load":
            load = ev
            continue
        idx = ev.get("index")
        if idx is None or int(idx) not in sizes or "peak_allocated" not in ev:
            continue
        row = res.setdefault(sizes[int(idx)], {"images": set(), "stages": {}, "peak_allocated": 0,
                                               "peak_reserved": 0, "ooms": 0})
        row["images"].add(int(idx))
        row["peak_allocated"] = max(row["peak_allocated"], int(ev["peak_allocated"]))
        row["peak_reserved"] = max(row["peak_reserved"], int(ev.get("peak_reserved", 0)))
        if at.startswith("stage:"):
            st = row["stages"].setdefault(at[6:], {"peak_allocated": 0, "peak_reserved": 0})
            st["peak_allocated"] = max(st["peak_allocated"], int(ev["peak_allocated"]))
            st["peak_reserved"] = max(st["peak_reserved"], int(ev.get("peak_reserved", 0)))
    for row in res.values():
        row["images"] = len(row["images"])
    if not res:
        raise StressError(f"{run_dir}: the journal has no allocator peaks per image "
                          "(a run on a CUDA device records them; CPU runs record RSS only)")
    return {"device": device, "load_allocated": int(load["allocated"]) if load and "allocated" in load else None,
            "resolutions": res,
            "device_peak": (device_peak - (baseline_used or 0)) if device_peak else None,
            "baseline_used": baseline_used}


def _pct(pred: int | None, meas: int | None) -> str:
    if not pred or not meas:
        return "-"
    return f"{100.0 * (pred - meas) / meas:+.1f}%"


def compare_text(plan: dict, measured: dict) -> str:
    """The predicted/measured table (GiB)."""
    from stress.memory.render import _g, _table

    lines = [f"predicted vs measured: {plan['scenario']} (measured on {measured.get('device') or '?'})"]
    rows = []
    stage_rows = []
    for r in plan["memory"]["resolutions"]:
        key = (r["width"], r["height"])
        m = measured["resolutions"].get(key)
        if m is None:
            continue
        rows.append([f"{key[0]}x{key[1]}", str(m["images"]), _g(r["peak_allocated"]), _g(m["peak_allocated"]),
                     _pct(r["peak_allocated"], m["peak_allocated"]), _g(r["peak_reserved"]),
                     _g(m["peak_reserved"]), _pct(r["peak_reserved"], m["peak_reserved"]), str(m["ooms"])])
        pred_stages = r["allocator_stages"]
        for stage, ms in m["stages"].items():
            ps = pred_stages.get(stage)
            if ps is None:
                continue
            stage_rows.append([f"{key[0]}x{key[1]}", stage, _g(ps["peak_allocated"]), _g(ms["peak_allocated"]),
                               _pct(ps["peak_allocated"], ms["peak_allocated"])])
    if not rows:
        raise StressError("the run has none of the plan's resolutions")
    lines += ["  " + x for x in _table(["resolution", "images", "alloc pred", "alloc meas", "error",
                                         "reserved pred", "reserved meas", "error", "OOMs"], rows,
                                        right={1, 2, 3, 4, 5, 6, 7, 8})]
    lines.append("  per stage (peak allocated):")
    lines += ["    " + x for x in _table(["resolution", "stage", "pred", "meas", "error"], stage_rows,
                                          right={2, 3, 4})]
    if measured.get("load_allocated") is not None and not plan["settings"]["cpu_offload"]:
        lines.append(f"  after load: allocated {_g(measured['load_allocated'])} GiB measured; weights "
                     f"{_g(sum(m['bytes'] for m in plan['models'].values()))} GiB predicted")
    s = plan["memory"]["session"]
    if measured.get("device_peak"):
        lines.append(f"  device memory used by the run (NVML, above the baseline "
                     f"{_g(measured['baseline_used'])} GiB): "
                     f"measured {_g(measured['device_peak'])} GiB, "
                     f"predicted session peak {_g(s['predicted_peak'])} GiB "
                     f"({_pct(s['predicted_peak'], measured['device_peak'])})")
    return "\n".join(lines) + "\n"
