"""The soak loop: iterations one after another, each in a child process, recorded in the ledger."""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from stress.proc import child_env, signame
from stress.errors import ExitCode, most_severe
from stress.events import JOURNAL_FORMAT, LEDGER
from stress.record import derived, fold
from stress.journal import Journal, RunDir, write_json_atomic
from stress.stats import incidence
from stress.units import format_size
from stress.soak.ledger import SoakState, classify_run, find_run_dir, replay
from stress.soak.state import (ITERATIONS_DIR, JOURNAL_FILE, LOCK_FILE, STATE_FORMAT, SUMMARY_FILE, VERDICT_CODES,
                               SoakHarnessError, pid_alive, boot_id, free_bytes, read_config)

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
                if owner and owner != os.getpid() and pid_alive(owner):
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
            self._record_finished(start, run_dir, c, adopted=False, retry_report=rc not in VERDICT_CODES)
            return
        why = c["why"]
        if rc is not None and c["state"] != "interrupted":
            how = f"signal {signame(-rc)}" if rc < 0 else f"exit status {rc}"
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
        rec = fold(rd.journal)
        first, end = rec.run_start or {}, rec.run_end or {}
        counts = derived.counts(rec)
        ev = self.journal.append(
            "iteration_end", iteration=start["iteration"], attempt=start["attempt"], scenario=start["scenario"],
            run_id=rd.run_id, run_dir=self.rel(rd.root), report_dir=str(report_dir),
            verdict=v.get("verdict"), reasons=list(v.get("reasons") or [])[:20], exit_code=v.get("exit_code"),
            status=c["status"], started_at=first.get("t"), ended_at=end.get("t"), wall_s=end.get("wall_s"),
            images_ok=counts.ok, images_failed=counts.failed, adopted=adopted)
        self.note(f"iteration {start['iteration']}: {v.get('verdict')} ({c['status']}, {rd.run_id})"
                  + (" [adopted: it finished while the soak was down]" if adopted else ""))
        if self.cfg.get("history"):
            from stress.history import try_record_run

            w = try_record_run(rd.root, report_dir, self.cfg["history"], soak_id=self.cfg["soak_id"],
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
            code = most_severe(e.get("exit_code") for e in st.finished.values())
        self.journal.append("soak_end", status=status, exit_code=code, message=message,
                            iterations=len(st.finished), interruptions=len(st.interruptions))
        summ = self._write_derived(st, status, {"exit_code": code, "message": message})
        return SoakResult(self.state_dir, status, code, message, summ)




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

