"""Sampler series for report.json: columns to arrays, min/max downsampling that keeps peaks, gaps in
sampling, and the per-metric summary (baseline, peak, after, after-exit, change). Numbers only: whether
a change matters is ``stress.analysis``'s judgement."""
from __future__ import annotations

import numpy as np

from stress.fields import Field
from stress.record.derived import Windows
from stress.record.fold import Columns
from stress.stats import rnd

TIMELINE_BUCKETS = 500           # per series: at most 2 points (min and max) per bucket


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
    return interval, [{"start_t": rnd(t[i]), "end_t": rnd(t[i + 1]), "s": rnd(dt[i], 1)} for i in sorted(top)]


def _window_median(t: np.ndarray, v: np.ndarray, windows: list[tuple[float, float]]) -> float | None:
    if not windows:
        return None
    mask = np.zeros(t.size, dtype=bool)
    for a, b in windows:
        mask |= (t >= a) & (t <= b)
    sel = v[mask]
    sel = sel[~np.isnan(sel)]
    return rnd(np.median(sel)) if sel.size else None


def _metric_summary(src: str, gpu: int | None, key: str, info: Field, t: np.ndarray, v: np.ndarray,
                    win: Windows, t0: float) -> dict | None:
    ok = ~np.isnan(v)
    n = int(ok.sum())
    if n == 0:
        return None
    vv, tt = v[ok], t[ok]
    if win.baseline is not None:
        baseline = _window_median(tt, vv, [win.baseline])
    else:
        baseline = rnd(np.median(vv[:10]))
    after = _window_median(tt, vv, win.after)
    after_exit = _window_median(tt, vv, win.after_exit)
    last = rnd(vv[-1])
    ipk = int(np.argmax(vv))
    d = {"key": key, "src": src, "gpu": gpu, "label": info.label, "unit": info.unit, "kind": info.kind, "n": n,
         "first": rnd(vv[0]), "baseline": baseline, "peak": rnd(vv[ipk]), "peak_t": rnd(tt[ipk] - t0, 2),
         "min": rnd(vv.min()), "after": after, "after_exit": after_exit, "last": last,
         "delta_after": rnd(after - baseline) if after is not None and baseline is not None else None,
         "delta_after_exit": rnd(after_exit - baseline) if after_exit is not None and baseline is not None else None,
         "delta_last": rnd(last - baseline) if last is not None and baseline is not None else None}
    if info.kind == "counter":
        rises = np.flatnonzero(np.diff(vv) > 0)
        d["increments"] = int(rises.size)
        d["first_increase_t"] = rnd(tt[rises[0] + 1] - t0, 2) if rises.size else None
        d["delta_last"] = rnd(vv[-1] - vv[0])
    return d


def _arrays(cols: Columns) -> tuple[np.ndarray, dict[str, np.ndarray]]:
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
