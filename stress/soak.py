"""Soaks: run scenarios again and again (a night, N times), survive anything, remember everything.

Design (docs/soak.md has the user's view):

- Each iteration is one full ``run`` of one scenario, executed by a child process
  (``python -m stress.soak --state DIR --slot K --out FOLDER``) that calls
  :func:`stress.runner.run_scenario`. A child process, not a call in this process, so that a
  supervisor that dies, hangs or leaks (e.g. an NVML call stuck in a broken driver) costs one
  iteration, not the soak; the child is in a session of its own and gets SIGTERM when the soak dies
  (PR_SET_PDEATHSIG), so a killed soak never leaves a run going on behind its back.
- The scenarios are resolved once, when the soak is created, and frozen in ``soak.json``: every
  iteration runs the same experiment even if the YAML file is edited in the meantime.
- ``soak.jsonl`` (written with :class:`stress.journal.Journal`: append-only, fsync'd) is the soak's
  record of truth; ``summary.json`` and the JUnit file are derived from it after every iteration.
- An iteration is *done* once its run has finished (a ``run_end`` other than ``interrupted``).
  Every other ending of an attempt (the soak killed with SIGKILL, a reboot, Ctrl-C, a supervisor
  that died) is recorded as an interruption, and the iteration is run again: by default from scratch
  in a fresh run directory (``--interrupted rerun``: a run cut by a reboot or a restarted worker is no
  longer one long session, which is the very thing under test), or continued with
  ``run --resume`` semantics (``--interrupted resume``). A run that finished but whose soak died
  before recording it is adopted, never redone.
- A lock file (``flock``, inherited by the child) keeps two soaks off one state directory, and makes a
  restarted soak wait for the previous soak's child to finish writing its record.
- Bounded disk: the last ``--keep`` run directories (and the first reproduction) are kept whole; the
  others are thinned to their journal, run.json and logs (``outputs/`` and ``probes/`` deleted; the
  report lives in ``reports/<run-id>/``). Below ``--min-free-disk`` the soak stops cleanly
  (exit 13, SOAK_HARNESS), between iterations or by interrupting the current one.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from stress.paths import default_artifacts, default_reports
from stress.proc import child_env, die_with_parent, signame
from stress.errors import ExitCode, StressError
from stress.events import JOURNAL_FORMAT, LEDGER
from stress.journal import Journal, RunDir, _slug, new_run_id, read_journal, write_json_atomic

STATE_FORMAT = 1
STATE_FILE = "soak.json"
JOURNAL_FILE = "soak.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = "lock"
ITERATIONS_DIR = "iterations"

# Run statuses after which a run has finished (its verdict stands); "interrupted" is not one.
FINISHED_STATUSES = ("finished", "time-limit", "stopped-on-failure", "load-failed")
# Soak end statuses after which the soak continues only if its limits are raised.
TERMINAL = ("completed", "stopped-reproduced")
_SEVERITY = [ExitCode.INTERRUPTED, ExitCode.SOAK_HARNESS, ExitCode.REPRODUCED, ExitCode.WORKLOAD_ERROR,
             ExitCode.INCONCLUSIVE, ExitCode.OK]


# Exit codes of a run that reached a verdict (its child wrote everything it could).
_VERDICT_CODES = (int(ExitCode.OK), int(ExitCode.REPRODUCED), int(ExitCode.INCONCLUSIVE), int(ExitCode.WORKLOAD_ERROR))


class SoakHarnessError(StressError):
    exit_code = ExitCode.SOAK_HARNESS


# ---------------------------------------------------------------------------------------------
# Pure helpers: incidence, sizes
# ---------------------------------------------------------------------------------------------

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95 % by default)."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= k <= n:
        raise ValueError("k must be in 0..n")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exact bounds at the edges (floating point leaves 1e-17 crumbs there).
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def frequency_word(k: int, n: int) -> str:
    """The 'how often' of a driver bug template: never / once / sometimes / always (unknown: n=0)."""
    if n == 0:
        return "unknown"
    if k == 0:
        return "never"
    if k == 1:
        return "once"
    return "always" if k == n else "sometimes"


def incidence(verdicts: Iterable[str | None]) -> dict:
    """How often ``reproduced`` came out among the conclusive verdicts, with a 95 % Wilson interval.

    ``inconclusive`` and ``error`` verdicts say nothing either way and stay out of the denominator.
    """
    vs = list(verdicts)
    k = vs.count("reproduced")
    n = k + vs.count("not-reproduced")
    low, high = wilson_interval(k, n) if n else (None, None)
    return {"reproduced": k, "conclusive": n, "inconclusive": vs.count("inconclusive"),
            "error": vs.count("error"), "rate": (k / n) if n else None,
            "ci95": [low, high] if n else None, "frequency": frequency_word(k, n)}


def describe_incidence(inc: dict) -> str:
    k, n = inc["reproduced"], inc["conclusive"]
    if not n:
        return "no conclusive iteration yet"
    low, high = inc["ci95"]
    return (f"{k}/{n} reproduced ({inc['rate']:.0%}, 95% CI {low:.0%}-{high:.0%}): {inc['frequency']}")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.I)


def parse_size(text: str | int) -> int:
    """``5GiB``, ``500MB``, ``10G`` (binary), ``123`` (bytes) -> bytes."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise StressError(f"{text!r} is not a size like 5GiB, 500MB or 10G")
    num, unit, i, b = m.groups()
    power = "kmgtp".find(unit.lower()) + 1 if unit else 0
    # "MB" (decimal, as disk vendors write it) vs "MiB" / "M" (binary, as df -h prints).
    base = 1000 if (unit and b and not i) else 1024
    return int(float(num) * base ** power)


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def free_bytes(path: str | Path) -> int:
    """Free space on the file system holding ``path``.

    ``STRESS_FAKE_FREE_BYTES`` overrides the reading for tests: a number of bytes, or ``@FILE`` to
    read the number from FILE at every call (so a test can make the disk "fill up" mid-run).
    """
    fake = os.environ.get("STRESS_FAKE_FREE_BYTES")
    if fake:
        try:
            return int((Path(fake[1:]).read_text() if fake.startswith("@") else fake).strip())
        except (OSError, ValueError):
            raise SoakHarnessError(f"STRESS_FAKE_FREE_BYTES={fake!r} is not a number or @FILE") from None
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def boot_id() -> str | None:
    """The kernel's id of this boot: it changes with every reboot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _severity(codes: Iterable[int]) -> int:
    codes = [c for c in codes if c is not None]
    known = {int(c) for c in _SEVERITY}
    for code in _SEVERITY:
        if int(code) in codes:
            return int(code)
    return next((c for c in codes if c not in known), int(ExitCode.OK))


# ---------------------------------------------------------------------------------------------
# The state directory
# ---------------------------------------------------------------------------------------------

def default_state_dir(scenarios: list[dict], root: Path | None = None) -> Path:
    names = []
    for s in scenarios:
        base = s["name"].split("[", 1)[0]
        if base not in names:
            names.append(base)
    label = names[0] + (f"+{len(names) - 1}" if len(names) > 1 else "")
    return (root or default_artifacts()) / f"soak-{_slug(label)}"


def scenario_entries(files: list[Path]) -> list[dict]:
    """Load every scenario file (matrix expanded) into the frozen entries of ``soak.json``."""
    from stress.scenario import load_scenarios

    out = []
    for f in files:
        for k, sc in enumerate(load_scenarios(f)):
            resolved = sc.model_dump(mode="json")
            out.append({"name": sc.name, "source": str(Path(f).resolve()), "index": k,
                        "sha256": hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest(),
                        "resolved": resolved})
    return out


# Options the command line may change when a soak is continued (recorded as a `config` event).
MUTABLE = ("iterations", "duration_s", "stop_on", "keep", "min_free_bytes", "junit", "history", "reports",
           "interrupted", "max_failures", "iteration_timeout_s", "report_options")


def read_config(state_dir: Path) -> dict:
    path = state_dir / STATE_FILE
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StressError(f"{state_dir}: not a soak state directory (no {STATE_FILE})") from None
    except (OSError, ValueError) as exc:
        raise SoakHarnessError(f"{path}: the soak's state cannot be read ({exc}); "
                               "start a new soak with another --state") from None
    if not isinstance(cfg, dict) or cfg.get("format") != STATE_FORMAT or not cfg.get("scenarios"):
        raise SoakHarnessError(f"{path}: not a soak state file this gpu-stress understands "
                               f"(format {cfg.get('format') if isinstance(cfg, dict) else '?'})")
    return cfg


def prepare_state(state_dir: Path | None, files: list[Path] | None, options: dict[str, Any]) -> tuple[Path, dict, dict]:
    """Create a soak's state directory, or check that a rerun names the same soak and apply the
    options it changes. Returns (state_dir, config, changes)."""
    entries = scenario_entries(files) if files else None
    if state_dir is None:
        if entries is None:
            raise StressError("give scenario files, or --resume STATE_DIR")
        state_dir = default_state_dir(entries)
    state_dir = Path(state_dir)
    changes: dict[str, list] = {}
    if (state_dir / STATE_FILE).exists():
        cfg = read_config(state_dir)
        if entries is not None:
            have = [(e["source"], e["name"]) for e in cfg["scenarios"]]
            want = [(e["source"], e["name"]) for e in entries]
            if have != want:
                raise StressError(f"{state_dir} holds a soak of {', '.join(n for _, n in have)}; this command names "
                                  f"{', '.join(n for _, n in want)}: use another --state, or --resume {state_dir}")
            edited = [e["name"] for e, old in zip(entries, cfg["scenarios"]) if e["sha256"] != old["sha256"]]
            if edited:
                changes["scenario_edited"] = [edited, "the soak keeps running the version it started with"]
        for key in MUTABLE:
            if options.get(key) is not None and options[key] != cfg.get(key):
                changes[key] = [cfg.get(key), options[key]]
                cfg[key] = options[key]
        if "duration_s" in changes:
            cfg["deadline"] = cfg["created_at"] + cfg["duration_s"] if cfg["duration_s"] else None
        if changes:
            write_json_atomic(state_dir / STATE_FILE, cfg)
        return state_dir, cfg, changes
    if entries is None:
        raise StressError(f"{state_dir}: no soak there to resume (no {STATE_FILE})")
    if not options.get("iterations") and not options.get("duration_s"):
        raise StressError("say how long to soak: --iterations N and/or --duration 8h")
    now = time.time()
    cfg = {
        "format": STATE_FORMAT,
        "soak_id": new_run_id("soak-" + entries[0]["name"].split("[", 1)[0], now),
        "created_at": now,
        "scenarios": entries,
        "reports": str(Path(options.get("reports") or default_reports()).resolve()),
        "iterations": options.get("iterations"),
        "duration_s": options.get("duration_s"),
        "deadline": now + options["duration_s"] if options.get("duration_s") else None,
        "stop_on": options.get("stop_on") or "reproduced",
        "keep": 5 if options.get("keep") is None else options["keep"],
        "min_free_bytes": parse_size("5GiB") if options.get("min_free_bytes") is None else options["min_free_bytes"],
        "junit": options.get("junit"),
        "history": options.get("history") or str((Path(options.get("reports") or default_reports()) / "history.db").resolve()),
        "interrupted": options.get("interrupted") or "rerun",
        "max_failures": options.get("max_failures") or 3,
        "iteration_timeout_s": options.get("iteration_timeout_s"),
        "report_options": options.get("report_options") or {},
    }
    for key in ("junit",):
        if cfg[key]:
            cfg[key] = str(Path(cfg[key]).resolve())
    state_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state_dir / STATE_FILE, cfg)
    return state_dir, cfg, changes


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
    contents = read_journal(RunDir(run_dir).journal)
    end = contents.last("run_end")
    verdict = contents.last("verdict")
    last_t = contents.events[-1].get("t") if contents.events else None
    if end and end.get("status") in FINISHED_STATUSES and verdict:
        return {"state": "finished", "status": end["status"], "verdict": verdict, "last_t": last_t}
    if end and end.get("status") == "interrupted":
        return {"state": "interrupted", "status": "interrupted", "why": "the run was interrupted (SIGINT/SIGTERM)",
                "last_t": last_t}
    why = "the run has no run_end: its supervisor was killed, crashed, or the machine stopped"
    if contents.torn_tail:
        why += " (the journal's last line was cut off mid-write)"
    return {"state": "incomplete", "status": "incomplete", "why": why, "last_t": last_t}


# ---------------------------------------------------------------------------------------------
# The soak loop
# ---------------------------------------------------------------------------------------------

@dataclass
class SoakResult:
    state_dir: Path
    status: str
    exit_code: int
    message: str
    summary: dict


class Soak:
    """Runs (or continues) the soak kept in ``state_dir``. One per process."""

    def __init__(self, state_dir: Path, *, stream: TextIO | None = sys.stderr,
                 free_bytes_fn: Callable[[Path], int] = free_bytes,
                 boot_id_fn: Callable[[], str | None] = boot_id,
                 python: str = sys.executable, poll_s: float = 0.5, lock_wait_s: float = 120.0,
                 term_grace_s: float = 120.0, changes: dict | None = None):
        self.state_dir = Path(state_dir)
        self.changes = changes or {}
        self.stream = stream
        self.free_bytes_fn = free_bytes_fn
        self.boot_id_fn = boot_id_fn
        self.python = python
        self.poll_s = poll_s
        self.lock_wait_s = lock_wait_s
        self.term_grace_s = term_grace_s
        self.cfg = read_config(self.state_dir)
        self.journal: Journal | None = None
        self.lock_fd = -1
        self.stop_signal: str | None = None
        self._force = False
        self._disk_stop: str | None = None
        self.warnings: list[str] = []

    # ---- output ----
    def note(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(f"soak: {text}\n")
            self.stream.flush()

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        if self.journal:
            self.journal.append("warning", message=text)
        if self.stream is not None:
            self.stream.write(f"warning: {text}\n")
            self.stream.flush()

    def rel(self, p: Path) -> str:
        try:
            return str(Path(p).resolve().relative_to(self.state_dir.resolve()))
        except ValueError:
            return str(Path(p).resolve())

    def abs(self, p: str) -> Path:
        return (self.state_dir / p) if not Path(p).is_absolute() else Path(p)

    # ---- locking ----
    def _lock(self) -> None:
        path = self.state_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                try:
                    owner = int(os.pread(fd, 32, 0).decode().strip() or 0)
                except ValueError:
                    owner = 0
                if owner and owner != os.getpid() and _pid_alive(owner):
                    os.close(fd)
                    raise SoakHarnessError(f"another soak (pid {owner}) is running on {self.state_dir}; "
                                           "stop it first or use another --state")
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise SoakHarnessError(f"{path} is still locked after {self.lock_wait_s:.0f}s by a run the "
                                           "previous soak started; is it hung? (see `fuser` on that file)")
                if not told:
                    self.note("the previous soak's run is still writing its record; waiting for it")
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.lock_fd = fd

    # ---- signals ----
    def _on_signal(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        name = signal.Signals(signum).name
        if self.stop_signal is None:
            self.stop_signal = name
            self.note(f"{name}: stopping after the current run has recorded its state")
        else:
            self.note(f"{name} again: killing the current run")
            self._force = True

    # ---- main ----
    def run(self) -> SoakResult:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        prev = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)} \
            if threading.current_thread() is threading.main_thread() else {}
        for s in prev:
            signal.signal(s, self._on_signal)
        try:
            return self._run()
        finally:
            for s, h in prev.items():
                signal.signal(s, h)
            if self.journal:
                self.journal.close()
            if self.lock_fd >= 0:
                os.close(self.lock_fd)
                self.lock_fd = -1

    def _run(self) -> SoakResult:
        st = replay(self.state_dir)
        resumed = bool(st.attempts) or st.last_end is not None
        _end_torn_line(self.state_dir / JOURNAL_FILE)
        self.journal = Journal(self.state_dir / JOURNAL_FILE, vocabulary=LEDGER)
        self.journal.append("soak_start", format=JOURNAL_FORMAT, soak_id=self.cfg["soak_id"], pid=os.getpid(), boot_id=self.boot_id_fn(),
                            resumed=resumed, argv=sys.argv, previous_end=st.last_end.get("status") if st.last_end else None)
        if self.changes:
            self.journal.append("config", changes=self.changes)
        if st.open is not None:
            self._recover(st.open)
            st = replay(self.state_dir)
        self._retain(st)
        self._write_derived(replay(self.state_dir), status="running")

        while True:
            st = replay(self.state_dir)
            stop = self._should_stop(st)
            if stop:
                status, message = stop
                break
            self._iteration(st)
        return self._finish(status, message)

    def _should_stop(self, st: SoakState) -> tuple[str, str] | None:
        cfg = self.cfg
        if self.stop_signal:
            return "interrupted", f"stopped by {self.stop_signal}"
        if self._disk_stop:
            return "disk-floor", self._disk_stop
        if cfg["stop_on"] == "reproduced":
            rep = next((e for i, e in sorted(st.finished.items()) if e.get("verdict") == "reproduced"), None)
            if rep:
                return "stopped-reproduced", f"iteration {rep['iteration']} reproduced the regression ({rep['run_id']})"
        if cfg.get("iterations") is not None and len(st.finished) >= cfg["iterations"]:
            return "completed", f"{len(st.finished)} of {cfg['iterations']} iterations done"
        if cfg.get("deadline") and time.time() >= cfg["deadline"]:
            end = time.strftime("%Y-%m-%d %H:%M", time.localtime(cfg["deadline"]))
            return "completed", f"the soak's time is up (--duration ended at {end}); {len(st.finished)} iterations done"
        if st.failures_in_a_row >= cfg["max_failures"]:
            return "harness-errors", (f"{st.failures_in_a_row} attempts in a row could not run a scenario "
                                      f"(see {self.rel(self.state_dir / SUMMARY_FILE)} and the runs' logs)")
        floor = cfg["min_free_bytes"]
        if floor:
            low = self._low_disk()
            if low:
                return "disk-floor", low
        return None

    def _low_disk(self) -> str | None:
        floor = self.cfg["min_free_bytes"]
        for path in (self.state_dir, Path(self.cfg["reports"])):
            free = self.free_bytes_fn(path)
            if free < floor:
                return (f"free disk space under {path} is {format_size(free)}, below the floor of "
                        f"{format_size(floor)} (--min-free-disk); free some space and rerun to continue")
        return None

    # ---- one iteration ----
    def _iteration(self, st: SoakState) -> None:
        cfg = self.cfg
        i = st.next_iteration
        attempt = st.attempts.get(i, 0) + 1
        slot = (i - 1) % len(cfg["scenarios"])
        entry = cfg["scenarios"][slot]
        resume_run: Path | None = None
        folder = self.state_dir / ITERATIONS_DIR / f"{i:04d}-{attempt}"
        # A folder left by an attempt whose start was never recorded (power loss mid-write): skip it.
        while folder.exists() and any(folder.iterdir()):
            attempt += 1
            folder = self.state_dir / ITERATIONS_DIR / f"{i:04d}-{attempt}"
        if cfg["interrupted"] == "resume" and attempt > 1:
            prev = st.last_start.get(i)
            prev_run = find_run_dir(self.abs(prev["folder"])) if prev else None
            if prev_run is not None and RunDir(prev_run).scenario.exists():
                resume_run, folder = prev_run, prev_run.parent
                _end_torn_line(RunDir(prev_run).journal)
        folder.mkdir(parents=True, exist_ok=True)
        total = f"/{cfg['iterations']}" if cfg.get("iterations") else ""
        left = ""
        if cfg.get("deadline"):
            left = f", {max(0, cfg['deadline'] - time.time()) / 3600:.1f}h left"
        self.note(f"iteration {i}{total} ({entry['name']}), attempt {attempt}"
                  + (f", resuming {resume_run.name}" if resume_run else "") + left)
        start = self.journal.append("iteration_start", iteration=i, attempt=attempt, scenario=entry["name"],
                                    slot=slot, folder=self.rel(folder), boot_id=self.boot_id_fn(),
                                    resume_run=self.rel(resume_run) if resume_run else None)
        cmd = [self.python, "-m", "stress.soak", "--state", str(self.state_dir.resolve()), "--slot", str(slot),
               "--out", str(folder.resolve()), "--reports", cfg["reports"]]
        if resume_run:
            cmd += ["--resume", str(resume_run.resolve())]
        rc, stop_reason = self._run_child(cmd, folder / "soak-iteration.log")
        self._conclude(start, rc, stop_reason)
        self._retain(replay(self.state_dir))
        self._write_derived(replay(self.state_dir), status="running")

    def _run_child(self, cmd: list[str], log_path: Path) -> tuple[int | None, str | None]:
        env = child_env()
        with open(log_path, "ab") as log:
            offset = log.tell()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, pass_fds=(self.lock_fd,))
        done = threading.Event()
        tail = threading.Thread(target=self._tail, args=(log_path, offset, done), daemon=True)
        tail.start()
        t0 = time.monotonic()
        timeout = self.cfg.get("iteration_timeout_s")
        reason: str | None = None
        termed_at: float | None = None
        try:
            while True:
                try:
                    rc = proc.wait(timeout=self.poll_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if reason is None:
                    if self.stop_signal:
                        reason = f"the soak was stopped ({self.stop_signal})"
                    elif self.cfg["min_free_bytes"] and (low := self._low_disk()):
                        reason, self._disk_stop = "the disk reached the free-space floor", low
                        self.warn(low)
                    elif timeout and time.monotonic() - t0 > timeout:
                        reason = f"the run took longer than --iteration-timeout ({timeout:.0f}s)"
                        self.warn(reason + "; stopping it")
                    if reason is not None:
                        termed_at = time.monotonic()
                        self._signal_child(proc, signal.SIGTERM)
                elif self._force or (termed_at and time.monotonic() - termed_at > self.term_grace_s):
                    self._signal_child(proc, signal.SIGKILL)
                    termed_at = float("inf")
        finally:
            done.set()
            tail.join(timeout=5)
        return rc, reason

    @staticmethod
    def _signal_child(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _tail(self, path: Path, offset: int, done: threading.Event) -> None:
        """Copy the child's output to our stream as it comes (the log file is the durable copy)."""
        if self.stream is None:
            return
        with open(path, "rb") as fh:
            fh.seek(offset)
            while True:
                chunk = fh.read(65536)
                if chunk:
                    self.stream.write(chunk.decode("utf-8", "replace"))
                    self.stream.flush()
                elif done.is_set():
                    return
                else:
                    time.sleep(0.1)

    def _conclude(self, start: dict, rc: int | None, stop_reason: str | None) -> None:
        """Record how an attempt ended, from what its run directory says (not from its exit code)."""
        folder = self.abs(start["folder"])
        run_dir = find_run_dir(folder) if not start.get("resume_run") else self.abs(start["resume_run"])
        c = classify_run(run_dir)
        if c["state"] == "finished":
            # The child writes the report; redo it here only if the child did not get that far.
            self._record_finished(start, run_dir, c, adopted=False, retry_report=rc not in _VERDICT_CODES)
            return
        why = c["why"]
        if rc is not None and c["state"] != "interrupted":
            how = f"signal {_signame(-rc)}" if rc < 0 else f"exit status {rc}"
            why = f"the run's supervisor ended with {how}: {why}"
            tail = _log_tail(folder / "soak-iteration.log")
            if tail:
                why += f"; last output: {tail}"
        # A harness failure is one the soak did not cause: it counts towards --max-failures.
        self._record_interrupted(start, run_dir, reason=stop_reason or why, cause=why,
                                 harness=stop_reason is None, rebooted=False)

    def _record_finished(self, start: dict, run_dir: Path, c: dict, *, adopted: bool,
                         retry_report: bool = True) -> None:
        from stress.rundata import build_run_json

        rd = RunDir(run_dir)
        if not rd.run_json.exists():
            write_json_atomic(rd.run_json, build_run_json(rd.root))
        report_dir = Path(self.cfg["reports"]) / rd.run_id
        if retry_report and not (report_dir / "report.json").exists():
            self._write_report(rd.root, report_dir)
        v = c["verdict"]
        contents = read_journal(rd.journal)
        first, end = contents.first("run_start") or {}, contents.last("run_end") or {}
        ev = self.journal.append(
            "iteration_end", iteration=start["iteration"], attempt=start["attempt"], scenario=start["scenario"],
            run_id=rd.run_id, run_dir=self.rel(rd.root), report_dir=str(report_dir),
            verdict=v.get("verdict"), reasons=list(v.get("reasons") or [])[:20], exit_code=v.get("exit_code"),
            status=c["status"], started_at=first.get("t"), ended_at=end.get("t"), wall_s=end.get("wall_s"),
            images_ok=end.get("images_ok"), images_failed=end.get("images_failed"), adopted=adopted)
        self.note(f"iteration {start['iteration']}: {v.get('verdict')} ({c['status']}, {rd.run_id})"
                  + (" [adopted: it finished while the soak was down]" if adopted else ""))
        if self.cfg.get("history"):
            from stress.history import try_record_run

            w = try_record_run(rd.root, report_dir, Path(self.cfg["history"]), soak_id=self.cfg["soak_id"],
                               soak_iteration=start["iteration"])
            if w:
                self.warn(w)
        return ev

    def _write_report(self, run_dir: Path, report_dir: Path) -> None:
        try:
            from stress.report import write_reports

            write_reports(run_dir, report_dir, **(self.cfg.get("report_options") or {}))
        except Exception as exc:  # noqa: BLE001 - the run's record is safe; its report can be redone
            self.warn(f"report of {run_dir.name} not written ({type(exc).__name__}: {exc}); "
                      f"run 'gpu-stress report {run_dir}' to retry")

    def _record_interrupted(self, start: dict, run_dir: Path | None, *, reason: str, cause: str, harness: bool,
                            rebooted: bool) -> None:
        from stress.rundata import build_run_json

        if run_dir is not None:
            try:  # leave a readable summary of the partial run (it says what is missing)
                write_json_atomic(RunDir(run_dir).run_json, build_run_json(run_dir))
            except OSError as exc:
                self.warn(f"run.json of {run_dir} not rebuilt: {exc}")
        self.journal.append("iteration_interrupted", iteration=start["iteration"], attempt=start["attempt"],
                            scenario=start["scenario"], run_id=run_dir.name if run_dir else None,
                            run_dir=self.rel(run_dir) if run_dir else None, reason=reason, cause=cause,
                            harness=harness, rebooted=rebooted, again=self.cfg["interrupted"])
        self.note(f"iteration {start['iteration']} attempt {start['attempt']} interrupted: {reason}")

    def _recover(self, start: dict) -> None:
        """The previous soak stopped during an attempt (SIGKILL, reboot, power loss): settle it."""
        folder = self.abs(start["folder"])
        run_dir = self.abs(start["resume_run"]) if start.get("resume_run") else find_run_dir(folder)
        c = classify_run(run_dir)
        if c["state"] == "finished":
            self._record_finished(start, run_dir, c, adopted=True)
            return
        now_boot = self.boot_id_fn()
        rebooted = bool(start.get("boot_id") and now_boot and start["boot_id"] != now_boot)
        when = ""
        if c.get("last_t"):
            when = f" (its last event at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(c['last_t']))})"
        reason = ("the machine rebooted during the run" if rebooted else
                  "the soak was killed during the run") + when
        self._record_interrupted(start, run_dir, reason=reason, cause=c["why"], harness=rebooted, rebooted=rebooted)

    # ---- retention ----
    def _retain(self, st: SoakState) -> None:
        keep = self.cfg["keep"]
        runs = st.run_dirs()
        protect = set(runs[-keep:]) if keep > 0 else set()
        first_rep = next((e["run_dir"] for _, e in sorted(st.finished.items()) if e.get("verdict") == "reproduced"), None)
        if first_rep:
            protect.add(first_rep)  # the evidence of the first reproduction stays whole
        for rel in runs:
            if rel in protect or rel in st.thinned:
                continue
            rd = RunDir(self.abs(rel))
            freed = 0
            for sub in (rd.outputs, rd.probes):
                if sub.exists():
                    freed += sum(f.stat().st_size for f in sub.rglob("*") if f.is_file())
                    shutil.rmtree(sub, ignore_errors=True)
            self.journal.append("thinned", run_dir=rel, freed_bytes=freed)

    # ---- derived files ----
    def summary(self, st: SoakState, status: str) -> dict:
        cfg = self.cfg
        its = []
        for i, e in sorted(st.finished.items()):
            its.append({k: e.get(k) for k in ("iteration", "attempt", "scenario", "run_id", "run_dir", "report_dir",
                                              "verdict", "reasons", "exit_code", "status", "started_at", "ended_at",
                                              "wall_s", "adopted")})
        per_scenario = {}
        for e in cfg["scenarios"]:
            per_scenario[e["name"]] = incidence(x["verdict"] for x in its if x["scenario"] == e["name"])
        return {
            "format": STATE_FORMAT, "soak_id": cfg["soak_id"], "state_dir": str(self.state_dir.resolve()),
            "status": status, "updated_at": time.time(), "created_at": cfg["created_at"],
            "scenarios": [e["name"] for e in cfg["scenarios"]],
            "limits": {"iterations": cfg.get("iterations"), "duration_s": cfg.get("duration_s"),
                       "deadline": cfg.get("deadline"), "stop_on": cfg["stop_on"]},
            "iterations": its,
            "interruptions": [{k: e.get(k) for k in ("iteration", "attempt", "scenario", "run_id", "run_dir",
                                                     "reason", "cause", "rebooted", "harness", "t")}
                              for e in st.interruptions],
            "verdicts": {v: [x["verdict"] for x in its].count(v) for v in sorted({str(x["verdict"]) for x in its})},
            "incidence": incidence(x["verdict"] for x in its),
            "incidence_by_scenario": per_scenario,
            "thinned": len(st.thinned),
            "junit": cfg.get("junit"), "history": cfg.get("history"),
        }

    def _write_derived(self, st: SoakState, status: str, end: dict | None = None) -> dict:
        summ = self.summary(st, status)
        if end:
            summ.update(end)
        write_json_atomic(self.state_dir / SUMMARY_FILE, summ)
        if self.cfg.get("junit"):
            from stress.junit import write_soak_junit

            try:
                write_soak_junit(Path(self.cfg["junit"]), summ)
            except OSError as exc:
                self.warn(f"JUnit file {self.cfg['junit']} not written: {exc}")
        return summ

    def _finish(self, status: str, message: str) -> SoakResult:
        st = replay(self.state_dir)
        if status == "interrupted":
            code = int(ExitCode.INTERRUPTED)
        elif status in ("disk-floor", "harness-errors"):
            code = int(ExitCode.SOAK_HARNESS)
        elif not st.finished:
            code = int(ExitCode.INCONCLUSIVE)  # no iteration finished: nothing was learnt
        else:
            code = _severity(e.get("exit_code") for e in st.finished.values())
        self.journal.append("soak_end", status=status, exit_code=code, message=message,
                            iterations=len(st.finished), interruptions=len(st.interruptions))
        summ = self._write_derived(st, status, {"exit_code": code, "message": message})
        return SoakResult(self.state_dir, status, code, message, summ)


_signame = signame


def _end_torn_line(path: Path) -> None:
    """After a power loss mid-write the journal may end in half a line: close it with a newline so
    that the next event is not glued onto it (and lost with it)."""
    try:
        with open(path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
    except FileNotFoundError:
        pass


def _log_tail(path: Path, limit: int = 300) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][-200:] if lines else ""


# ---------------------------------------------------------------------------------------------
# The child: one iteration (python -m stress.soak --state DIR --slot K --out FOLDER --reports R)
# ---------------------------------------------------------------------------------------------

def _term_with_parent() -> None:
    """Linux: get SIGTERM when the soak dies, so its run records an interruption and stops."""
    die_with_parent(signal.SIGTERM)


def _iteration_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.soak", description="one soak iteration (internal)")
    ap.add_argument("--state", required=True)
    ap.add_argument("--slot", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reports", required=True)
    ap.add_argument("--resume")
    args = ap.parse_args(argv)
    _term_with_parent()

    def _interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001 - before the runner installs its own
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    from stress.cli import guarded

    return guarded(lambda: _iteration(args))


def _iteration(args: argparse.Namespace) -> int:
    from stress.progress import Progress
    from stress.runner import load_resumable, run_scenario
    from stress.scenario import Scenario

    cfg = read_config(Path(args.state))
    entry = cfg["scenarios"][args.slot]
    resume = Path(args.resume) if args.resume else None
    try:
        sc = load_resumable(resume) if resume else Scenario.model_validate(entry["resolved"])
    except ValueError as exc:  # pydantic's ValidationError: soak.json was edited or damaged
        raise SoakHarnessError(f"{args.state}/{STATE_FILE}: scenario {entry.get('name')!r} cannot be "
                               f"read back ({str(exc).splitlines()[0]})") from None
    result = run_scenario(sc, Path(entry["source"]), artifacts=Path(args.out), reports=Path(args.reports),
                          resume_dir=resume, progress=Progress.for_stream(sys.stderr),
                          report_options=cfg.get("report_options") or None)
    v = result.verdict or {}
    print(f"run:     {result.run_dir}  ({result.status})", file=sys.stderr)
    print(f"verdict: {v.get('verdict')}  (exit {result.exit_code})", file=sys.stderr)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return int(result.exit_code)


if __name__ == "__main__":
    sys.exit(_iteration_main())
