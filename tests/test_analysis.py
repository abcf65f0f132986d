"""The verdict on synthetic probe distributions: statistics, categories, precedence, exit codes."""
from __future__ import annotations

import pytest
from scipy.stats import mannwhitneyu

from stress.analysis import compare_latency, min_p_value, needed_repetitions, verdict
from stress.errors import ExitCode
from stress.probes.config import ProbesConfig

CFG = ProbesConfig(kinds=["screenshot", "decode", "display"])


def ev(phase: str, kind: str, status: str = "ok", latency: float | None = 0.01, rep: int = 0,
       reason: str | None = None, visit: int = 0, **metrics) -> dict:
    if kind == "decode" and status == "ok":
        metrics.setdefault("ref_s_per_mp", latency)
        latency = 0.5  # the decode wall time is not what is compared
    return {"ev": "probe", "t": 0.0, "phase": phase, "visit": visit, "kind": kind, "rep": rep,
            "status": status, "latency_s": latency if status == "ok" else None, "metrics": metrics,
            "reason": reason}


def healthy(phase: str, n: int = 5, lat: dict | None = None, kinds=("screenshot", "decode", "display")) -> list[dict]:
    lat = lat or {}
    out = []
    for kind in kinds:
        for i in range(n):
            out.append(ev(phase, kind, latency=lat.get(kind, [0.010 + 0.0003 * i] * n)[i], rep=i))
    return out


def test_all_healthy_is_not_reproduced():
    v = verdict(healthy("baseline") + healthy("after") + healthy("after-exit"), CFG)
    assert v["verdict"] == "not-reproduced" and v["exit_code"] == ExitCode.OK == 0
    assert v["reasons"] == ["no probe regressed against baseline (screenshot, decode, display round trip "
                            "in after, after-exit; 45 probes)"]
    d = v["details"]["phases"]["after"]["screenshot"]
    assert d["n1"] == 5 and d["n2"] == 5 and d["ratio"] == pytest.approx(1.0)
    assert d["regressed"] is False and d["latency"]["median"] == pytest.approx(0.0106)


def test_large_significant_slowdown_is_reproduced_with_numbers():
    base = [0.011, 0.0121, 0.012, 0.013, 0.0119]
    slow = [0.045, 0.048, 0.050, 0.047, 0.049]
    events = healthy("baseline", lat={"screenshot": base}) + healthy("after", lat={"screenshot": slow})
    v = verdict(events, CFG)
    assert v["verdict"] == "reproduced" and v["exit_code"] == 10
    assert v["reasons"] == ["after: screenshot latency median 48 ms vs 12 ms at baseline (4.0x, p=0.004, n=5/5)"]
    d = v["details"]["phases"]["after"]["screenshot"]
    assert d["p_value"] == pytest.approx(mannwhitneyu(slow, base, alternative="greater").pvalue)
    assert d["p_value"] == pytest.approx(1 / 252)  # exact test, complete separation
    assert d["significant"] and d["slowdown"] and d["regressions"] == ["slowdown"]


def test_large_but_not_significant_slowdown_is_only_a_note():
    base = [0.010, 0.011, 0.012, 0.060, 0.070]
    after = [0.008, 0.020, 0.030, 0.065, 0.090]  # medians 30 vs 12 ms, but overlapping samples
    assert mannwhitneyu(after, base, alternative="greater").pvalue > 0.01
    v = verdict(healthy("baseline", lat={"display": base}) + healthy("after", lat={"display": after}), CFG)
    assert v["verdict"] == "not-reproduced"
    d = v["details"]["phases"]["after"]["display"]
    assert d["ratio"] == pytest.approx(2.5) and d["significant"] is False and d["slowdown"] is False
    assert any("not significant at alpha=0.01" in n for n in v["details"]["notes"])


def test_small_but_significant_slowdown_is_not_a_regression():
    base = [0.0100, 0.0101, 0.0102, 0.0103, 0.0104]
    after = [0.0120, 0.0121, 0.0122, 0.0123, 0.0124]  # every one slower, but only 1.2x
    v = verdict(healthy("baseline", lat={"screenshot": base}) + healthy("after", lat={"screenshot": after}), CFG)
    d = v["details"]["phases"]["after"]["screenshot"]
    assert d["significant"] is True and d["slowdown"] is False
    assert v["verdict"] == "not-reproduced"


def test_too_few_samples_say_so_instead_of_claiming():
    base, slow = [0.010, 0.011, 0.012], [0.040, 0.041, 0.042]
    events = healthy("baseline", 3, lat={"screenshot": base}) + healthy("after", 3, lat={"screenshot": slow})
    v = verdict(events, CFG)
    assert v["verdict"] == "inconclusive" and v["exit_code"] == 11
    (reason,) = v["reasons"]
    assert reason.startswith("after: screenshot latency median 41 ms vs 11 ms at baseline (3.7x, n=3/3)")
    assert "too few to show significance at alpha=0.01; use probes.repetitions >= 5" in reason
    d = v["details"]["phases"]["after"]["screenshot"]
    assert d["p_value"] is None and d["too_few"] is True


def test_minimum_p_value_and_needed_repetitions():
    assert min_p_value(5, 5) == pytest.approx(1 / 252)
    assert min_p_value(3, 3) == pytest.approx(0.05)
    assert needed_repetitions(0.01) == 5 and needed_repetitions(0.05) == 4
    cmp = compare_latency([1.0] * 6, [1.0] * 6, CFG)
    assert cmp["p_value"] == 1.0 and cmp["slowdown"] is False


def test_mismatch_after_is_reproduced_in_the_lead_s_words():
    after = healthy("after", kinds=("screenshot", "decode"))
    after += [ev("after", "display", rep=i, latency=0.01) for i in range(2)]
    after += [ev("after", "display", "fail", rep=2 + i, reason="round trip mismatch", mismatch=True,
                 mismatch_fraction=f, never_visible=False) for i, f in enumerate([0.12, 0.41, 0.3])]
    v = verdict(healthy("baseline") + after, CFG)
    assert v["verdict"] == "reproduced"
    assert v["reasons"] == ["after: display round trip mismatched in 3/5 probes (up to 41% of pixels differ)"]
    d = v["details"]["phases"]["after"]["display"]
    assert d["mismatches"] == 3 and d["max_mismatch_fraction"] == 0.41 and d["regressions"] == ["mismatch"]


def test_black_frames_timeouts_and_crashes_after_the_workload():
    after = healthy("after-exit", kinds=("decode",))
    after += [ev("after-exit", "screenshot", "fail", rep=i, reason="desktop: frame is all black",
                 black_frames=2) for i in range(5)]
    after += [ev("after-exit", "display", "timeout", rep=i, reason="no result within 20 s") for i in range(2)]
    after += [ev("after-exit", "display", "error", rep=2, reason="probe process was killed by SIGSEGV")]
    after += [ev("after-exit", "display", rep=3 + i) for i in range(2)]
    v = verdict(healthy("baseline") + after, CFG)
    assert v["verdict"] == "reproduced"
    assert v["reasons"] == [
        "after-exit: screenshot returned all-black frames in 5/5 probes",
        "after-exit: display round trip timed out in 2/5 probes (limit 20 s)",
        "after-exit: display round trip probe crashed in 1/5 probes (probe process was killed by SIGSEGV)",
    ]


def test_failures_that_also_happened_at_baseline_do_not_count_but_make_it_inconclusive():
    black = [ev(p, "screenshot", "fail", rep=i, reason="desktop: frame is all black", black_frames=1)
             for p in ("baseline", "after") for i in range(5)]
    others = healthy("baseline", kinds=("decode", "display")) + healthy("after", kinds=("decode", "display"))
    v = verdict(black + others, CFG)
    assert v["verdict"] == "inconclusive"
    assert v["reasons"] == ["baseline: screenshot already failed in 5/5 probes before the workload "
                            "(desktop: frame is all black); failures of that sort later prove nothing"]
    # ...but a new sort of failure in the same kind still counts.
    black.append(ev("after", "screenshot", "timeout", rep=5))
    assert verdict(black + others, CFG)["verdict"] == "reproduced"


def test_unsupported_or_unavailable_kind_is_inconclusive():
    events = healthy("baseline", kinds=("decode", "display")) + healthy("after", kinds=("decode", "display"))
    for phase in ("baseline", "after"):
        events.append(ev(phase, "screenshot", "unsupported",
                         reason="no screenshot backend works in this Wayland session (grim is not installed)"))
    v = verdict(events, CFG)
    assert v["verdict"] == "inconclusive" and v["exit_code"] == 11
    assert v["reasons"] == ["screenshot: unsupported (no screenshot backend works in this Wayland session "
                            "(grim is not installed)), so the desktop was not checked this way"]


def test_regression_beats_an_unsupported_kind():
    events = healthy("baseline", kinds=("decode", "display")) + [ev("baseline", "screenshot", "unavailable", reason="no display")]
    events += [ev("after", "decode", "fail", rep=i, reason="1 of 3 images failed: outputs/x.jpg: cannot decode")
               for i in range(5)]
    events += healthy("after", kinds=("display",)) + [ev("after", "screenshot", "unavailable", reason="no display")]
    v = verdict(events, CFG)
    assert v["verdict"] == "reproduced"
    assert v["reasons"] == ["after: saved outputs were corrupted or missing in 5/5 decode probes (1 of 3 images "
                            "failed: outputs/x.jpg: cannot decode)"]


def test_during_visits_are_pooled_and_decode_compares_reference_time():
    base = [0.010, 0.011, 0.012, 0.011, 0.010]
    during = [ev("during", "decode", latency=0.030 + 0.001 * i, rep=i % 3, visit=i // 3) for i in range(6)]
    events = healthy("baseline", lat={"decode": base}) + during + healthy("during", kinds=("screenshot", "display"))
    v = verdict(events, CFG)
    assert v["verdict"] == "reproduced"
    assert v["reasons"][0].startswith("during: decode time median 32 ms/MP vs 11 ms/MP at baseline (3.0x, p=0.0039, n=6/5)")
    assert v["details"]["phases"]["during"]["decode"]["n1"] == 6


def test_workload_failure_precedence():
    clean = healthy("baseline") + healthy("after")
    v = verdict(clean, CFG, workload_failed=True)
    assert v["verdict"] == "error" and v["exit_code"] == ExitCode.WORKLOAD_ERROR == 12
    assert v["details"]["error_source"] == "workload"
    regressed = clean + [ev("after", "display", "timeout", rep=9)]
    v = verdict(regressed, CFG, workload_failed=True)
    assert v["verdict"] == "reproduced" and v["exit_code"] == 10
    assert v["reasons"][-1].startswith("the workload failed")


def test_harness_errors_everywhere_is_an_error():
    events = [ev(p, k, "error", rep=0, reason="harness: OSError: [Errno 28] No space left on device")
              for p in ("baseline", "after") for k in ("screenshot", "decode", "display")]
    v = verdict(events, CFG)
    assert v["verdict"] == "error" and v["details"]["error_source"] == "harness"
    assert v["reasons"][0] == ("probe harness error: every probe failed to run "
                               "(harness: OSError: [Errno 28] No space left on device)")
    assert verdict([{"ev": "run_start"}], CFG)["verdict"] == "error"


def test_disabled_probes_and_missing_later_phases_are_inconclusive():
    v = verdict([], ProbesConfig(enabled=False))
    assert v["verdict"] == "inconclusive" and "disabled" in v["reasons"][0]
    v = verdict(healthy("baseline"), CFG)
    assert v["verdict"] == "inconclusive"
    assert v["reasons"] == ["no probe was measured after the baseline, so nothing could be compared"]


def test_other_events_and_unknown_phases_are_ignored():
    events = [{"ev": "nvml", "gpu": 0}, {"ev": "image", "index": 0}] + healthy("baseline") + healthy("after")
    events.append(ev("warmup", "screenshot", "fail", reason="x"))
    v = verdict(events, CFG)
    assert v["verdict"] == "not-reproduced"
    assert "phase 'warmup' is not one the verdict compares; ignored" in v["details"]["notes"]


def test_stale_and_flat_frames_are_their_own_categories():
    after = healthy("after", kinds=("decode",))
    after += [ev("after", "display", "fail", rep=i, reason="the window stayed on screen after it was closed",
                 stale=True, mismatch=False) for i in range(2)]
    after += [ev("after", "display", rep=2 + i) for i in range(3)]
    after += [ev("after", "screenshot", "fail", rep=0, reason="monitor 1: one flat colour", flat_frames=1)]
    after += [ev("after", "screenshot", rep=1 + i) for i in range(4)]
    v = verdict(healthy("baseline") + after, CFG)
    assert v["reasons"] == ["after: display round trip left the closed window on screen in 2/5 probes (stale frame)",
                            "after: screenshot returned one-colour frames in 1/5 probes"]
    assert v["details"]["phases"]["after"]["display"]["stale"] == 2
    assert v["details"]["phases"]["after"]["screenshot"]["flat_frames"] == 1


def test_a_harness_failure_event_from_the_runner_makes_it_inconclusive():
    # stress.runner records kind="harness" when run_phase itself blew up for a phase.
    events = healthy("baseline") + healthy("during") + [
        {"ev": "probe", "phase": "after", "visit": 0, "kind": "harness", "rep": 0, "status": "error",
         "latency_s": None, "metrics": {}, "reason": "OSError: [Errno 24] Too many open files"}]
    v = verdict(events, CFG)
    assert v["verdict"] == "inconclusive"
    assert v["reasons"] == ["after: the probe harness failed (OSError: [Errno 24] Too many open files), "
                            "so this phase was not fully probed"]
    assert v["details"]["phases"]["after"]["harness"]["errors"] == 1


# --- evidence from the monitors ------------------------------------------------------------------

def _with_clean_probes(extra: list[dict]) -> list[dict]:
    from stress.probes.config import ProbesConfig  # noqa: F401 - same config as the other tests

    evs = [{"ev": "phase", "phase": "workload", "state": "start", "t": 100.0}]
    for phase in ("baseline", "after"):
        for rep in range(5):
            for kind in ("screenshot", "decode", "display"):
                evs.append({"ev": "probe", "phase": phase, "kind": kind, "rep": rep, "status": "ok",
                            "latency_s": 0.010 + rep * 0.0001, "metrics": {"s_per_mp": 0.01, "ref_s_per_mp": 0.01}})
    return evs + extra


def test_display_engine_xid_is_reproduced_and_app_xid_is_a_note():
    from stress.analysis import verdict
    from stress.probes.config import ProbesConfig

    cfg = ProbesConfig()
    clean = verdict(_with_clean_probes([]), cfg)
    assert clean["verdict"] == "not-reproduced", clean["reasons"]
    app = verdict(_with_clean_probes([{"ev": "xid", "t": 120, "gpu": 0, "xid": 13, "category": "application",
                                       "description": "Graphics Engine Exception", "source": "kernel-log"}]), cfg)
    assert app["verdict"] == "not-reproduced" and any("Xid 13" in n for n in app["details"]["notes"])
    evs = _with_clean_probes([
        {"ev": "xid", "t": 120, "gpu": 0, "xid": 56, "category": "display-engine", "description": "Display Engine error",
         "source": "nvml-event"},
        {"ev": "xid", "t": 120.1, "gpu": 0, "xid": 56, "category": "display-engine", "description": "Display Engine error",
         "source": "kernel-log"}])
    v = verdict(evs, cfg)
    assert v["verdict"] == "reproduced" and v["exit_code"] == 10
    assert any("Xid 56 on GPU 0" in r and "2 report(s) from kernel-log, nvml-event" in r for r in v["reasons"])


def test_compositor_exit_after_the_workload_started_is_reproduced():
    from stress.analysis import verdict
    from stress.probes.config import ProbesConfig

    before = verdict(_with_clean_probes([{"ev": "host", "t": 50, "dsgone": [[41, "gnome-shell"]]}]), ProbesConfig())
    assert before["verdict"] == "not-reproduced"       # before the workload: not its doing
    after = verdict(_with_clean_probes([{"ev": "host", "t": 150, "dsgone": [[41, "gnome-shell"]]}]), ProbesConfig())
    assert after["verdict"] == "reproduced"
    assert "the display process gnome-shell (pid 41) exited during the run" in after["reasons"]


def test_lost_gpu_is_reproduced():
    from stress.analysis import verdict
    from stress.probes.config import ProbesConfig

    v = verdict(_with_clean_probes([{"ev": "source", "t": 130, "src": "nvml", "gpu": 0, "status": "unavailable",
                                     "reason": "gpu lost"}]), ProbesConfig())
    assert v["verdict"] == "reproduced" and any("GPU 0 was lost" in r for r in v["reasons"])


# ---------------------------------------------------------------------------------------------
# Incidence: by the verdict's own rule, never claimed without a reproduction


def _with_incidence(events):
    from stress.analysis import incidence

    v = verdict(events, CFG)
    return v, incidence([e for e in events if e.get("ev") == "probe"], v, CFG)


def test_clean_run_claims_no_incidence():
    v, inc = _with_incidence(healthy("baseline") + healthy("during") + healthy("after"))
    assert v["verdict"] == "not-reproduced" and inc is None


def test_incidence_counts_the_visits_that_showed_the_regression():
    events = healthy("baseline")
    for visit in range(4):   # four `during` visits; the screenshot times out in two of them
        phase = healthy("during", kinds=("decode", "display"))
        for e in phase:
            e["visit"] = visit
        bad = visit in (1, 3)
        phase += [ev("during", "screenshot", "timeout" if bad else "ok", rep=i, visit=visit) for i in range(5)]
        events += phase
    events += healthy("after")
    v, inc = _with_incidence(events)
    assert v["verdict"] == "reproduced"
    assert (inc["word"], inc["affected"], inc["visits"]) == ("Sometimes", 2, 5)
    assert inc["why"].startswith("2 of 5 desktop probe visits")


def test_incidence_always_when_every_visit_failed():
    events = healthy("baseline") + [ev("after", "display", "fail", rep=i, mismatch=True, mismatch_fraction=0.9)
                                    for i in range(5)]
    events += [ev("after-exit", "display", "fail", rep=i, mismatch=True, mismatch_fraction=0.9) for i in range(5)]
    v, inc = _with_incidence(events)
    assert v["verdict"] == "reproduced" and (inc["word"], inc["affected"], inc["visits"]) == ("Always", 2, 2)


# ---------------------------------------------------------------------------------------------
# Context: the verdict does not blame a driver for what the machine itself did

_BASE = [0.011, 0.0121, 0.012, 0.013, 0.0119]
_SLOW = [0.045, 0.048, 0.050, 0.047, 0.049]


def _slowdown_events():
    return healthy("baseline", lat={"screenshot": _BASE}) + healthy("after", lat={"screenshot": _SLOW})


def test_a_slowdown_on_a_cpu_workload_is_a_smoke_test_not_a_regression():
    v = verdict(_slowdown_events(), CFG, context={"device": "cpu", "load": {}})
    assert v["verdict"] == "inconclusive"
    assert any("ran on the CPU" in r and "smoke test" in r for r in v["reasons"])
    assert v["details"]["phases"]["after"]["screenshot"]["slowdown_discounted"] == "cpu-workload"
    assert verdict(_slowdown_events(), CFG, context={"device": "cuda", "load": {}})["verdict"] == "reproduced"


def test_a_slowdown_under_a_different_host_load_is_inconclusive():
    v = verdict(_slowdown_events(), CFG, context={"device": "cuda", "load": {"baseline": 0.4, "after": 3.2}})
    assert v["verdict"] == "inconclusive" and any("host load differed" in r for r in v["reasons"])
    same = verdict(_slowdown_events(), CFG, context={"device": "cuda", "load": {"baseline": 1.0, "after": 1.2}})
    assert same["verdict"] == "reproduced"
    from stress.analysis import load_differs

    assert load_differs(3.0, 1.0) and not load_differs(1.4, 1.0) and not load_differs(0.9, 0.1)  # 0.8 < 1.0 apart


def test_a_failure_still_counts_on_a_cpu_workload():
    events = healthy("baseline") + [ev("after", "display", "timeout", rep=i) for i in range(5)]
    assert verdict(events, CFG, context={"device": "cpu", "load": {}})["verdict"] == "reproduced"


def test_never_reproduced_without_a_measured_screen_probe():
    events = [ev(p, k, "unavailable", reason="no display") for p in ("baseline", "after") for k in
              ("screenshot", "display") for _ in range(5)]
    events += healthy("baseline", kinds=("decode",)) + healthy("after", kinds=("decode",))
    events += [{"ev": "phase", "phase": "workload", "state": "start", "t": 0.0},
               {"ev": "xid", "t": 1.0, "gpu": 0, "xid": 56, "category": "display-engine", "source": "kernel-log",
                "description": "display engine error"}]
    v = verdict(events, CFG)
    assert v["verdict"] != "reproduced"
    assert any("no screen probe" in r for r in v["reasons"])
    assert any("not counted" in n and "Xid 56" in n for n in v["details"]["notes"])


def test_reasons_are_never_repeated():
    events = healthy("baseline") + healthy("after")
    events += [{"ev": "phase", "phase": "workload", "state": "start", "t": 0.0}]
    events += [{"ev": "host", "t": 1.0 + i, "dsgone": [[42, "Xorg"]]} for i in range(3)]
    v = verdict(events, CFG)
    assert v["verdict"] == "reproduced" and len(v["reasons"]) == len(set(v["reasons"])) == 1


def test_a_slowdown_after_the_cpu_worker_exited_counts():
    """after-exit has no worker left to compete with the probes: a slowdown there is a regression even
    on a CPU workload (selftest's slow display path is injected there)."""
    events = healthy("baseline", lat={"screenshot": _BASE}) + healthy("after-exit", lat={"screenshot": _SLOW})
    v = verdict(events, CFG, context={"device": "cpu", "load": {}})
    assert v["verdict"] == "reproduced"
    assert v["reasons"][0].startswith("after-exit: screenshot latency median")



def test_the_host_rule_reads_cpu_pressure_per_phase_and_only_a_busier_phase():
    """The host rule (stress.analysis.host_busier): with the per-phase CPU pressure share, a slowdown in a
    phase whose host was busier by at least PRESSURE_MIN_DELTA and PRESSURE_RATIO is inconclusive; a
    smaller rise, or an idler phase, leaves it a regression, whatever the 1-minute load average says."""
    from stress.analysis import PRESSURE_MIN_DELTA, host_busier

    def judged(base, after, load=None):
        ctx = {"device": "cuda", "load": load or {}, "cpu_pressure": {"baseline": base, "after": after}}
        return verdict(_slowdown_events(), CFG, context=ctx)

    busy = judged(0.02, 0.5)
    assert busy["verdict"] == "inconclusive"
    assert busy["details"]["phases"]["after"]["screenshot"]["slowdown_discounted"] == "host-load"
    assert any("host was busier" in r and "50% of the time vs 2% at baseline" in r for r in busy["reasons"])
    assert judged(0.05, 0.05 + PRESSURE_MIN_DELTA)["verdict"] == "inconclusive"           # at the threshold
    assert judged(0.05, 0.05 + PRESSURE_MIN_DELTA - 0.01)["verdict"] == "reproduced"      # under it
    assert judged(0.5, 0.02)["verdict"] == "reproduced"          # an idler phase explains no slowdown
    assert judged(0.30, 0.41)["verdict"] == "reproduced"         # 0.11 more, but not 1.5x
    # pressure measured: the load average is not consulted (it lags the phase by a minute)
    assert judged(0.02, 0.03, load={"baseline": 0.4, "after": 3.2})["verdict"] == "reproduced"
    # an older journal (no pressure): today's load rule, either way
    assert host_busier("after", {"load": {"baseline": 3.2, "after": 0.4}}) is not None
    assert host_busier("after", {"load": {"baseline": 1.0, "after": 1.2}}) is None
    assert host_busier("after", {"cpu_pressure": {"after": 0.9}, "load": {}}) is None   # no baseline share


def test_the_cpu_pressure_share_of_a_phase_comes_from_the_host_samples_in_its_window():
    """stress.record.derived.phase_host: the growth of the PSI total (cps, microseconds) over each phase
    window's samples, per second; a journal without cps has no cpu_pressure (the load rule applies)."""
    from stress.analysis import _context
    from stress.record.fold import RunRecord

    def record(with_cps: bool):
        rec = RunRecord()
        evs = [{"ev": "phase", "t": 100.0, "phase": "baseline", "state": "start"}]
        total = 0
        for i in range(41):                       # one host sample every 0.5 s from t=100 to t=120
            t = 100.0 + 0.5 * i
            total += int(0.5 * 1e6 * (0.02 if t <= 110 else 0.6))    # 2% stalled at baseline, 60% later
            evs.append({"ev": "host", "t": t, "ld": [1.0, 1.0, 1.0], **({"cps": total} if with_cps else {})})
        evs += [{"ev": "phase", "t": 110.0, "phase": "baseline", "state": "end"},
                {"ev": "phase", "t": 110.2, "phase": "workload", "state": "start"},
                {"ev": "phase", "t": 114.0, "phase": "after-exit", "state": "start"},
                {"ev": "phase", "t": 120.0, "phase": "after-exit", "state": "end"}]
        for e in sorted(evs, key=lambda e: e["t"]):
            rec.feed(e)
        return rec

    ctx = _context(record(True))
    assert ctx["cpu_pressure"]["baseline"] == pytest.approx(0.02, abs=0.03)
    assert ctx["cpu_pressure"]["after-exit"] == pytest.approx(0.6, abs=0.01)
    assert ctx["load"] == {"baseline": 1.0, "after-exit": 1.0}
    assert "cpu_pressure" not in _context(record(False))


def test_latencies_timed_from_different_points_are_never_compared():
    # A run resumed across the upgrade that redefined display-wayland's latency: baseline from the
    # mapping commit (about 1 ms on sway), later phases from the connection (about 3 ms).
    cfg = ProbesConfig(kinds=["screenshot", "display-wayland"])
    kinds = ("screenshot", "display-wayland")
    base = healthy("baseline", kinds=kinds, lat={"display-wayland": [0.0010, 0.0011, 0.0009, 0.0010, 0.0012]})
    later = healthy("after", kinds=kinds, lat={"display-wayland": [0.0030, 0.0031, 0.0029, 0.0032, 0.0030]})
    for e in later:
        if e["kind"] == "display-wayland":
            e["metrics"]["latency_from"] = "connect"
    v = verdict(base + later, cfg)
    assert v["verdict"] == "inconclusive", v["reasons"]
    assert v["reasons"] == ["after: Wayland display round trip latencies were timed from connect, baseline's from "
                            "the older definition (the run was resumed after an upgrade that redefined them), so "
                            "its latency was not compared"]
    # The same latencies with one definition on both sides: the 3x slowdown is found (the rule can fail).
    for e in base:
        if e["kind"] == "display-wayland":
            e["metrics"]["latency_from"] = "connect"
    v = verdict(base + later, cfg)
    assert v["verdict"] == "reproduced"
    assert v["reasons"][0].startswith("after: Wayland display round trip latency median 3 ms vs 1 ms at baseline")
