"""The borderline rule (``stress.analysis.borderline``): the one rule by which the runner repeats a phase
and by which the verdict declines to claim a large ratio; pooled repeats in the verdict."""
from __future__ import annotations

from stress.analysis import borderline, borderline_kinds, compare_latency, verdict
from stress.probes.config import ProbesConfig
from tests.test_analysis import CFG, ev, healthy

BASE = [0.010, 0.011, 0.012, 0.060, 0.070]
OVERLAP = [0.008, 0.020, 0.030, 0.065, 0.090]   # median 30 ms vs 12 ms, not significant (p > 0.01)
SLOW = [0.045, 0.048, 0.050, 0.047, 0.049]


def _base() -> list[dict]:
    return healthy("baseline", lat={"display": [0.011, 0.0121, 0.012, 0.013, 0.0119]})


def test_the_rule_large_and_not_a_significant_slowdown():
    b = [0.011, 0.0121, 0.012, 0.013, 0.0119]
    assert borderline(compare_latency(OVERLAP, BASE, CFG))              # large, p > alpha
    assert not borderline(compare_latency(SLOW, b, CFG))               # large and significant: a slowdown
    assert not borderline(compare_latency([x * 1.2 for x in b], b, CFG))   # small ratio, significant or not
    assert not borderline(compare_latency([], b, CFG))                 # nothing measured
    few = compare_latency(SLOW[:2], b, CFG)                             # large, too few to test
    assert few["too_few"] and borderline(few)
    # the comparison's own fields: borderline is exactly "large and not slowdown"
    for cmp in (compare_latency(OVERLAP, BASE, CFG), few, compare_latency(SLOW, b, CFG)):
        assert borderline(cmp) == (cmp["large"] and not cmp["slowdown"])


def test_borderline_kinds_pools_the_phase_and_skips_settled_kinds():
    events = healthy("baseline", lat={"display": BASE}) + healthy("after", lat={"display": OVERLAP})
    out = borderline_kinds(events, "after", CFG)
    assert list(out) == ["display"] and out["display"]["n1"] == 5 and out["display"]["ratio"] > 1.5
    assert borderline_kinds(events, "baseline", CFG) == {}              # baseline is never repeated
    assert borderline_kinds(events, "after-exit", CFG) == {}            # not probed
    # more samples of the same slow phase settle it: no longer borderline, now a slowdown
    slow_more = [ev("after", "display", latency=0.05 + 0.001 * i, rep=5 + i, repeat=1) for i in range(5)]
    base_tight = _base()
    after_mixed = healthy("after", lat={"display": [0.012, 0.05, 0.051, 0.052, 0.0125]})
    assert "display" in borderline_kinds(base_tight + after_mixed, "after", CFG)
    assert "display" not in borderline_kinds(base_tight + after_mixed + slow_more, "after", CFG)
    # a kind that already failed in a way baseline never did is decided: not repeated
    failed = after_mixed + [ev("after", "display", "timeout", rep=9)]
    assert "display" not in borderline_kinds(base_tight + failed, "after", CFG)


def test_the_verdict_uses_the_repeats_and_says_how_many():
    first = healthy("after", lat={"display": [0.012, 0.05, 0.051, 0.052, 0.0125]})
    v1 = verdict(_base() + first, CFG)
    assert v1["verdict"] == "not-reproduced" and any("not significant" in n for n in v1["details"]["notes"])
    repeat = [dict(ev("after", "display", latency=0.05 + 0.001 * i, rep=5 + i), repeat=1) for i in range(5)]
    v2 = verdict(_base() + first + repeat, CFG)
    d = v2["details"]["phases"]["after"]["display"]
    assert v2["verdict"] == "reproduced" and d["n1"] == 10 and d["repeats"] == 1 and d["slowdown"]
    assert v2["reasons"] == ["after: display round trip latency median 51 ms vs 12 ms at baseline "
                             f"(4.2x, p={d['p_value']:.2g}, n=10/5, 1 repeat(s))"]


def test_too_few_samples_then_repeated_can_reach_significance():
    cfg = ProbesConfig(kinds=["display"], repetitions=3, alpha=0.01)
    base = [ev("baseline", "display", latency=0.010 + 0.001 * i, rep=i) for i in range(3)]
    after = [ev("after", "display", latency=0.05 + 0.001 * i, rep=i) for i in range(3)]
    assert borderline_kinds(base + after, "after", cfg)["display"]["too_few"] is True
    assert verdict(base + after, cfg)["verdict"] == "inconclusive"
    more = [dict(ev("after", "display", latency=0.05 + 0.001 * i, rep=3 + i), repeat=1) for i in range(3)]
    # 6/3 still cannot reach p < 0.01 (smallest p 1/84); a second round (9/3, 1/220) can
    assert borderline_kinds(base + after + more, "after", cfg)
    more2 = [dict(ev("after", "display", latency=0.05 + 0.001 * i, rep=6 + i), repeat=2) for i in range(3)]
    assert borderline_kinds(base + after + more + more2, "after", cfg) == {}
    assert verdict(base + after + more + more2, cfg)["verdict"] == "reproduced"


def test_a_bad_repeat_value_in_a_journal_is_ignored():
    events = _base() + healthy("after") + [dict(ev("after", "display", rep=7), repeat="x")]
    assert verdict(events, CFG)["details"]["phases"]["after"]["display"]["repeats"] == 0
