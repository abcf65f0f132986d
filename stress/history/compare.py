"""Trends over recorded runs and comparisons of two runs or two groups of runs (pure: summaries in,
dicts out; the history's storage is :mod:`stress.history.store`)."""
from __future__ import annotations

from stress.history.summary import RunSummary
from stress.stats import benjamini_hochberg, mann_whitney, median


# ---------------------------------------------------------------------------------------------
# Trends
# ---------------------------------------------------------------------------------------------

def trends(runs: list[RunSummary]) -> list[dict]:
    """Per (scenario, machine, GPU, driver): runs, reproductions with a Wilson interval, speed."""
    from stress.stats import incidence

    groups: dict[tuple, list[RunSummary]] = {}
    for r in runs:
        groups.setdefault((r.scenario, r.hostname, r.gpu, r.driver), []).append(r)
    out = []
    for (scenario, host, gpu, driver), rs in groups.items():
        verdicts = [r.verdict for r in rs]
        ipm = [r.metrics["images_per_min"] for r in rs if r.metrics.get("images_per_min") is not None]
        ims = [r.metrics["image_s_median"] for r in rs if r.metrics.get("image_s_median") is not None]
        starts = [r.started_at for r in rs if r.started_at]
        out.append({
            "scenario": scenario, "machine": host, "gpu": gpu, "driver": driver, "runs": len(rs),
            "verdicts": {v or "none": verdicts.count(v) for v in sorted(set(verdicts), key=str)},
            "incidence": incidence(verdicts),
            "images_per_min_median": median(ipm), "image_s_median": median(ims),
            "first": min(starts) if starts else None, "last": max(starts) if starts else None,
        })
    out.sort(key=lambda g: (str(g["scenario"]), str(g["machine"]), g["last"] or 0))
    return out


# ---------------------------------------------------------------------------------------------
# Comparing two runs or two groups of runs
# ---------------------------------------------------------------------------------------------

# Metrics for which more is better; for the other timing/failure metrics less is better.
HIGHER_IS_BETTER = ("images_per_min", "images_ok")
NEUTRAL = ("wall_s", "gpu_mem_used_peak_bytes", "torch_peak_reserved_bytes", "worker_peak_rss_bytes")


def sample_key(metric: str) -> str | None:
    """The raw samples behind a median metric, e.g. ``image_s_median`` -> ``image_s``."""
    if metric == "image_s_median":
        return "image_s"
    for med, raw in (("stage_s_median:", "stage_s:"), ("probe_latency_median:", "probe_latency_s:")):
        if metric.startswith(med):
            return raw + metric[len(med):]
    return None


def _direction(metric: str, change: float) -> str:
    if change == 0 or metric in NEUTRAL:
        return "changed"
    better = (change > 0) == (metric in HIGHER_IS_BETTER)
    return "better" if better else "worse"


def compare_runs(a: list[RunSummary], b: list[RunSummary], *, alpha: float = 0.05,
                 min_samples: int = 3) -> dict:
    """Per metric: A, B, the change, and its significance where samples allow a test.

    A median metric backed by raw samples (per-image times, per-probe latencies) is tested on the
    pooled samples of each side; any metric is tested on its per-run values when both sides have at
    least ``min_samples`` runs; otherwise only the change is given.
    """
    from stress.stats import incidence

    names = sorted({k for r in [*a, *b] for k in r.metrics})
    rows = []
    for name in names:
        av = [r.metrics[name] for r in a if r.metrics.get(name) is not None]
        bv = [r.metrics[name] for r in b if r.metrics.get(name) is not None]
        if not av or not bv:
            rows.append({"metric": name, "a": median(av), "b": median(bv), "change": None, "relative": None,
                         "p": None, "basis": "one side only", "n_a": len(av), "n_b": len(bv),
                         "significant": False, "direction": None})
            continue
        key = sample_key(name)
        a_s = [x for r in a for x in r.samples.get(key, [])] if key else []
        b_s = [x for r in b for x in r.samples.get(key, [])] if key else []
        if len(a_s) >= min_samples and len(b_s) >= min_samples:
            va, vb, p, basis, na, nb = median(a_s), median(b_s), mann_whitney(a_s, b_s), "samples", len(a_s), len(b_s)
        elif len(av) >= min_samples and len(bv) >= min_samples:
            va, vb, p, basis, na, nb = median(av), median(bv), mann_whitney(av, bv), "runs", len(av), len(bv)
        else:
            va, vb, p, basis, na, nb = median(av), median(bv), None, "single values", len(av), len(bv)
        change = vb - va
        rows.append({"metric": name, "a": va, "b": vb, "change": change,
                     "relative": (change / va) if va else None, "p": p, "basis": basis, "n_a": na, "n_b": nb,
                     "significant": p is not None and p < alpha,
                     "direction": _direction(name, change) if p is not None and p < alpha else None})
    # Many metrics are tested at once: significance is judged on Benjamini-Hochberg adjusted p-values
    # (false-discovery rate alpha), so twenty noisy metrics do not make one false "worse" by chance.
    for row, q in zip(rows, benjamini_hochberg([r["p"] for r in rows])):
        row["q"] = q
        row["significant"] = q is not None and q < alpha
        row["direction"] = _direction(row["metric"], row["change"]) if row["significant"] else None
    va_ = [r.verdict for r in a]
    vb_ = [r.verdict for r in b]
    env = {}
    for attr in ("scenario", "scenario_sha256", "hostname", "machine_id", "gpu", "driver", "cuda_driver", "kernel",
                 "compositor", "python"):
        sa = sorted({str(getattr(r, attr)) for r in a})
        sb = sorted({str(getattr(r, attr)) for r in b})
        if sa != sb:
            env[attr] = {"a": sa, "b": sb}
    for lib in sorted({k for r in [*a, *b] for k in r.libraries}):
        sa = sorted({str(r.libraries.get(lib)) for r in a})
        sb = sorted({str(r.libraries.get(lib)) for r in b})
        if sa != sb:
            env[f"libraries.{lib}"] = {"a": sa, "b": sb}
    return {
        "alpha": alpha, "correction": "benjamini-hochberg",
        "a": {"runs": [r.run_id for r in a]}, "b": {"runs": [r.run_id for r in b]},
        "verdicts": {"a": {v or "none": va_.count(v) for v in sorted(set(va_), key=str)},
                     "b": {v or "none": vb_.count(v) for v in sorted(set(vb_), key=str)},
                     "differs": sorted(set(va_), key=str) != sorted(set(vb_), key=str)},
        "incidence": {"a": incidence(va_), "b": incidence(vb_)},
        "environment": env,
        "metrics": rows,
        "significant": [r["metric"] for r in rows if r["significant"]],
    }
