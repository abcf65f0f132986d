"""The driver events of a run reduced to a signature, and matched against sequences from public reports.

Pure: journal events in, a dict out. The steps are the run's Xid codes (``xid:N``) and classified
kernel-log lines (the ids of :mod:`stress.hw.kernel_log`'s table), in the order they happened, with
repeats of the same step in a row collapsed into one step and a count. Each Xid step carries NVIDIA's
meaning and recommended action with where it was read and whether it was checked
(:mod:`stress.hw.xid`, stress/hw/xid_catalog.json); each kernel-log step its class and meaning.
:data:`SIGNATURES_FILE` is the editable table of sequences seen in public reports: a known sequence
matches when its steps occur in the run in that order, other steps allowed in between. The longest
matching sequence is the best match; none at all means the run's sequence is ``new``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from stress.hw import kernel_log
from stress.hw.xid import action_info as xid_action_info
from stress.hw.xid import category as xid_category
from stress.hw.xid import description as xid_description

SIGNATURES_FILE = Path(__file__).with_name("signatures.json")


def load_signatures(path: Path = SIGNATURES_FILE) -> list[dict]:
    """The known sequences. Raises ValueError naming the entry and what is wrong with it."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for n, e in enumerate(data.get("signatures", [])):
        where = f"{path}: signatures[{n}]"
        seq = e.get("sequence")
        if not isinstance(seq, list) or not seq or not all(isinstance(s, str) and s for s in seq):
            raise ValueError(f"{where}: sequence must be a non-empty list of steps")
        for key in ("link", "title"):
            if not isinstance(e.get(key), str) or not e[key]:
                raise ValueError(f"{where}: missing {key}")
        for step in seq:
            if not _known_step(step):
                raise ValueError(f"{where}: step {step!r} is neither 'xid:N' nor an id of kernel_patterns.json")
        out.append({"sequence": list(seq), "link": e["link"], "title": e["title"], "driver": e.get("driver")})
    return out


def _known_step(step: str) -> bool:
    if step.startswith("xid:"):
        return step[4:].isdigit()
    return kernel_log.pattern(step) is not None


def _raw_steps(events: Iterable[dict]) -> list[tuple[str, int, dict]]:
    """``(step, weight, event)`` in journal order. An Xid usually arrives twice (NVML event and kernel
    log): when the kernel log gave any Xid, only its Xids are used (they carry the line and pid)."""
    evs = list(events)
    kernel_xids = any(e.get("ev") == "xid" and e.get("source") == "kernel-log" for e in evs)
    out = []
    for e in evs:
        kind = e.get("ev")
        if kind == "xid" and isinstance(e.get("xid"), int):
            if kernel_xids and e.get("source") != "kernel-log":
                continue
            out.append((f"xid:{e['xid']}", 1 + int(e.get("suppressed") or 0), e))
        elif kind == "kmsg" and e.get("cls") and kernel_log.pattern(e["cls"]) is not None:
            out.append((e["cls"], 1, e))
    return out


def _describe(step: str) -> dict[str, Any]:
    if step.startswith("xid:"):
        code = int(step[4:])
        info = xid_action_info(code)
        # the action with where it was read (stress/hw/xid_catalog.json); "unverified" ones say so in the text
        return {"kind": "xid", "xid": code, "category": xid_category(code), "meaning": xid_description(code),
                "action": info.text() if info else None,
                "action_status": info.status if info else None,
                "action_source": info.source if info else None,
                "action_buckets": dict(info.buckets) if info else {},
                "nvidia_note": info.nvidia_note if info else None,
                "desktop_note": info.desktop_note if info else None}
    p = kernel_log.pattern(step)
    assert p is not None
    return {"kind": "kernel-log", "class": p.cls, "driver": p.driver, "severity": p.severity, "meaning": p.meaning}


def _is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(h == n for h in it) for n in needle)


def fingerprint(events: Iterable[dict], signatures: list[dict] | None = None) -> dict:
    """The run's driver-event signature, each step described, and the known sequences it matches.

    ``status``: ``none`` (no driver events), ``matches`` (``best`` is the longest known sequence found
    in the run) or ``new``."""
    known = load_signatures() if signatures is None else signatures
    steps: list[dict] = []
    for step, weight, ev in _raw_steps(events):
        if steps and steps[-1]["step"] == step:
            steps[-1]["count"] += weight
            steps[-1]["last_t"] = ev.get("t")
            continue
        steps.append({"step": step, "count": weight, "first_t": ev.get("t"), "last_t": ev.get("t"),
                      **_describe(step)})
    seq = [s["step"] for s in steps]
    matches = [dict(k, exact=k["sequence"] == seq) for k in known if _is_subsequence(k["sequence"], seq)]
    matches.sort(key=lambda m: (-len(m["sequence"]), not m["exact"]))
    best = matches[0] if matches else None
    xids: dict[int, dict] = {}
    for s in steps:
        if s["kind"] == "xid":
            x = xids.setdefault(s["xid"], {"xid": s["xid"], "meaning": s["meaning"], "action": s["action"],
                                           "action_status": s["action_status"], "action_source": s["action_source"],
                                           "category": s["category"], "count": 0})
            x["count"] += s["count"]
    return {
        "signature": " > ".join(seq),
        "steps": steps,
        "xids": sorted(xids.values(), key=lambda x: x["xid"]),
        "status": "none" if not steps else ("matches" if best else "new"),
        "best": best,
        "matches": matches,
        "summary": summary_line(seq, best),
    }


def summary_line(seq: list[str], best: dict | None) -> str:
    if not seq:
        return "no driver events were recorded"
    if best is None:
        return f"driver-event sequence {' > '.join(seq)}: new (matches no sequence in stress/hw/signatures.json)"
    how = "is the sequence" if best["exact"] else "contains the sequence"
    return f"driver-event sequence {' > '.join(seq)} {how} reported in {best['link']} ({best['title']})"


__all__ = ["SIGNATURES_FILE", "load_signatures", "fingerprint", "summary_line"]
