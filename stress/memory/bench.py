"""``stress bench``: optimization presets side by side, measured by real runs.

Each preset is the scenario with a few keys changed (validated like any scenario file), run
``repeat`` times through :func:`stress.runner.run_scenario` (a real supervised worker; probes off,
since only the workload is measured here). Per run: images per minute and seconds per UNet step
from the image records of ``run.json`` (the first ``warmup`` images left out: they pay for
``torch.compile`` and cuDNN's first plans), and the peak memory from the journal's ``alloc`` events
(the caching allocator's reserved peak on CUDA, the process's peak RSS on the CPU). Across repeats:
the median and the spread (min..max).
"""
from __future__ import annotations

import copy
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stress.errors import StressError
from stress.scenario import Scenario

# The ladder of the HF blog "Exploring simple optimizations for SDXL", cumulative where it makes sense.
PRESETS: dict[str, dict[str, Any]] = {
    "fp32": {"model.dtype": "fp32", "optimizations.attention": "math"},
    "fp16": {"model.dtype": "fp16", "optimizations.attention": "math"},
    "fp16+sdpa": {"model.dtype": "fp16", "optimizations.attention": "sdpa"},
    "+channels_last": {"model.dtype": "fp16", "optimizations.attention": "sdpa", "optimizations.channels_last": True},
    "+compile": {"model.dtype": "fp16", "optimizations.attention": "sdpa", "optimizations.channels_last": True,
                 "optimizations.compile": True},
    "+vae_tiling": {"model.dtype": "fp16", "optimizations.attention": "sdpa", "optimizations.vae_tiling": True},
    "+cpu_offload": {"model.dtype": "fp16", "optimizations.attention": "sdpa", "optimizations.cpu_offload": True},
}
BATCH_BASE = "fp16+sdpa"


def _set(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def preset_scenario(sc: Scenario, name: str, updates: dict[str, Any], images: int) -> Scenario:
    """The scenario with ``updates`` applied, probes off, ``images`` images; validated."""
    data = copy.deepcopy(sc.model_dump(mode="json"))
    for k, v in updates.items():
        _set(data, k, v)
    data["name"] = f"{sc.name}-bench-{name}".replace("+", "p")[:80]
    data["images"] = images
    data["probes"] = {**data.get("probes", {}), "enabled": False}
    data["faults"] = []
    session = data.setdefault("session", {})
    session["idle_after"] = 0
    session["restart_worker_every"] = 0
    try:
        return Scenario.model_validate(data)
    except Exception as exc:  # noqa: BLE001 - a preset that does not apply is the user's input
        raise StressError(f"preset {name}: {exc}") from None


def presets_for(names: list[str] | None, batch_sizes: list[int]) -> list[tuple[str, dict[str, Any]]]:
    chosen = names or list(PRESETS)
    unknown = [n for n in chosen if n not in PRESETS]
    if unknown:
        raise StressError(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    out = [(n, dict(PRESETS[n])) for n in chosen]
    for b in batch_sizes:
        out.append((f"{BATCH_BASE} batch={b}", {**PRESETS[BATCH_BASE], "batch_size": b}))
    return out


@dataclass
class RunMetrics:
    run_dir: str
    status: str
    ok: int
    failed: int
    images_per_min: float | None
    s_per_step: float | None
    peak_memory: int | None
    memory_kind: str | None


def metrics_of(run_dir: Path, warmup: int) -> RunMetrics:
    """Throughput and peak memory of one finished run, from run.json and the journal."""
    from stress.record import load

    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    images = sorted(run.get("images", []), key=lambda r: r.get("index", 0))
    ok = [r for r in images if r.get("outcome") == "ok"]
    measured = ok[warmup:] if len(ok) > warmup else []
    ipm = sps = None
    if measured:
        # The images of one batch share one pipeline call and carry its timings: each gets its share.
        seconds = sum(sum(float(v) for v in r.get("timings", {}).values()) / max(1, int(r.get("batch_size", 1)))
                      for r in measured)
        ipm = 60.0 * len(measured) / seconds if seconds > 0 else None
        per_step = [float(r["timings"].get("base", 0.0)) / r["steps"] for r in measured if r.get("steps")]
        sps = statistics.median(per_step) if per_step else None
    peak = kind = None
    cols = load(run_dir).alloc.cols
    for k, label in (("peak_reserved", "cuda reserved"), ("peak_rss", "cpu peak RSS")):
        vals = [v for v in cols.get(k) or [] if isinstance(v, (int, float))]
        if vals and (peak is None or max(vals) > peak):
            peak, kind = int(max(vals)), label
    return RunMetrics(str(run_dir), run.get("status", "?"), len(ok), len(images) - len(ok), ipm, sps, peak, kind)


@dataclass
class PresetResult:
    name: str
    updates: dict[str, Any]
    runs: list[RunMetrics] = field(default_factory=list)

    def stat(self, attr: str) -> dict | None:
        vals = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        if not vals:
            return None
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def run_bench(sc: Scenario, scenario_path: Path, *, presets: list[tuple[str, dict[str, Any]]], repeat: int,
              images: int, warmup: int, out: Path, say: Callable[[str], None]) -> list[PresetResult]:
    from stress.progress import Progress
    from stress.runner import run_scenario

    results = []
    for name, updates in presets:
        batch = int(updates.get("batch_size", sc.batch_size))
        n_images = max(images, batch * (warmup + 1))
        variant = preset_scenario(sc, name, updates, n_images)
        res = PresetResult(name, updates)
        for i in range(repeat):
            say(f"{name}: run {i + 1}/{repeat} ({n_images} images)")
            result = run_scenario(variant, scenario_path, artifacts=out, reports=None, progress=Progress.quiet())
            if result.status == "interrupted":
                raise KeyboardInterrupt
            res.runs.append(metrics_of(Path(result.run_dir), warmup))
        results.append(res)
    return results


def render(results: list[PresetResult]) -> str:
    from stress.memory.render import _table

    def fmt(st: dict | None, scale: float = 1.0, digits: int = 2) -> str:
        if st is None:
            return "-"
        if st["n"] == 1:
            return f"{st['median'] * scale:.{digits}f}"
        return f"{st['median'] * scale:.{digits}f} ({st['min'] * scale:.{digits}f}..{st['max'] * scale:.{digits}f})"

    base = results[0].stat("images_per_min") if results else None
    rows = []
    for r in results:
        ipm = r.stat("images_per_min")
        speed = f"{ipm['median'] / base['median']:.2f}x" if ipm and base and base["median"] else "-"
        kinds = {m.memory_kind for m in r.runs if m.memory_kind}
        rows.append([r.name, f"{sum(m.ok for m in r.runs)}/{sum(m.ok + m.failed for m in r.runs)}",
                     fmt(ipm), speed, fmt(r.stat("s_per_step"), digits=3),
                     fmt(r.stat("peak_memory"), 1 / (1 << 30)), ", ".join(sorted(kinds)) or "-"])
    lines = ["bench (median (min..max) over repeats; the first images of each run are warm-up)"]
    lines += ["  " + x for x in _table(["preset", "images ok", "images/min", "speed", "s/step", "peak GiB",
                                        "memory"], rows, right={1, 2, 3, 4, 5})]
    return "\n".join(lines) + "\n"


def as_json(results: list[PresetResult]) -> list[dict]:
    return [{"preset": r.name, "updates": r.updates, "runs": [m.__dict__ for m in r.runs],
             "images_per_min": r.stat("images_per_min"), "s_per_step": r.stat("s_per_step"),
             "peak_memory": r.stat("peak_memory")} for r in results]
