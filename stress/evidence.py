"""Evidence a driver maintainer can act on, attached to a run at one place in the runner.

``journal = attach(journal, scenario, run_dir, resume=...)`` returns the run's journal wrapped so that
every event written also reaches:

- the witness client (``monitors.witness``): the journal line goes to the other machine (stress.witness);
- the capture at the moment of failure (``monitors.capture_at_failure``; stress.failure_capture);

and, when the run starts or resumes, records the kernel's boot id (``evidence_boot``) and, on resume
after a reboot, collects the previous boot's kernel log and pstore entries (stress.previous_boot).
When the verdict is about to be written, a capture in progress is let finish (bounded) so its
``capture`` event comes first; at close, the witness gets its goodbye and the run's driver-event
fingerprint is written to ``evidence/fingerprint.json`` (stress.hw.fingerprint).

Nothing here raises into the run: every part that fails is recorded and the run goes on.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

from stress.record import fold
from stress.journal import Journal


class EvidenceJournal:
    """A :class:`~stress.journal.Journal` that also hands each event to listeners (never blocking)."""

    def __init__(self, inner: Journal, run_dir: Path):
        self.inner = inner
        self.run_dir = Path(run_dir)
        self.listeners: list[Callable[[str, dict], None]] = []
        self.before_verdict: list[Callable[[], None]] = []
        self.on_close: list[Callable[[], None]] = []
        self._closed = False
        self._lock = threading.Lock()

    def append(self, ev: str, /, **fields: Any) -> dict:
        if ev == "verdict":
            for fn in list(self.before_verdict):
                _safely(fn)
        rec = self.inner.append(ev, **fields)
        for fn in list(self.listeners):
            try:
                fn(ev, rec)
            except Exception:
                pass
        return rec

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for fn in list(self.on_close):
            _safely(fn)
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __enter__(self) -> "EvidenceJournal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safely(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        pass


def attach(journal: Journal, sc: Any, rd: Any, *, resume: bool = False) -> EvidenceJournal:
    """Wrap ``journal`` for the run ``rd`` of scenario ``sc`` (see the module docstring)."""
    from stress import previous_boot

    ej = journal if isinstance(journal, EvidenceJournal) else EvidenceJournal(journal, rd.root)
    cfg = sc.monitors
    if resume:
        try:
            got = previous_boot.collect(rd.root)
        except Exception as exc:
            got = {"error": f"{type(exc).__name__}: {exc}"}
        if got is not None:
            ej.append("previous_boot", **got)
    ej.append("evidence_boot", boot_id=previous_boot.current_boot_id(), resumed=resume)
    if cfg.enabled and cfg.capture_at_failure:
        from stress.failure_capture import FailureCapture

        cap = FailureCapture(rd.root, ej.append, journal_path=rd.journal, bug_report=cfg.bug_report_at_failure,
                             bug_report_timeout=cfg.bug_report_timeout)
        ej.listeners.append(cap.observe)
        ej.before_verdict.append(lambda: cap.wait())
    if cfg.witness:
        from stress.witness import WitnessClient

        def status(state: str, reason: str | None) -> None:
            ej.append("witness", status=state, address=cfg.witness, reason=reason)

        client = WitnessClient(cfg.witness, rd.journal, rd.run_id, period=cfg.witness_period, resume=resume,
                               status=status)
        ej.listeners.append(lambda ev, rec: client.notify())
        ej.on_close.append(lambda: client.stop(3.0))
        client.start()
    ej.on_close.append(lambda: write_fingerprint(rd.root))
    return ej


def write_fingerprint(run_dir: Path) -> dict:
    """``evidence/fingerprint.json`` of a run directory, from its journal (also for ``report``)."""
    from stress.hw.fingerprint import fingerprint

    rec = fold(Path(run_dir) / "journal.jsonl")
    fp = fingerprint(sorted([*rec.xids, *rec.kmsg_classified], key=lambda e: e.get("t") or 0.0))
    out = Path(run_dir) / "evidence" / "fingerprint.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(fp, indent=2, default=str))
    tmp.replace(out)
    return fp


def collect_after_the_run(run_dir: Path) -> list[str]:
    """For ``gpu-stress report``: the previous boot's records when the machine rebooted since the run
    (stress.previous_boot) and a current ``evidence/fingerprint.json``; lines to show the user."""
    from stress import previous_boot

    out = []
    try:
        got = previous_boot.collect(Path(run_dir))
    except Exception as exc:
        got = None
        out.append(f"warning: previous boot's records not collected ({type(exc).__name__}: {exc})")
    if got is not None:
        items = got.get("items", {})
        k, p = items.get("kernel_log", {}), items.get("pstore", {})
        out.append("previous boot: kernel log " + (f"saved ({k.get('gpu_lines')} GPU lines)" if k.get("ok")
                                                   else f"not available ({k.get('reason')})")
                   + ", pstore " + (f"{len(p.get('files', []))} entries saved" if p.get("ok")
                                    else f"not available ({p.get('reason')})")
                   + f" -> {Path(run_dir) / 'evidence' / 'previous-boot'}")
    try:
        write_fingerprint(Path(run_dir))
    except Exception as exc:
        out.append(f"warning: evidence/fingerprint.json not written ({type(exc).__name__}: {exc})")
    return out


__all__ = ["EvidenceJournal", "attach", "write_fingerprint", "collect_after_the_run"]
