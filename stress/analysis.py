"""The verdict: did the desktop regress after the workload? Pure: events in, verdict out, no I/O.

Every later phase (``during``, ``after``, ``after-exit``) is compared with ``baseline``, probe kind by
probe kind. A phase regressed when a kind shows a failure of a sort that never happened at baseline
(timeouts, crashes, round-trip mismatches, stale windows, black or one-colour frames, other
failures), or when its latency is both clearly slower (ratio of medians >= ``slowdown_ratio``) and
significantly so (one-sided Mann-Whitney U at ``alpha``). The rules, their precedence and the exit
codes are documented in docs/probes.md.
"""
from __future__ import annotations

import math
import statistics
from typing import Any

from stress.driver_evidence import HARDWARE_XID_CATEGORIES, first_hardware_fault, kernel_log_evidence
from stress.errors import ExitCode
from stress.probes.config import ProbesConfig
from stress.stats import mann_whitney, min_p_value

BASELINE = "baseline"
LATER_PHASES = ("during", "cycle", "after", "after-exit")   # cycle: after a desktop cycle (stress.cycles)
KIND_LABEL = {"screenshot": "screenshot", "decode": "decode", "display": "display round trip",
              "display-wayland": "Wayland display round trip", "viewer": "external viewer"}
MEASURED = ("ok", "fail", "timeout", "error")
NOT_MEASURED = ("unsupported", "unavailable")
# Failure categories, most specific first; a failed probe counts in the first one that matches.
CATEGORIES = ("timeout", "error", "mismatch", "stale", "black", "flat", "fail")


def latency_of(ev: dict) -> float | None:
    """The comparable number of one probe: decode time per megapixel of the fixed reference
    images for ``decode`` (outputs differ between phases), ``latency_s`` for the others."""
    if ev.get("kind") == "decode":
        v = (ev.get("metrics") or {}).get("ref_s_per_mp")
    else:
        v = ev.get("latency_s")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else None


def category_of(ev: dict) -> str | None:
    """Which failure category a probe event falls in (``None`` for ok / not measured)."""
    status = ev.get("status")
    m = ev.get("metrics") or {}
    if status in ("timeout", "error"):
        return status
    if status != "fail":
        return None
    if m.get("mismatch"):
        return "mismatch"
    if m.get("stale"):
        return "stale"
    if m.get("black_frames") or m.get("black"):
        return "black"
    if m.get("flat_frames") or m.get("flat"):
        return "flat"
    return "fail"


def _fmt_latency(v: float, kind: str) -> str:
    unit = "/MP" if kind == "decode" else ""
    if v >= 10:
        return f"{v:.0f} s{unit}"
    if v >= 1:
        return f"{v:.2f} s{unit}"
    ms = v * 1000
    return f"{ms:.0f} ms{unit}" if ms >= 10 else f"{ms:.2g} ms{unit}"


def _summary(evs: list[dict], kind: str) -> dict:
    status: dict[str, int] = {}
    for e in evs:
        status[e.get("status", "error")] = status.get(e.get("status", "error"), 0) + 1
    cats: dict[str, list[dict]] = {c: [] for c in CATEGORIES}
    for e in evs:
        c = category_of(e)
        if c:
            cats[c].append(e)
    fractions = [float((e.get("metrics") or {}).get("mismatch_fraction") or 0) for e in cats["mismatch"]]
    lat = [v for e in evs if e.get("status") == "ok" for v in [latency_of(e)] if v is not None]
    return {
        "probes": len(evs),
        "measured": sum(status.get(s, 0) for s in MEASURED),
        "status": status,
        "failures": status.get("fail", 0),
        "timeouts": len(cats["timeout"]),
        "errors": len(cats["error"]),
        "mismatches": len(cats["mismatch"]),
        "max_mismatch_fraction": max(fractions) if fractions else None,
        "stale": len(cats["stale"]),
        "black_frames": len(cats["black"]),
        "flat_frames": len(cats["flat"]),
        "other_failures": len(cats["fail"]),
        "latency": {"metric": "ref_s_per_mp" if kind == "decode" else "latency_s",
                    "unit": "s/MP" if kind == "decode" else "s", "n": len(lat),
                    "median": statistics.median(lat) if lat else None},
        "_lat": lat, "_cats": cats,
        # what each latency is timed from (metrics.latency_from; None for a kind never redefined)
        "_basis": sorted({str(b) for e in evs if e.get("status") == "ok"
                          for b in [(e.get("metrics") or {}).get("latency_from")] if b is not None}),
    }


def _bases_differ(s: dict, b: dict) -> bool:
    """Whether a phase's latencies and baseline's were timed from different points: a run resumed
    across an upgrade that redefined the kind's latency (display-wayland, 2026-12). Never compared."""
    return bool(s["_lat"] and b["_lat"]) and s["_basis"] != b["_basis"]


def needed_repetitions(alpha: float) -> int:
    """Fewest samples per side (equal sizes) with which the exact test can reach ``p < alpha``."""
    n = 2
    while min_p_value(n, n) >= alpha:
        n += 1
    return n


def compare_latency(current: list[float], baseline: list[float], config: ProbesConfig) -> dict:
    """Ratio of medians and one-sided Mann-Whitney U (is ``current`` slower than ``baseline``?)."""
    n1, n2 = len(current), len(baseline)
    out: dict[str, Any] = {"n1": n1, "n2": n2, "ratio": None, "p_value": None, "significant": None,
                           "slowdown": False, "too_few": False}
    if not n1 or not n2:
        out["note"] = "no latency samples" + (" at baseline" if not n2 else "")
        return out
    m1, m2 = statistics.median(current), statistics.median(baseline)
    out["baseline_median"] = m2
    out["median"] = m1
    if m2 > 0:
        out["ratio"] = m1 / m2
    elif m1 > 0:
        out["note"] = "baseline median is zero; ratio undefined"
    if min_p_value(n1, n2) >= config.alpha:
        out["too_few"] = True
        out["note"] = f"n={n1}/{n2} is too few to reach p < {config.alpha:g}"
    elif len(set(current) | set(baseline)) == 1:
        out["p_value"], out["significant"] = 1.0, False  # all equal: no evidence of a difference
    else:
        p = mann_whitney(current, baseline, "greater")
        out["p_value"], out["significant"] = p, p is not None and p < config.alpha
    big = out["ratio"] is not None and out["ratio"] >= config.slowdown_ratio
    out["slowdown"] = bool(big and out["significant"])
    out["large"] = bool(big)
    return out


def borderline(cmp: dict) -> bool:
    """Whether a latency comparison (:func:`compare_latency`) is borderline: a large ratio (at least
    ``slowdown_ratio``) that is not a significant slowdown, because the test says no or the samples are
    too few to test. The verdict never claims one (inconclusive when too few, a note otherwise); the
    runner repeats such a phase's probes (``probes.repeat_borderline``) so that more samples settle it."""
    return bool(cmp.get("large")) and not cmp.get("slowdown")


def borderline_kinds(probes: list[dict], phase: str, config: ProbesConfig) -> dict[str, dict]:
    """The probe kinds whose ``phase`` (every visit so far, pooled as the verdict pools them) is
    :func:`borderline` against baseline, each with its comparison: what the runner repeats. A kind that
    already shows a sort of failure baseline never had is left out: it regressed whatever its latency."""
    if phase not in LATER_PHASES:
        return {}
    by: dict[tuple[str, str], list[dict]] = {}
    for e in probes:
        if e.get("phase") in (BASELINE, phase) and e.get("kind") in KIND_LABEL:
            by.setdefault((e["phase"], e["kind"]), []).append(e)
    out = {}
    for (ph, kind), evs in by.items():
        if ph != phase or (BASELINE, kind) not in by:
            continue
        s, b = _summary(evs, kind), _summary(by[(BASELINE, kind)], kind)
        if any(s["_cats"][c] and not b["_cats"][c] for c in CATEGORIES) or _bases_differ(s, b):
            continue
        cmp = compare_latency(s["_lat"], b["_lat"], config)
        if borderline(cmp):
            out[kind] = cmp
    return out


def _first_reason(evs: list[dict]) -> str:
    for e in evs:
        if e.get("reason"):
            r = str(e["reason"])
            return r if len(r) <= 160 else r[:157] + "..."
    return "no reason recorded"


def _category_sentence(phase: str, kind: str, cat: str, evs: list[dict], n: int, config: ProbesConfig) -> str:
    label = KIND_LABEL.get(kind, kind)
    k = len(evs)
    if cat == "mismatch":
        fr = max(float((e.get("metrics") or {}).get("mismatch_fraction") or 0) for e in evs)
        if all((e.get("metrics") or {}).get("never_visible") for e in evs):
            return f"{phase}: {label} mismatched in {k}/{n} probes (the window never appeared on screen)"
        return f"{phase}: {label} mismatched in {k}/{n} probes (up to {fr:.0%} of pixels differ)"
    if cat == "stale":
        return f"{phase}: {label} left the closed window on screen in {k}/{n} probes (stale frame)"
    if cat == "black":
        return f"{phase}: {label} returned all-black frames in {k}/{n} probes"
    if cat == "flat":
        return f"{phase}: {label} returned one-colour frames in {k}/{n} probes"
    if cat == "timeout":
        return f"{phase}: {label} timed out in {k}/{n} probes (limit {config.timeout:g} s)"
    if cat == "error":
        return f"{phase}: {label} probe crashed in {k}/{n} probes ({_first_reason(evs)})"
    if kind == "decode":   # a saved output's bytes, pixels or size changed, or it cannot be read or decoded
        return f"{phase}: saved outputs were corrupted or missing in {k}/{n} decode probes ({_first_reason(evs)})"
    return f"{phase}: {label} failed in {k}/{n} probes ({_first_reason(evs)})"


def _latency_sentence(phase: str, kind: str, cmp: dict) -> str:
    what = "decode time" if kind == "decode" else f"{KIND_LABEL.get(kind, kind)} latency"
    head = (f"{phase}: {what} median {_fmt_latency(cmp['median'], kind)} vs "
            f"{_fmt_latency(cmp['baseline_median'], kind)} at baseline ({cmp['ratio']:.1f}x")
    tail = f", {cmp['repeats']} repeat(s)" if cmp.get("repeats") else ""
    if cmp.get("p_value") is not None:
        return f"{head}, p={cmp['p_value']:.2g}, n={cmp['n1']}/{cmp['n2']}{tail})"
    return f"{head}, n={cmp['n1']}/{cmp['n2']}{tail})"


# Xid categories that are the regression itself, not the workload's own fault (stress.hw.xid). Xid 79
# (fallen-off-bus) points at hardware: stress.driver_evidence reports it, never as a driver regression.
DRIVER_XID_CATEGORIES = ("display-engine", "gsp")


def monitor_evidence(events: list[dict]) -> tuple[list[str], list[str]]:
    """What the monitors saw that shows the driver or the display stack failing, from the start of
    the workload on: ``(regressions, notes)``, as sentences.

    - an Xid of the display engine or a GSP timeout;
    - a GPU that NVML reports lost;
    but not after a hardware fault (stress.driver_evidence: the GPU fell off the bus, an uncorrected
    PCIe error): what follows one is its consequence, a note;
    - a display server or compositor process *under test* that exited (the samplers' ``dsgone``:
      the processes behind the probes' display; others with such names are ``ctxgone``, never
      evidence), once per process, with its restart (``dsnew``) when one took its place."""
    t_work = next((e.get("t") for e in events if e.get("ev") == "phase" and e.get("phase") == "workload"
                   and e.get("state") == "start"), None)
    regress: list[str] = []
    notes: list[str] = []
    xids: dict[tuple, dict] = {}
    gone: dict[object, str] = {}
    restarted: dict[str, list] = {}
    hw_t = first_hardware_fault(events)
    after_hw = " (after the hardware fault: counted as its consequence, not a regression)"
    for e in events:
        kind = e.get("ev")
        if kind == "xid" and isinstance(e.get("xid"), int):
            key = (e.get("gpu"), e["xid"], e.get("category"))
            agg = xids.setdefault(key, {"n": 0, "sources": set(), "description": e.get("description"),
                                        "t": e.get("t")})
            agg["n"] += 1
            agg["sources"].add(str(e.get("source")))
        elif kind == "source" and e.get("status") == "unavailable" and "lost" in str(e.get("reason", "")):
            lost = f"GPU {e.get('gpu', '?')} was lost during the run ({e.get('reason')})"
            if hw_t is not None and isinstance(e.get("t"), (int, float)) and e["t"] >= hw_t:
                notes.append(lost + after_hw)
            else:
                regress.append(lost)
        elif kind == "host" and isinstance(e.get("dsgone"), list):
            t = e.get("t")
            if t_work is None or not isinstance(t, (int, float)) or t < t_work:
                continue
            for item in e["dsgone"]:
                if isinstance(item, list) and len(item) in (2, 3) and item[0] not in gone:
                    gone[item[0]] = str(item[1] or "?")
        if kind == "host" and isinstance(e.get("dsnew"), list):
            for item in e["dsnew"]:
                if isinstance(item, list) and len(item) == 3:
                    restarted.setdefault(str(item[1] or "?"), []).append(item[0])
    for pid, name in gone.items():
        again = restarted.get(name)
        tail = f", restarted as pid {again.pop(0)}" if again else ""
        regress.append(f"the display process {name} (pid {pid}) exited during the run{tail}")
    for (gpu, xid, cat), agg in sorted(xids.items(), key=lambda kv: str(kv[0])):
        sentence = (f"Xid {xid} on GPU {gpu if gpu is not None else '?'}: {agg['description'] or cat} "
                    f"({agg['n']} report(s) from {', '.join(sorted(agg['sources']))})")
        if cat in DRIVER_XID_CATEGORIES and hw_t is not None and (agg["t"] or 0) >= hw_t:
            notes.append(sentence + after_hw)
        elif cat not in HARDWARE_XID_CATEGORIES:
            (regress if cat in DRIVER_XID_CATEGORIES else notes).append(sentence)
    return regress, notes


# The host rule: a latency slowdown in a phase whose host was busier than at baseline is inconclusive,
# not claimed (the desktop machine being busier changes probe latency by itself). Measured per phase
# as the share of its time a runnable task waited for a CPU (stress.record.derived.phase_host, from
# /proc/pressure/cpu): a rise of at least PRESSURE_MIN_DELTA *and* by a factor PRESSURE_RATIO. On the
# 2-core machine of docs/validation.md, one CPU-bound process more than the cores took the share from
# about 0.02 to 0.5, one that fit on an idle core left it at 0.02. Journals without that measure (older
# ones, kernels without PSI) fall back to the 1-minute load average: a median that differs from
# baseline's by LOAD_RATIO and LOAD_MIN_DELTA either way, which barely moves within a 10 s phase.
PRESSURE_MIN_DELTA = 0.10
PRESSURE_RATIO = 1.5
LOAD_RATIO = 1.5
LOAD_MIN_DELTA = 1.0
SCREEN_KINDS = ("screenshot", "display")


def load_differs(phase_load: float | None, base_load: float | None) -> bool:
    if phase_load is None or base_load is None:
        return False
    hi, lo = max(phase_load, base_load), min(phase_load, base_load)
    return hi - lo >= LOAD_MIN_DELTA and hi >= LOAD_RATIO * max(lo, 0.1)


def host_busier(phase: str, context: dict | None) -> str | None:
    """Why the host, not the desktop, may explain a slowdown in ``phase`` (the clause of the verdict's
    sentence), or None: the one host rule (see above)."""
    ctx = context or {}
    pressure, loads = ctx.get("cpu_pressure") or {}, ctx.get("load") or {}
    p, b = pressure.get(phase), pressure.get(BASELINE)
    if isinstance(p, (int, float)) and isinstance(b, (int, float)):
        if p - b >= PRESSURE_MIN_DELTA and p >= PRESSURE_RATIO * max(b, 0.01):
            return (f"the host was busier (a task waited for a CPU {p:.0%} of the time vs {b:.0%} at baseline, "
                    "/proc/pressure/cpu)")
        return None
    if load_differs(loads.get(phase), loads.get(BASELINE)):
        return f"the host load differed ({loads[phase]:.1f} vs {loads[BASELINE]:.1f} at baseline, 1-min average)"
    return None


def verdict(events: list[dict], config: ProbesConfig, *, workload_failed: bool = False,
            context: dict | None = None) -> dict:
    """From a run's journal events to ``{"verdict", "reasons", "exit_code", "details"}``.

    ``context`` (from :func:`judge`): ``device`` the workload ran on, ``load`` and ``cpu_pressure`` the
    host per phase (:func:`host_busier`).
    A latency slowdown is a regression only on a GPU workload whose phase ran under a host load like
    baseline's (:func:`host_busier`); on a CPU workload (a smoke test of the set-up: the workload competes with the probes
    for the same cores) before its worker exited (``during``, ``after``; ``after-exit`` has no worker
    left to compete) or under a markedly different load it is inconclusive, with the reason.
    Nothing is ``reproduced`` when no screen probe (screenshot, display round trip) was measured at all.

    Precedence: ``reproduced`` (any later phase regressed; a failed workload is listed too) >
    ``error`` (the workload failed, or no probe could run because of harness errors) >
    ``inconclusive`` (a needed probe kind could not be measured, baseline itself failed, or a large
    slowdown had too few samples to test) > ``not-reproduced``.
    """
    probes = [e for e in events if e.get("ev") == "probe"]
    kinds = list(dict.fromkeys(list(config.kinds) + [e.get("kind") for e in probes if e.get("kind") in KIND_LABEL]))
    by: dict[str, dict[str, list[dict]]] = {}
    for e in probes:
        by.setdefault(e.get("phase", "?"), {}).setdefault(e.get("kind", "?"), []).append(e)
    phases = [p for p in (BASELINE, *LATER_PHASES) if p in by] + [p for p in by if p not in (BASELINE, *LATER_PHASES)]

    details: dict[str, Any] = {"phases": {}, "notes": [], "workload_failed": bool(workload_failed)}
    summaries: dict[str, dict[str, dict]] = {}
    for phase in phases:
        summaries[phase] = {kind: _summary(evs, kind) for kind, evs in by[phase].items()}

    regress: list[str] = []
    unsure: list[str] = []
    base = summaries.get(BASELINE, {})

    # Events of no probe kind (the runner's kind="harness"): the phase's probes did not all run.
    for phase in phases:
        for kind, evs in by[phase].items():
            if kind not in KIND_LABEL and any(e.get("status") in ("error", "timeout", "fail") for e in evs):
                unsure.append(f"{phase}: the probe harness failed ({_first_reason(evs)}), "
                              "so this phase was not fully probed")

    # A desktop cycle that did not happen as asked: the desktop was not checked after it.
    for e in events:
        if e.get("ev") == "cycle" and e.get("status") not in (None, "ok"):
            unsure.append(f"cycle {e.get('index')} ({e.get('do')} {e.get('at')}) {e.get('status')}: "
                          f"{e.get('reason') or 'no reason recorded'}; the desktop was not checked after it")

    # What baseline could not measure, or where it already failed.
    for kind in config.kinds:
        label = KIND_LABEL.get(kind, kind)
        b = base.get(kind)
        if b is None or b["measured"] == 0:
            evs = by.get(BASELINE, {}).get(kind, [])
            why = next(((e.get("status"), e.get("reason")) for e in evs if e.get("status") in NOT_MEASURED), None)
            if why:
                unsure.append(f"{label}: {why[0]} ({why[1] or 'no reason given'}), so the desktop was not "
                              "checked this way")
            elif config.enabled and BASELINE in config.phases:
                unsure.append(f"{label}: no baseline probe was recorded, so later phases cannot be compared")
            continue
        failed = [e for c in CATEGORIES for e in b["_cats"][c]]
        if failed:
            unsure.append(f"baseline: {label} already failed in {len(failed)}/{b['measured']} probes before "
                          f"the workload ({_first_reason(failed)}); failures of that sort later prove nothing")

    later_measured = False
    for phase in phases:
        if phase == BASELINE:
            continue
        if phase not in LATER_PHASES:
            details["notes"].append(f"phase '{phase}' is not one the verdict compares; ignored")
            continue
        for kind, s in summaries[phase].items():
            if kind not in KIND_LABEL:
                continue
            label = KIND_LABEL[kind]
            b = base.get(kind)
            s["regressions"] = []
            if s["measured"] == 0:
                if kind in config.kinds and b is not None and b["measured"]:
                    evs = by[phase][kind]
                    unsure.append(f"{phase}: {label} could not be measured ({_first_reason(evs)})")
                continue
            later_measured = True
            if b is None or b["measured"] == 0:
                continue
            n = s["measured"]
            for cat in CATEGORIES:
                if s["_cats"][cat] and not b["_cats"][cat]:
                    s["regressions"].append(cat)
                    regress.append(_category_sentence(phase, kind, cat, s["_cats"][cat], n, config))
            if _bases_differ(s, b):
                def said(basis: list[str]) -> str:
                    return " and ".join(basis) if basis else "the older definition"
                unsure.append(f"{phase}: {label} latencies were timed from {said(s['_basis'])}, baseline's from "
                              f"{said(b['_basis'])} (the run was resumed after an upgrade that redefined "
                              "them), so its latency was not compared")
                continue
            cmp = compare_latency(s["_lat"], b["_lat"], config)
            cmp["repeats"] = max(r if isinstance(r := e.get("repeat"), int) else 0 for e in by[phase][kind])
            s.update({k: v for k, v in cmp.items() if k not in ("median",)})
            ctx = context or {}
            busier = host_busier(phase, ctx) if cmp["slowdown"] else None
            if cmp["slowdown"] and ctx.get("device") == "cpu" and phase != "after-exit":
                s["slowdown_discounted"] = "cpu-workload"
                unsure.append(f"{_latency_sentence(phase, kind, cmp)}, but the workload ran on the CPU: this is "
                              "a smoke test of the set-up (the workload competes with the probes for the cores), "
                              "not evidence about a GPU driver")
            elif busier:
                s["slowdown_discounted"] = "host-load"
                unsure.append(f"{_latency_sentence(phase, kind, cmp)}, but {busier}: repeat on a quieter machine")
            elif cmp["slowdown"]:
                s["regressions"].append("slowdown")
                regress.append(_latency_sentence(phase, kind, cmp))
            elif borderline(cmp) and cmp["too_few"]:
                unsure.append(f"{_latency_sentence(phase, kind, cmp)}, but {cmp['n1']}/{cmp['n2']} "
                              f"samples are too few to show significance at alpha={config.alpha:g}; "
                              f"use probes.repetitions >= {needed_repetitions(config.alpha)}")
            elif borderline(cmp):
                details["notes"].append(_latency_sentence(phase, kind, cmp).rstrip(")")
                                        + f"), not significant at alpha={config.alpha:g}")
            s["regressed"] = bool(s["regressions"])

    for phase, per_kind in summaries.items():
        details["phases"][phase] = {k: {kk: vv for kk, vv in s.items() if not kk.startswith("_")}
                                    for k, s in per_kind.items()}

    measured = [e for e in probes if e.get("status") in MEASURED]
    harness_error = None
    if config.enabled and config.phases and not probes:
        harness_error = "no probe event was recorded"
    elif measured and all(e.get("status") == "error" for e in measured):
        harness_error = f"every probe failed to run ({_first_reason(measured)})"
    if not config.enabled:
        unsure.insert(0, "probes are disabled in the scenario, so the desktop was not checked")
    elif probes and base and not later_measured and not regress:
        unsure.append("no probe was measured after the baseline, so nothing could be compared")

    hw_regress, hw_notes = monitor_evidence(events)
    klog = kernel_log_evidence(events)          # classified kernel-log errors, hardware faults (issue 13)
    hw_regress += klog["regressions"]
    unsure += klog["unsure"] + klog["hardware"]
    regress.extend(hw_regress)
    details["notes"].extend(hw_notes + klog["notes"])
    details["monitor_evidence"] = hw_regress
    details["kernel_log"] = klog["items"]
    details["hardware_evidence"] = klog["hardware"]
    screen_measured = any(e.get("kind") in SCREEN_KINDS and e.get("status") in MEASURED for e in probes)
    if regress and config.enabled and not screen_measured:
        details["notes"].extend(f"not counted (no screen probe was measured): {r}" for r in regress)
        unsure.append("no screen probe (screenshot, display round trip) could be measured, so the desktop "
                      "was not checked; driver or display-process evidence alone is in the notes")
        regress = []
        details["monitor_evidence"] = []
    regress = list(dict.fromkeys(regress))      # one sentence once
    if context:
        details["context"] = context

    workload_reason = ("the workload failed: images crashed, hung or ran out of memory "
                       "(see the image outcomes)")
    if regress:     # a hardware fault comes first: the maintainer must see it before the regression
        reasons = klog["hardware"] + regress + ([workload_reason] if workload_failed else [])
        v, code = "reproduced", ExitCode.REPRODUCED
    elif workload_failed or harness_error:
        reasons = ([workload_reason] if workload_failed else []) + (
            [f"probe harness error: {harness_error}"] if harness_error else []) + unsure
        details["error_source"] = "workload" if workload_failed else "harness"
        v, code = "error", ExitCode.WORKLOAD_ERROR
    elif unsure:
        reasons = unsure
        v, code = "inconclusive", ExitCode.INCONCLUSIVE
    else:
        compared = sorted({p for p in phases if p in LATER_PHASES}, key=LATER_PHASES.index)
        reasons = [f"no probe regressed against baseline ({', '.join(KIND_LABEL.get(k, k) for k in kinds)} "
                   f"in {', '.join(compared)}; {len(measured)} probes)"]
        v, code = "not-reproduced", ExitCode.OK
    return {"verdict": v, "reasons": reasons, "exit_code": int(code), "details": details}


# ---------------------------------------------------------------------------------------------
# The judge of a run record: the verdict, the incidence, what changed


def judge(record, config: ProbesConfig) -> dict:
    """The verdict of a run's record (``stress.record.RunRecord``), with its incidence in
    ``details["incidence"]`` (None unless reproduced): the one place a run is judged. A run whose
    experimental condition was not read back in effect is ``invalid`` (stress.validity)."""
    from stress.record import derived

    from stress.validity import invalidate, validity

    v = verdict(record.judged_events(), config, workload_failed=derived.counts(record).failed > 0,
                context=_context(record))
    val = validity(record)     # a matrix cell's condition (env, settings) read back in effect?
    if val is not None:
        v["details"]["validity"] = val
        if not val["valid"]:
            v = invalidate(v, val, ExitCode.INCONCLUSIVE)
    v["details"]["incidence"] = incidence(record.probes, v, config)
    return v


def _context(record) -> dict:
    """What the verdict weighs besides the probes: the device the workload ran on, and the host per
    phase (stress.record.derived.phase_host): ``load`` (1-minute load average) and, where the journal
    has it, ``cpu_pressure`` (share of the phase's time a task waited for a CPU)."""
    from stress.record import derived

    devices = {str(w.get("device")) for w in record.workers.values() if w.get("device")}
    device = "cpu" if devices and all(d.startswith("cpu") for d in devices) else ("cuda" if devices else None)
    host = derived.phase_host(record, LATER_PHASES)
    return {"device": device, "load": host["load"], **({"cpu_pressure": host["cpu_pressure"]}
                                                        if host["cpu_pressure"] else {})}


def incidence(probes: list[dict], v: dict, config: ProbesConfig) -> dict | None:
    """How often the desktop showed the regression, by the rule the verdict used: among the probe
    visits after the workload started (each ``during`` visit, ``after``, ``after-exit``), those in which
    a kind that regressed in that phase showed it (a failure of the new category, or a latency at least
    ``slowdown_ratio`` times its baseline median where the phase's slowdown was significant).

    ``None`` unless the verdict is ``reproduced``: a run that did not reproduce claims no incidence.
    The word is the bug template's: Once (one visit, or driver evidence without a failed probe),
    Sometimes, Always (every visit)."""
    if v.get("verdict") != "reproduced":
        return None
    phases = (v.get("details") or {}).get("phases") or {}
    base = phases.get(BASELINE) or {}
    visits: dict[tuple[str, int], list[dict]] = {}
    for e in probes:
        if e.get("phase") in LATER_PHASES and e.get("kind") in KIND_LABEL and e.get("status") in MEASURED:
            visits.setdefault((e["phase"], int(e.get("visit") or 0)), []).append(e)
    affected = 0
    for (phase, _visit), evs in visits.items():
        hit = False
        for kind in {e["kind"] for e in evs}:
            s = (phases.get(phase) or {}).get(kind) or {}
            regs = set(s.get("regressions") or [])
            if not regs:
                continue
            mine = [e for e in evs if e["kind"] == kind]
            if any(category_of(e) in regs for e in mine):
                hit = True
            b = ((base.get(kind) or {}).get("latency") or {}).get("median")
            if "slowdown" in regs and b:
                lat = [x for e in mine if e.get("status") == "ok" for x in [latency_of(e)] if x is not None]
                if lat and statistics.median(lat) >= config.slowdown_ratio * b:
                    hit = True
        affected += hit
    n = len(visits)
    evidence = len((v.get("details") or {}).get("monitor_evidence") or [])
    if affected == 0:
        word = "Once"
    elif affected == n:
        word = "Always" if n > 1 else "Once"
    else:
        word = "Once" if affected == 1 else "Sometimes"
    why = (f"{affected} of {n} desktop probe visits after the workload started showed the regression"
           if n else "no desktop probe visit after the workload started")
    if evidence:
        why += f"; {evidence} driver or display-process event(s)"
    return {"word": word, "affected": affected, "visits": n, "evidence": evidence, "why": why}


def metric_changed(m: dict) -> bool:
    """Whether a monitored metric changed enough to list in "What changed": a counter that rose; memory
    that moved by more than 32 MiB and 5% of its baseline; open files or threads by more than 8 and 10%."""
    delta = m.get("delta_after_exit")
    if delta is None:
        delta = m.get("delta_after") if m.get("delta_after") is not None else m.get("delta_last")
    if delta is None:
        return False
    if m.get("kind") == "counter":
        return delta > 0
    if m.get("unit") == "bytes":
        return abs(delta) > max(32 * 1024 ** 2, 0.05 * abs(m.get("baseline") or 0))
    key = str(m.get("key", ""))
    if key.endswith(".fds") or key.endswith(".threads"):
        return abs(delta) > max(8, 0.1 * abs(m.get("baseline") or 0))
    return False
