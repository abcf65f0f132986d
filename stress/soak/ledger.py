"""The soak's ledger (soak.jsonl) replayed into its state, and what an attempt's run directory says
about how it ended (through the one fold of a run, ``stress.record``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stress.record import fold
from stress.journal import RunDir, read_journal
from stress.soak.state import FINISHED_STATUSES, JOURNAL_FILE


@dataclass
class SoakState:
    """The soak journal replayed: what is done, what was interrupted, what was in flight."""

    finished: dict[int, dict] = field(default_factory=dict)        # iteration -> iteration_end event
    interruptions: list[dict] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)         # iteration -> attempts started
    open: dict | None = None                                       # iteration_start with no ending
    last_start: dict[int, dict] = field(default_factory=dict)      # iteration -> its last iteration_start
    thinned: set[str] = field(default_factory=set)
    last_end: dict | None = None
    failures_in_a_row: int = 0
    torn_tail: bool = False

    @property
    def next_iteration(self) -> int:
        return max(self.finished, default=0) + 1

    def run_dirs(self) -> list[str]:
        """Every run directory the soak produced (relative to the state dir), oldest first."""
        seen: list[str] = []
        events = sorted([*self.finished.values(), *self.interruptions], key=lambda e: e.get("t", 0))
        for e in events:
            rd = e.get("run_dir")
            if rd and rd not in seen:
                seen.append(rd)
        return seen


def replay(state_dir: Path) -> SoakState:
    st = SoakState()
    path = state_dir / JOURNAL_FILE
    if not path.exists():
        return st
    contents = read_journal(path)
    st.torn_tail = contents.torn_tail
    for ev in contents.events:
        kind = ev.get("ev")
        if kind == "iteration_start":
            i = ev["iteration"]
            st.attempts[i] = max(st.attempts.get(i, 0), ev.get("attempt", 1))
            st.last_start[i] = ev
            st.open = ev
        elif kind == "iteration_end":
            st.finished.setdefault(ev["iteration"], ev)  # first ending wins: never duplicated
            st.open = None
            bad = ev.get("status") == "load-failed"
            st.failures_in_a_row = st.failures_in_a_row + 1 if bad else 0
        elif kind == "iteration_interrupted":
            st.interruptions.append(ev)
            st.open = None
            if ev.get("harness"):
                st.failures_in_a_row += 1
        elif kind == "thinned":
            st.thinned.add(ev.get("run_dir"))
        elif kind == "soak_end":
            st.last_end = ev
            if ev.get("status") == "harness-errors":
                st.failures_in_a_row = 0  # a restart after a harness stop gets a fresh budget
    return st


def find_run_dir(folder: Path) -> Path | None:
    """The run directory the runner created inside an attempt's folder (newest if several)."""
    if not folder.is_dir():
        return None
    runs = [p for p in folder.iterdir() if p.is_dir() and (p / "journal.jsonl").exists()]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def classify_run(run_dir: Path | None) -> dict:
    """What an attempt's run directory says about how it ended (pure apart from reading it)."""
    if run_dir is None:
        return {"state": "none", "why": "no run directory was created"}
    rec = fold(RunDir(run_dir).journal)
    end, verdict, last_t = rec.run_end, rec.verdict, rec.last_t
    if end and end.get("status") in FINISHED_STATUSES and verdict:
        return {"state": "finished", "status": end["status"], "verdict": verdict, "last_t": last_t}
    if end and end.get("status") == "interrupted":
        return {"state": "interrupted", "status": "interrupted", "why": "the run was interrupted (SIGINT/SIGTERM)",
                "last_t": last_t}
    why = "the run has no run_end: its supervisor was killed, crashed, or the machine stopped"
    if rec.torn_tail:
        why += " (the journal's last line was cut off mid-write)"
    return {"state": "incomplete", "status": "incomplete", "why": why, "last_t": last_t}

