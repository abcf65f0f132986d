"""Version bisection from the history: which version first changed the desktop's behaviour?

Pure analysis (no I/O): history rows (:class:`stress.history.RunSummary`) labelled with a version
(driver, kernel, compositor...) in, a finding out; ``gpu-stress bisect`` (stress/commands/bisect.py)
picks the rows and renders the result. docs/bisect.md explains the method; in short:

- **Versions are ordered as versions** (:func:`version_key`): numeric dotted parts compare as numbers
  (595.44 < 610.57 < 1000.1), a Debian epoch (``2:``) first, pre-releases (``rc1``, ``beta``, ``~``)
  before their release, other suffixes (``-45-generic``, ``+deb12u1``) after it, naturally sorted.
- **Metrics, per run**: the incidence (``reproduced`` among the conclusive verdicts, as
  :func:`stress.stats.incidence` counts them) and, per later probe phase and kind, the run's probe
  latency as a ratio to its own baseline (median of the phase's latencies / median at baseline: the
  verdict's own measure, which cancels a machine that is simply faster or slower across versions).
- **Step detection**: for each metric, every split of the ordered versions into "up to v_j" and "from
  v_j+1 on" is tested (Fisher's exact test on the 2x2 table of reproduced / not, two-sided; a two-sided
  Mann-Whitney U on the per-run latency ratios). The split with the smallest p-value is the candidate
  step: its first version after the split is the *first bad* (or first fixed) one. Because m-1 splits
  were tried, that smallest p-value is Bonferroni-corrected (x (m-1), capped at 1): a single best-split
  test with a correction. Across metrics (incidence and each latency) the corrected p-values are
  Benjamini-Hochberg adjusted (false-discovery rate ``alpha``); a metric whose q < alpha has a step.
- **The finding** is the significant step with the earliest first-bad version (ties: the incidence, then the smallest q), with
  its evidence: the pooled before/after numbers, the last-good and first-bad versions' own numbers,
  p and q.

Only one step per metric is named (the strongest); a history with a regression and a later fix shows
the stronger of the two, and the per-version table shows both.
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from stress.stats import benjamini_hochberg, incidence, mann_whitney, min_p_value

LATER_PROBE_PHASES = ("during", "cycle", "after", "after-exit")
_PRE = re.compile(r"^[-._~+]?(~|dev|pre|alpha|beta|a|b|rc|c)(?=\d|[-._]|$)", re.IGNORECASE)
_EPOCH = re.compile(r"^(\d+):(?=\d)")
_TOKENS = re.compile(r"\d+|[A-Za-z]+")


def version_key(version: str) -> tuple:
    """A sort key that orders version strings as versions, never raising.

    ``595.44 < 610.57 < 1000.1``; ``6.8.0-45-generic < 6.8.0-50-generic < 6.10.0``; ``1.9rc1 < 1.9 <
    1.9-1``; ``2:21.1.7`` after every version with epoch 0. A leading name (``sway version 1.8.1``,
    ``xvfb 2:21.1.7-3``) is skipped; a string with no digit at all sorts after every version, by text."""
    text = str(version).strip()
    m = re.search(r"\d", text)
    if m is None:
        return (1, 0, (), 0, (), text.lower())
    text = text[m.start():]
    epoch = 0
    em = _EPOCH.match(text)
    if em:
        epoch, text = int(em.group(1)), text[em.end():]
    nm = re.match(r"\d+(?:\.\d+)*", text)
    assert nm is not None
    release = tuple(int(p) for p in nm.group(0).split("."))
    while len(release) > 1 and release[-1] == 0:      # 610.0 == 610
        release = release[:-1]
    rest = text[nm.end():]
    rank = 0 if not rest else (-1 if _PRE.match(rest) else 1)
    natural = tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in _TOKENS.findall(rest))
    return (0, epoch, release, rank, natural, text.lower())


def sort_versions(versions: Iterable[str]) -> list[str]:
    return sorted(set(versions), key=version_key)


# ---------------------------------------------------------------------------------------------
# Per-run metrics
# ---------------------------------------------------------------------------------------------

INCIDENCE = "incidence"


def latency_ratios(samples: dict[str, list[float]]) -> dict[str, float]:
    """Per later phase and probe kind: median latency there / median latency at baseline (one run)."""
    out: dict[str, float] = {}
    for key, vals in samples.items():
        if not key.startswith("probe_latency_s:"):
            continue
        phase, _, kind = key[len("probe_latency_s:"):].partition(":")
        if phase not in LATER_PROBE_PHASES or not vals:
            continue
        base = samples.get(f"probe_latency_s:baseline:{kind}") or []
        b = statistics.median(base) if base else None
        if not b or b <= 0:
            continue
        out[f"latency:{phase}:{kind}"] = statistics.median(vals) / b
    return out


@dataclass
class VersionGroup:
    version: str
    runs: list[str] = field(default_factory=list)
    verdicts: list[str | None] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=dict)   # metric -> one ratio per run

    @property
    def incidence(self) -> dict:
        return incidence(self.verdicts)

    def to_json(self) -> dict:
        inc = self.incidence
        return {"version": self.version, "runs": len(self.runs), "run_ids": self.runs,
                "reproduced": inc["reproduced"], "conclusive": inc["conclusive"], "rate": inc["rate"],
                "ci95": inc["ci95"],
                "latency": {k: {"n": len(v), "median": statistics.median(v)} for k, v in sorted(self.latency.items())}}


def group_by_version(rows: Iterable[tuple[str | None, Any]]) -> tuple[list[VersionGroup], int]:
    """``(version, RunSummary)`` pairs -> groups in version order, and how many rows had no version."""
    groups: dict[str, VersionGroup] = {}
    unknown = 0
    for version, run in rows:
        if version is None or not str(version).strip():
            unknown += 1
            continue
        g = groups.setdefault(str(version).strip(), VersionGroup(str(version).strip()))
        g.runs.append(run.run_id)
        g.verdicts.append(run.verdict)
        for k, v in latency_ratios(run.samples or {}).items():
            g.latency.setdefault(k, []).append(v)
    return [groups[v] for v in sort_versions(groups)], unknown


# ---------------------------------------------------------------------------------------------
# Step detection
# ---------------------------------------------------------------------------------------------

def fisher_p(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """Two-sided Fisher exact p for k1/n1 vs k2/n2 (None when a side is empty)."""
    if n1 <= 0 or n2 <= 0:
        return None
    if k1 + k2 == 0 or k1 + k2 == n1 + n2:
        return 1.0
    from scipy.stats import fisher_exact

    p = float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided").pvalue)
    return min(1.0, p) if math.isfinite(p) else None


def _incidence_split(groups: list[VersionGroup], j: int) -> dict | None:
    before = [v for g in groups[:j] for v in g.verdicts]
    after = [v for g in groups[j:] for v in g.verdicts]
    a, b = incidence(before), incidence(after)
    p = fisher_p(a["reproduced"], a["conclusive"], b["reproduced"], b["conclusive"])
    if p is None:
        return None
    worse = (b["rate"] or 0) > (a["rate"] or 0)
    return {"p": p, "before": a, "after": b, "worse": worse,
            "effect": abs((b["rate"] or 0) - (a["rate"] or 0))}


def _latency_split(groups: list[VersionGroup], j: int, metric: str) -> dict | None:
    before = [x for g in groups[:j] for x in g.latency.get(metric, [])]
    after = [x for g in groups[j:] for x in g.latency.get(metric, [])]
    if len(before) < 2 or len(after) < 2:
        return None
    p = mann_whitney(after, before, "two-sided")
    if p is None:
        return None
    mb, ma = statistics.median(before), statistics.median(after)
    return {"p": p, "before": {"n": len(before), "median": mb}, "after": {"n": len(after), "median": ma},
            "worse": ma > mb, "effect": abs(math.log(ma / mb)) if ma > 0 and mb > 0 else 0.0,
            "min_p": 2 * min_p_value(len(before), len(after))}


def _best_split(groups: list[VersionGroup], metric: str) -> dict | None:
    """The split of the ordered versions with the smallest p (ties: the larger effect, then the earlier)."""
    tried = []
    for j in range(1, len(groups)):
        res = _incidence_split(groups, j) if metric == INCIDENCE else _latency_split(groups, j, metric)
        if res is not None:
            tried.append((j, res))
    if not tried:
        return None
    j, best = min(tried, key=lambda jr: (jr[1]["p"], -jr[1]["effect"], jr[0]))
    best = dict(best, split=j, candidates=len(tried), p_corrected=min(1.0, best["p"] * len(tried)))
    return best


def bisect(groups: list[VersionGroup], *, alpha: float = 0.05) -> dict:
    """Find the first version whose incidence or probe latency changed (see the module docstring)."""
    metrics = [INCIDENCE] + sorted({k for g in groups for k in g.latency})
    steps: list[dict] = []
    for metric in metrics:
        best = _best_split(groups, metric) if len(groups) >= 2 else None
        if best is None:
            continue
        j = best["split"]
        last_good, first_bad = groups[j - 1], groups[j]
        step = {"metric": metric, "first_changed": first_bad.version, "last_before": last_good.version,
                "direction": "worse" if best["worse"] else "better", "p": best["p"],
                "p_corrected": best["p_corrected"], "splits_tested": best["candidates"],
                "before": best["before"], "after": best["after"],
                "versions_before": [g.version for g in groups[:j]],
                "versions_after": [g.version for g in groups[j:]]}
        step["first_bad"] = first_bad.version if best["worse"] else None
        step["last_good"] = last_good.version if best["worse"] else None
        if metric == INCIDENCE:
            step["last_before_incidence"] = last_good.incidence
            step["first_changed_incidence"] = first_bad.incidence
        else:
            lb, fb = last_good.latency.get(metric, []), first_bad.latency.get(metric, [])
            step["last_before_median"] = statistics.median(lb) if lb else None
            step["first_changed_median"] = statistics.median(fb) if fb else None
            if best.get("min_p") is not None and best["min_p"] * best["candidates"] >= alpha:
                step["too_few"] = True
        steps.append(step)
    for step, q in zip(steps, benjamini_hochberg([s["p_corrected"] for s in steps])):
        step["q"] = q
        step["significant"] = q is not None and q < alpha
    found = [s for s in steps if s["significant"]]
    order = {g.version: i for i, g in enumerate(groups)}
    found.sort(key=lambda s: (order[s["first_changed"]], s["metric"] != INCIDENCE, s["q"]))
    finding = found[0] if found else None
    return {
        "alpha": alpha,
        "method": "best split per metric (Fisher exact for incidence, Mann-Whitney U for latency ratios), "
                  "Bonferroni over the candidate splits, Benjamini-Hochberg across metrics",
        "versions": [g.to_json() for g in groups],
        "steps": steps,
        "finding": finding,
        "summary": describe(finding, groups, alpha),
    }


def _pct(inc: dict) -> str:
    return f"{inc['reproduced']}/{inc['conclusive']}"


def describe(finding: dict | None, groups: list[VersionGroup], alpha: float) -> str:
    """The one-line answer: ``first bad: 610.57, last good: 595.44; incidence 0/20 -> 7/20, p=...``."""
    if len(groups) < 2:
        return (f"no bisection: the runs cover {len(groups)} version(s); at least two are needed")
    if finding is None:
        return (f"no significant change across {len(groups)} versions ({groups[0].version} .. "
                f"{groups[-1].version}) at alpha={alpha:g}")
    worse = finding["direction"] == "worse"
    head = (f"first bad: {finding['first_changed']}, last good: {finding['last_before']}" if worse else
            f"first better: {finding['first_changed']}, last before: {finding['last_before']}")
    p = f"p={finding['p']:.2g}, corrected p={finding['p_corrected']:.2g} over {finding['splits_tested']} splits, " \
        f"q={finding['q']:.2g}"
    if finding["metric"] == INCIDENCE:
        b, a = finding["before"], finding["after"]
        return (f"{head}; incidence {_pct(b)} -> {_pct(a)} (versions up to {finding['last_before']} vs "
                f"from {finding['first_changed']} on; {finding['last_before']} "
                f"{_pct(finding['last_before_incidence'])}, {finding['first_changed']} "
                f"{_pct(finding['first_changed_incidence'])}), {p}")
    _, phase, kind = finding["metric"].split(":", 2)
    b, a = finding["before"], finding["after"]
    return (f"{head}; {phase} {kind} latency vs baseline {b['median']:.2f}x -> {a['median']:.2f}x "
            f"(median per run, n={b['n']}/{a['n']}), {p}")
