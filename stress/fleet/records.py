"""What a fleet build leaves behind: the worker packs its soak for upload (:func:`pack`), the master
records the uploaded runs in the shared history (:func:`record_upload`) and, when a worker stops
answering mid-soak, records that (:func:`record_host_stopped`). No Buildbot here: the Buildbot steps
(stress.fleet.steps) call these functions, and so can a script or a test.

The history is written on the master, after the upload, not on the workers: the master is the one
machine that must reach the database (workers behind NAT need only reach the master), the database
password lives only there, and a host that stopped responding can only be recorded by someone else.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from stress.errors import StressError

HOST_STOPPED = "host-stopped-responding"    # the verdict and status of a host that stopped answering
PACK_FORMAT = 1


def _copy_regular(src: Path, dst: Path, *, max_bytes: int | None = None) -> int:
    """Copy the regular files directly in ``src`` (never a link, never a subfolder) into ``dst``."""
    n = 0
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (max_bytes is not None and st.st_size > max_bytes):
            continue
        shutil.copyfile(entry.path, dst / entry.name, follow_symlinks=False)
        n += 1
    return n


def empty_pack(out: Path, *, machine: str | None, why: str) -> dict:
    """A pack with no run (nothing left over to upload), so that the upload and record steps still
    have something to read."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    manifest = {"format": PACK_FORMAT, "machine": machine, "soak_id": None, "status": why, "exit_code": None,
                "runs": [], "packed_at": time.time()}
    (out / "pack.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def pack(state_dir: Path, out: Path, *, machine: str | None = None) -> dict:
    """Gather a finished (or stopped) soak for upload to the master, into ``out``:

    ``soak/`` (soak.json, soak.jsonl, summary.json), ``runs/<run-id>/`` (each finished run's journal,
    run.json, environment.json, resolved scenario: what the history derives its row from) and
    ``reports/<run-id>/`` (report.json, report.html, ticket.md and the bundle). Outputs and screenshots
    stay on the worker. Returns the manifest written to ``out/pack.json``.
    """
    state_dir = Path(state_dir)
    summary_path = state_dir / "summary.json"
    if not summary_path.is_file():
        raise StressError(f"{state_dir}: no soak summary there (did the soak start?)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StressError(f"{summary_path}: unreadable ({exc})") from None
    if out.exists():
        shutil.rmtree(out)
    _copy_regular(state_dir, out / "soak")
    runs = []
    for it in summary.get("iterations") or []:
        run_id = str(it.get("run_id") or "")
        if not run_id or "/" in run_id or run_id.startswith("."):
            continue
        run_dir = (state_dir / str(it.get("run_dir") or "")).resolve()
        if not (run_dir / "journal.jsonl").is_file():
            continue
        _copy_regular(run_dir, out / "runs" / run_id)
        rep = Path(it["report_dir"]) if it.get("report_dir") else None
        has_report = bool(rep and rep.is_dir() and _copy_regular(rep, out / "reports" / run_id))
        runs.append({"run_id": run_id, "iteration": it.get("iteration"), "scenario": it.get("scenario"),
                     "verdict": it.get("verdict"), "report": has_report})
    manifest = {"format": PACK_FORMAT, "machine": machine, "soak_id": summary.get("soak_id"),
                "status": summary.get("status"), "exit_code": summary.get("exit_code"), "runs": runs,
                "packed_at": time.time()}
    (out / "pack.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


@dataclass
class Recorded:
    runs: list[dict] = field(default_factory=list)       # run_id, scenario, verdict
    mismatches: list[str] = field(default_factory=list)  # facts that differ from the fleet's expectations
    problems: list[str] = field(default_factory=list)    # runs that could not be recorded


def record_upload(upload: Path, history: str | Path, *, machine: str, expect: dict | None = None) -> Recorded:
    """Record every run of an uploaded pack in the shared history, under the fleet's machine name
    (idempotent per run id: a pack recorded twice neither loses nor duplicates a run)."""
    from stress.fleet.schema import matches
    from stress.history import query_runs, record_summary, summarize_run

    upload = Path(upload)
    try:
        manifest = json.loads((upload / "pack.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StressError(f"{upload}: no readable pack.json ({exc}); did the worker's pack step run?") from None
    try:
        summary = json.loads((upload / "soak" / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    iterations = {str(it.get("run_id")): it for it in summary.get("iterations") or []}
    out = Recorded()
    for r in manifest.get("runs") or []:
        run_id = str(r.get("run_id"))
        run_dir = upload / "runs" / run_id
        if "/" in run_id or not run_dir.is_dir():
            out.problems.append(f"{run_id}: not in the upload")
            continue
        rep = upload / "reports" / run_id
        it = iterations.get(run_id, {})
        try:
            s = summarize_run(run_dir, rep if rep.is_dir() else None)
            # the row's machine is the fleet's name for it; the real hostname stays in environment.json
            s.hostname = machine
            s.soak_id, s.soak_iteration = summary.get("soak_id"), it.get("iteration")
            record_summary(history, s)
        except StressError as exc:
            out.problems.append(f"{run_id}: not recorded ({exc})")
            continue
        row = next(iter(query_runs(history, {"run": run_id})), None)
        out.runs.append({"run_id": run_id, "scenario": row.scenario if row else r.get("scenario"),
                         "verdict": row.verdict if row else r.get("verdict")})
        if row is not None and expect:
            for key in ("gpu", "driver", "kernel", "compositor"):
                value = getattr(row, key, None)
                # a compositor the run did not see (probes off, a bare X server) is unknown, not different
                if key == "compositor" and value is None:
                    continue
                if expect.get(key) and not matches(expect[key], value):
                    out.mismatches.append(f"{run_id}: {key} is {value!r}, the fleet expects "
                                          f"{expect[key]!r}")
    return out


def record_host_stopped(history: str | Path, *, machine: str, scenario: str | None, build: str,
                        started_at: float | None, last_event_at: float | None, reason: str,
                        last_output: str | None = None, note_dir: Path | None = None) -> str:
    """Record that ``machine`` stopped responding during a soak of ``scenario`` (one row per build,
    idempotent): verdict and status ``host-stopped-responding``, ``ended_at`` the time the master last
    heard from it. With ``note_dir``, the reason and the last output line go to
    ``note_dir/host-stopped.json``, which the row's report path names. Returns the row's run id."""
    from stress.history import RunSummary, record_summary

    run_id = f"{machine}-{build}-{HOST_STOPPED}"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last_event_at)) if last_event_at else "?"
    reasons = [f"host stopped responding: {reason}; last heard from at {when}"]
    if last_output:
        reasons.append(f"last output: {last_output[:300]}")
    s = RunSummary(run_id=run_id, hostname=machine, scenario=scenario, verdict=HOST_STOPPED, status=HOST_STOPPED,
                   reasons=reasons, started_at=started_at, ended_at=last_event_at,
                   wall_s=(last_event_at - started_at) if started_at and last_event_at else None)
    s.metrics = {"last_event_at": float(last_event_at)} if last_event_at else {}
    if note_dir is not None:
        note = Path(note_dir) / "host-stopped.json"
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(json.dumps({"run_id": run_id, "machine": machine, "scenario": scenario, "build": build,
                                    "verdict": HOST_STOPPED, "reasons": reasons, "reason": reason,
                                    "last_output": last_output, "started_at": started_at,
                                    "last_event_at": last_event_at, "recorded_at": time.time()}, indent=2),
                        encoding="utf-8")
        s.report_path = str(note.resolve())
    record_summary(history, s)
    return run_id


class HistoryRef:
    """The shared history's location, password included, that shows itself without the password:
    Buildbot writes its steps' arguments into twistd.log, and the password must not go there."""

    def __init__(self, target: str):
        self.target = target

    def __repr__(self) -> str:
        from stress.history import display

        return f"HistoryRef({display(self.target)!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:  # Buildbot compares configurations on reconfig
        return isinstance(other, HistoryRef) and other.target == self.target

    def __hash__(self) -> int:
        return hash(self.target)


def history_target(url: str, password: str | None, base: Path) -> str:
    """The history as the history module takes it: an SQLite path (relative paths from ``base``,
    ``sqlite:///`` URLs unwrapped) or a database URL with its password filled in."""
    if "://" not in url:
        p = Path(url).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())
    if url.startswith("sqlite:///"):
        return history_target(url[len("sqlite:///"):] or "history.db", None, base)
    if password is None:
        return url
    try:
        from sqlalchemy.engine import make_url
    except ImportError:  # pragma: no cover - SQLAlchemy comes with the 'fleet' extra
        raise StressError("a database URL needs SQLAlchemy: pip install 'gpu-stress[fleet]'") from None
    return make_url(url).set(password=password).render_as_string(hide_password=False)
