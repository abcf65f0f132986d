"""The statistics every judgement and summary uses, defined once: medians and summaries, the
Mann-Whitney U test, Fisher's exact test, the Wilson interval, the incidence of a verdict series, and the
Benjamini-Hochberg correction for many tests at once. Pure functions; scipy is imported lazily."""
from __future__ import annotations

import math
import statistics
import warnings
from typing import Any, Iterable, Literal

Z95 = 1.959963984540054


def finite(v: Any) -> float | None:
    """A finite float, or None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def median(values: Iterable[float]) -> float | None:
    vals = [v for v in values if finite(v) is not None]
    return statistics.median(vals) if vals else None


def rnd(x: Any, nd: int = 4) -> float | None:
    """A float for JSON: rounded, and None for NaN/inf (JSON has no NaN)."""
    if x is None:
        return None
    f = float(x)
    if not math.isfinite(f):
        return None
    if f == int(f) and abs(f) < 2**53:
        return float(int(f))
    return round(f, nd)


def summary(values: list[float]) -> dict:
    """n, min, p50, p95, max, mean of a sample (None for an empty one)."""
    if not values:
        return {"n": 0, "min": None, "p50": None, "p95": None, "max": None, "mean": None}
    import numpy as np

    a = np.asarray(values, dtype=float)
    return {"n": int(a.size), "min": rnd(a.min()), "p50": rnd(np.median(a)), "p95": rnd(np.percentile(a, 95)),
            "max": rnd(a.max()), "mean": rnd(a.mean())}


def mann_whitney(a: list[float], b: list[float],
                 alternative: Literal["two-sided", "greater", "less"] = "two-sided") -> float | None:
    """Mann-Whitney U p-value (``greater``: is ``a`` larger than ``b``?), None when it cannot be
    computed, 1.0 when every value is identical (no evidence of a difference)."""
    if not a or not b:
        return None
    if len(set(a) | set(b)) == 1:
        return 1.0
    from scipy.stats import mannwhitneyu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(mannwhitneyu(a, b, alternative=alternative).pvalue)
    return p if math.isfinite(p) else None


def min_p_value(n1: int, n2: int) -> float:
    """Smallest one-sided p-value the exact Mann-Whitney U test can give with these sizes."""
    return 1.0 / math.comb(n1 + n2, n1) if n1 and n2 else 1.0


def benjamini_hochberg(pvalues: list[float | None]) -> list[float | None]:
    """False-discovery-rate adjusted p-values (Benjamini-Hochberg), in the input order; None stays None.
    A result is significant at level q when its adjusted p-value is below q."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if not idx:
        return out
    from scipy.stats import false_discovery_control

    adj = false_discovery_control([float(pvalues[i]) for i in idx], method="bh")
    for i, q in zip(idx, adj):
        out[i] = float(min(1.0, q))
    return out


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """Two-sided Fisher exact p-value that ``k1/n1`` and ``k2/n2`` come from the same rate (None: no data)."""
    if n1 <= 0 or n2 <= 0:
        return None
    from scipy.stats import fisher_exact as _fisher

    return float(_fisher([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided").pvalue)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95 % by default)."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= k <= n:
        raise ValueError("k must be in 0..n")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exact bounds at the edges (floating point leaves 1e-17 crumbs there).
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def frequency_word(k: int, n: int) -> str:
    """The 'how often' of a driver bug template: never / once / sometimes / always (unknown: n=0)."""
    if n == 0:
        return "unknown"
    if k == 0:
        return "never"
    if k == 1:
        return "once"
    return "always" if k == n else "sometimes"


def incidence(verdicts: Iterable[str | None]) -> dict:
    """How often ``reproduced`` came out among the conclusive verdicts, with a 95 % Wilson interval.

    ``inconclusive`` and ``error`` verdicts say nothing either way and stay out of the denominator.
    """
    vs = list(verdicts)
    k = vs.count("reproduced")
    n = k + vs.count("not-reproduced")
    low, high = wilson_interval(k, n) if n else (None, None)
    return {"reproduced": k, "conclusive": n, "inconclusive": vs.count("inconclusive"),
            "error": vs.count("error"), "rate": (k / n) if n else None,
            "ci95": [low, high] if n else None, "frequency": frequency_word(k, n)}


def describe_incidence(inc: dict) -> str:
    k, n = inc["reproduced"], inc["conclusive"]
    if not n:
        return "no conclusive iteration yet"
    low, high = inc["ci95"]
    return f"{k}/{n} reproduced ({inc['rate']:.0%}, 95% CI {low:.0%}-{high:.0%}): {inc['frequency']}"
