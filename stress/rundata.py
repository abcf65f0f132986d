"""``run.json``: the summary of a run, derived from its journal (docs/run-json.md).

Pure apart from reading the run directory; works on a partial journal (a crash, a kill, a power
loss) and says what is missing rather than failing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stress.journal import RunDir, read_journal

RUN_JSON_VERSION = 1


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_run_json(run_dir: str | Path) -> dict:
    rd = RunDir(run_dir)
    contents = read_journal(rd.journal)
    events = contents.events
    images: dict[int, dict] = {}
    probes: list[dict] = []
    workers: list[dict] = []
    missing: list[str] = []
    for ev in events:
        kind = ev.get("ev")
        if kind == "image" and isinstance(ev.get("index"), int):
            rec = {k: v for k, v in ev.items() if k not in ("ev",)}
            rec["finished_at"] = rec.pop("t", None)
            images[ev["index"]] = rec
        elif kind == "probe":
            probes.append({k: ev.get(k) for k in ("phase", "visit", "kind", "rep", "status", "latency_s", "reason")
                           if ev.get(k) is not None} | {"t": ev.get("t")})
        elif kind == "worker_start":
            workers.append({"worker": ev.get("worker"), "pid": ev.get("pid"), "reason": ev.get("reason"),
                            "started_at": ev.get("t")})
        elif kind in ("worker_ready", "worker_exit"):
            for w in workers:
                if w["worker"] == ev.get("worker"):
                    if kind == "worker_ready":
                        w.update(ready_at=ev.get("t"), load_s=ev.get("load_s"), device=ev.get("device"),
                                 dtype=ev.get("dtype"))
                    else:
                        w.update(exited_at=ev.get("t"), returncode=ev.get("returncode"), signal=ev.get("signal"),
                                 exit_reason=ev.get("reason"))
    start = contents.first("run_start")
    end = contents.last("run_end")
    verdict = contents.last("verdict")
    plan = contents.last("plan")
    times = [e["t"] for e in events if isinstance(e.get("t"), (int, float))]
    if end is None:
        last_t = times[-1] if times else None
        missing.append("the journal has no run_end: the run was interrupted, killed or the machine stopped"
                       + (f" after t={last_t}" if last_t else ""))
    if contents.torn_tail:
        missing.append("the last journal line was cut off mid-write")
    if contents.bad_lines:
        missing.append(f"{len(contents.bad_lines)} journal line(s) were not valid JSON")
    if verdict is None:
        missing.append("no verdict was recorded")
    planned = plan.get("images") if plan else None
    if isinstance(planned, int) and len(images) < planned:
        missing.append(f"{planned - len(images)} of {planned} planned images have no record")
    outcomes: dict[str, int] = {}
    for rec in images.values():
        key = str(rec.get("outcome", "unknown"))
        outcomes[key] = outcomes.get(key, 0) + 1
    started = (start or {}).get("t") or (times[0] if times else None)
    ended = (end or {}).get("t") or (times[-1] if times else None)
    if not isinstance(started, (int, float)) or not isinstance(ended, (int, float)):
        started = ended = None
    return {
        "format": RUN_JSON_VERSION,
        "run_id": rd.run_id,
        "status": end.get("status") if end else "incomplete",
        "started_at": started,
        "ended_at": ended,
        "wall_s": round(ended - started, 3) if started and ended else None,
        "verdict": {k: verdict.get(k) for k in ("verdict", "reasons", "exit_code", "details")} if verdict else None,
        "outcomes": outcomes,
        "planned_images": planned,
        "images": [images[i] for i in sorted(images)],
        "workers": workers,
        "probes": probes,
        "scenario": _read_json(rd.scenario),
        "environment": _read_json(rd.environment),
        "missing": missing,
    }
