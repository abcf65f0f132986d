"""``run.json``: the summary of a run, derived from its record (docs/run-json.md).

Pure apart from reading the run directory; works on a partial journal (a crash, a kill, a power
loss) and says what is missing rather than failing. Its numbers are ``stress.record.derived``'s, the
same the report and the history show.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stress.journal import RunDir
from stress.record import RunRecord, load
from stress.record import derived
from stress.stats import median

RUN_JSON_VERSION = 2     # 2: images/min, image-time median and the counts are stress.record.derived's


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_run_json(run_dir: str | Path, record: RunRecord | None = None) -> dict:
    rd = RunDir(run_dir)
    rec = record if record is not None else load(rd.root)
    images = []
    for idx in sorted(rec.images):
        r = {k: v for k, v in rec.images[idx].items() if k != "ev"}
        r["finished_at"] = r.pop("t", None)
        images.append(r)
    probes = [{k: ev.get(k) for k in ("phase", "visit", "kind", "rep", "repeat", "status", "latency_s", "reason")
               if ev.get(k) is not None} | {"t": ev.get("t")} for ev in rec.probes]
    workers = [{"worker": w.get("worker"), "pid": w.get("pid"), "reason": w.get("reason"),
                "started_at": w.get("started_t"), **({"ready_at": w["ready_t"], "load_s": w.get("load_s"),
                                                       "device": w.get("device"), "dtype": w.get("dtype")}
                                                      if w.get("ready_t") is not None else {}),
                **({"exited_at": w["exit_t"], "returncode": w.get("returncode"), "signal": w.get("signal"),
                    "exit_reason": w.get("exit_reason")} if w.get("exit_t") is not None else {})}
               for _, w in sorted(rec.workers.items(), key=lambda kv: str(kv[0]))]
    missing = derived.missing(rec)
    c = derived.counts(rec)
    per_image = list(derived.image_seconds(rec).values())
    started = (rec.run_start or {}).get("t") or rec.first_t
    ended = (rec.run_end or {}).get("t") or rec.last_t
    verdict = rec.verdict
    return {
        "format": RUN_JSON_VERSION,
        "run_id": rd.run_id,
        "status": rec.run_end.get("status") if rec.run_end else "incomplete",
        "started_at": started,
        "ended_at": ended,
        "wall_s": derived.wall_seconds(rec),
        "verdict": {k: verdict.get(k) for k in ("verdict", "reasons", "exit_code", "details")} if verdict else None,
        "outcomes": c.outcomes,
        "planned_images": c.planned,
        "images_ok": c.ok,
        "images_failed": c.failed,
        "images_skipped": c.skipped,
        "images_unfinished": c.unfinished,
        "images_per_min": derived.images_per_min(rec),
        "image_s_median": median(per_image),
        "images": images,
        "workers": workers,
        "probes": probes,
        "scenario": _read_json(rd.scenario),
        "environment": _read_json(rd.environment),
        "missing": missing,
    }
