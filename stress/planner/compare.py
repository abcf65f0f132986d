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
from stress.planner.overhead import CachingAllocatorModel, OverheadModel


def stage_peaks(trace: Any, overhead: OverheadModel) -> dict[str, dict[str, int]]:
    """Replay one traced image (after the prefix) and take the allocator's peaks per worker stage
    (``text_encode``, ``base``, ``refiner``, ``vae_decode``), as the worker's ``alloc`` events
    report them (peaks are reset after each stage; reserved is cumulative)."""
    marks: list[tuple[int, str]] = [(i, name) for i, name in trace.prefix.stages]
    offset = len(trace.prefix.events)
    marks += [(offset + i, name) for i, name in trace.image.stages]
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
    from stress.journal import read_journal

    path = Path(run_dir) / "journal.jsonl"
    if not path.is_file():
        raise StressError(f"{run_dir} is not a run directory (no journal.jsonl)")
    contents = read_journal(path)
    sizes: dict[int, tuple[int, int]] = {}
    res: dict[tuple[int, int], dict[str, Any]] = {}
    load: dict | None = None
    baseline_used: int | None = None
    device_peak = 0
    worker_started = False
    device = None
    for ev in contents.events:
        kind = ev.get("ev")
        if kind == "worker_start":
            worker_started = True
        elif kind == "worker_ready":
            device = ev.get("device")
        elif kind == "nvml" and isinstance(ev.get("mu"), (int, float)):
            if not worker_started:
                baseline_used = int(ev["mu"]) if baseline_used is None else min(baseline_used, int(ev["mu"]))
            else:
                device_peak = max(device_peak, int(ev["mu"]))
        elif kind == "image_start":
            sizes[int(ev["index"])] = (int(ev["width"]), int(ev["height"]))
        elif kind == "alloc":
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
        elif kind == "image" and ev.get("outcome") == "oom" and ev.get("index") in sizes:
            res.setdefault(sizes[ev["index"]], {"images": set(), "stages": {}, "peak_allocated": 0,
                                                "peak_reserved": 0, "ooms": 0})["ooms"] += 1
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
    from stress.planner.render import _g, _table

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
