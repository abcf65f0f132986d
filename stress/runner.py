"""The supervisor: runs a scenario's workload in a worker subprocess and records everything.

It never imports torch. The worker holds the GPU; when it crashes, hangs, runs out of memory or is
killed, the supervisor is still alive to record that as the image's outcome, probe the desktop, decide
the verdict and write the report. Every fact goes to the journal first; ``run.json`` is derived.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stress import __version__
from stress.cycles import Cycles
from stress.errors import ExitCode, StressError
from stress.events import FROM_WORKER, JOURNAL_FORMAT
from stress.journal import Journal, RunDir, new_run_id, write_json_atomic
from stress.oom import OomWatch, allocator_failure, last_own_line, oom_kill_evidence
from stress.record import derived, fold, load
from stress.plan import Job, accounting, expand
from stress.proc import SignalGuard, child_env, describe_returncode, is_stress_process, signame, tail_file
from stress import experiment, settings
from stress.progress import Progress
from stress.rundata import build_run_json
from stress.scenario import Scenario
from stress.workload import threads


class WorkerHandle:
    """One worker subprocess and its message pipe."""

    def __init__(self, ordinal: int, rd: RunDir, base_dir: Path, journal: Journal, sc: Scenario | None = None,
                 first_images: list[int] | None = None):
        self.ordinal, self.sc, self.first_images = ordinal, sc, first_images
        self.rd = rd
        self.base_dir = base_dir
        self.journal = journal
        self.proc: subprocess.Popen | None = None
        self.messages: queue.Queue = queue.Queue()
        self.log_path = rd.logs / f"worker-{ordinal}.log"
        self.images_done = 0
        self.since_reload = 0
        self.exit_recorded = False
        self.oom_watch: OomWatch | None = None
        self.on_progress: Any = None   # called with each `progress` message (stage / step)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, reason: str) -> None:
        r, w = os.pipe()
        env = child_env(threads.worker_env())  # passive OpenMP waits, set before torch loads there
        env, wanted = experiment.worker_env(env, self.sc, self.first_images)   # the scenario's env:, read back below
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stress.workload.worker", "--scenario", str(self.rd.scenario),
                 "--run-dir", str(self.rd.root), "--base-dir", str(self.base_dir), "--msg-fd", str(w),
                 "--worker", str(self.ordinal)],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, pass_fds=(w,),
                start_new_session=True, env=env, close_fds=True,
            )
        os.close(w)
        self.oom_watch = OomWatch.start(self.proc.pid)     # its memory cgroups' oom_kill counters
        threading.Thread(target=self._read, args=(r,), daemon=True, name=f"worker-{self.ordinal}-reader").start()
        self.journal.append("worker_start", worker=self.ordinal, pid=self.proc.pid, reason=reason)
        experiment.read_back(self.journal, wanted, "worker", self.proc.pid, worker=self.ordinal)

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    self.messages.put(json.loads(line))
                except ValueError:
                    continue
        self.messages.put({"msg": "eof"})

    def send(self, **cmd: Any) -> bool:
        if not self.proc or self.proc.poll() is not None or not self.proc.stdin:
            return False
        try:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def wait_for(self, kinds: tuple[str, ...], timeout: float) -> dict:
        """Relay events until a message of ``kinds`` arrives; ``timeout`` / ``eof`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return {"msg": "timeout"}
            try:
                msg = self.messages.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            kind = msg.get("msg")
            if kind == "event":
                if msg.get("ev") not in FROM_WORKER:
                    self.journal.append("warning", message=f"worker {self.ordinal} sent an unknown event "
                                                           f"kind {str(msg.get('ev'))[:40]!r}; dropped")
                    continue
                self.journal.append(msg["ev"], t=msg.get("t"), worker=self.ordinal, **msg.get("fields", {}))
                continue
            if kind == "progress":
                if self.on_progress is not None:
                    self.on_progress(msg)
                continue
            if kind == "eof":
                self.messages.put(msg)  # sticky: every later wait sees that the worker is gone
                return msg
            if kind in kinds:
                return msg

    def stderr_tail(self, limit: int = 2000) -> str:
        return tail_file(self.log_path, limit)

    def _record_exit(self, reason: str) -> None:
        if self.exit_recorded or not self.proc:
            return
        rc = self.proc.returncode
        self.journal.append("worker_exit", worker=self.ordinal, pid=self.proc.pid, returncode=rc,
                            signal=(signame(-rc) if rc is not None and rc < 0 else None),
                            reason=reason, stderr_tail=self.stderr_tail() if reason != "requested" else "")
        self.exit_recorded = True

    def kill(self, reason: str) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            self.proc.wait()
        self._record_exit(reason)

    def reap(self, reason: str) -> None:
        """The worker died on its own: collect its status."""
        if self.proc:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                return self.kill(reason)
        self._record_exit(reason)

    def stop(self, timeout: float = 60.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return self.reap("crash") if self.proc and not self.exit_recorded else None
        if self.send(cmd="exit"):
            self.wait_for(("bye",), timeout)
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
            self._record_exit("requested")
        except subprocess.TimeoutExpired:
            self.kill("killed-timeout")


@dataclass
class RunResult:
    run_dir: Path
    exit_code: int
    verdict: dict
    status: str
    report: dict | None = None
    warnings: list[str] = field(default_factory=list)


class _Stop(Exception):
    def __init__(self, status: str):
        self.status = status


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _failed_record(sc: Scenario, job: Job, index: int, seed: int, outcome: str, error: str, worker: int) -> dict:
    return {"index": index, "seed": seed, "width": job.width, "height": job.height, "steps": sc.steps,
            "cfg": sc.cfg, "sampler": sc.sampler.name, "outcome": outcome, "error": error[-2000:],
            "worker": worker, "path": None, "sha256": None}


class Supervisor:
    def __init__(self, sc: Scenario, rd: RunDir, base_dir: Path, *, progress: Progress,
                 resume: bool = False, argv: list[str] | None = None):
        self.sc = sc
        self.rd = rd
        self.base_dir = base_dir
        self.progress = progress
        self.resume = resume
        self.argv = argv or sys.argv
        self.journal: Journal | None = None
        self.worker: WorkerHandle | None = None
        self.worker_count = 0
        self.records: dict[int, dict] = {}
        self.t0 = time.time()
        self.during_visits = 0
        self.probe_history: list[dict] = []     # the run's probe events: what a borderline phase is judged on
        self._next_start_reason = "start"
        self._baseline_done = False
        self._progress_journalled = 0.0

    # ---- set-up ----
    def _prepare(self) -> set[int]:
        done: set[int] = set()
        if self.resume:
            prior = load(self.rd.root)
            self.records = {idx: {k: v for k, v in ev.items()} for idx, ev in prior.images.items()}
            self.worker_count = prior.worker_count
            self.during_visits = prior.during_visits
            self._baseline_done = prior.has_probes("baseline")
            self.probe_history = list(prior.probes)
            done = set(self.records)
            self.journal = Journal(self.rd.journal)
            ended = prior.run_end
            self.journal.append("resume", previous_end=ended.get("status") if ended else None,
                                torn_tail=prior.torn_tail, done=len(done), in_flight=prior.in_flight)
        else:
            self.rd.create()
            write_json_atomic(self.rd.scenario, self.sc.model_dump(mode="json"))
            self.journal = Journal(self.rd.journal)
        env = __import__("stress.environment", fromlist=["collect"]).collect()
        write_json_atomic(self.rd.environment, env)
        self.journal.append("run_start", format=JOURNAL_FORMAT, run_id=self.rd.run_id, scenario=self.sc.name,
                            scenario_sha256=_sha256_json(self.sc.model_dump(mode="json")), argv=self.argv,
                            stress_version=__version__, pid=os.getpid(), resumed=self.resume,
                            base_dir=str(self.base_dir))
        self.journal.append("environment", env=env)
        self.journal.append("plan", **accounting(self.sc), steps=self.sc.steps, refiner=bool(self.sc.model.refiner))
        experiment.announce(self.journal, self.sc)
        return done

    # ---- workers ----
    def _start_worker(self, reason: str, images: list[int] | None = None) -> None:
        self.worker = WorkerHandle(self.worker_count, self.rd, self.base_dir, self.journal, self.sc, images)
        self.worker_count += 1
        self.worker.on_progress = self._on_progress
        self.worker.start(reason)
        self.progress.note(f"worker {self.worker.ordinal} starting (pid {self.worker.pid}, {reason}); loading models")
        self.progress.step(index=None, stage="loading models", step=None, total=None)
        msg = self.worker.wait_for(("ready", "load_failed"), self.sc.session.load_timeout)
        kind = msg["msg"]
        if kind == "ready":
            info = msg.get("info", {})
            self.journal.append("worker_ready", worker=self.worker.ordinal, pid=self.worker.pid, **info)
            self.progress.note(f"worker {self.worker.ordinal} ready on {info.get('device')} "
                               f"({info.get('dtype')}) in {info.get('load_s', 0):.1f}s"
                               + (f"; {info.get('cpu_threads')} CPU threads ({info.get('cpu_threads_reason')})"
                                  if info.get("device") == "cpu" else ""))
            return
        if kind == "load_failed":
            self.worker.reap("load-failed")
            line = msg.get("error", "unknown error")
            if line.startswith("ModuleNotFoundError"):   # a set-up problem: say how to fix it
                line += " (install it: make setup; then gpu-stress doctor)"
            self.journal.append("load_failed", worker=self.worker.ordinal, error=line,
                                traceback=msg.get("traceback", "")[-4000:])
            raise _Stop("load-failed:" + line)
        if kind == "timeout":
            self.worker.kill("killed-timeout")
            raise _Stop(f"load-failed:loading models took longer than {self.sc.session.load_timeout:.0f}s")
        self.worker.reap("crash")
        raise _Stop("load-failed:worker exited while loading models (see logs/)")

    PROGRESS_EVERY = 5.0   # seconds between `progress` journal events (the terminal sees every step)

    def _on_progress(self, msg: dict) -> None:
        fields = {k: msg.get(k) for k in ("index", "stage", "step", "total")}
        self.progress.step(**fields)
        now = time.monotonic()
        if now - self._progress_journalled >= self.PROGRESS_EVERY and self.journal is not None:
            self._progress_journalled = now
            self.journal.append("progress", t=msg.get("t"), worker=self.worker.ordinal if self.worker else None,
                                **fields)

    def _reload_models(self) -> None:
        w = self.worker
        msg = w.wait_for(("reloaded", "reload_failed"), self.sc.session.load_timeout) \
            if w.send(cmd="reload") else {"msg": "eof"}
        ok = msg["msg"] == "reloaded"
        self.journal.append("models_reloaded", worker=w.ordinal, s=msg.get("s"), ok=ok, error=msg.get("error"))
        w.since_reload = 0
        if ok:
            return
        # A worker whose reload failed or hung has no usable models: replace it.
        if msg["msg"] == "timeout":
            w.kill("killed-timeout")
        elif w.proc and w.proc.poll() is None:
            w.kill("reload-failed")
        else:
            w.reap("crash")
        self._start_worker("after-reload-failure")

    # ---- probes ----
    def _probe(self, phase: str, visit: int = 0) -> None:
        if not self.sc.probes.enabled or phase not in self.sc.probes.phases:
            return
        from stress.probes.phases import run_phase

        self.progress.note(f"probes: {phase}")
        self.progress.step(index=None, stage=f"probes {phase}", step=None, total=None)
        images = [r for r in self.records.values() if r.get("outcome") == "ok"]
        try:
            self.probe_history += run_phase(phase, self.sc.probes, self.rd, self.journal, images, visit=visit,
                                            history=self.probe_history,
                                            env_vars=experiment.for_target(self.sc.env, "probes"))
        except Exception as exc:  # noqa: BLE001 - a probe harness bug is a result, not a reason to die
            self.journal.append("probe", phase=phase, kind="harness", rep=0, status="error", latency_s=None,
                                metrics={}, reason=f"{type(exc).__name__}: {exc}", visit=visit)

    # ---- preflight ----
    def _preflight(self, jobs: list[Job]) -> list[Job]:
        """With ``session.on_predicted_oom: skip``, record images predicted not to fit as skipped.

        The prediction traces the models (torch), so it runs in a subprocess."""
        if self.sc.session.on_predicted_oom != "skip":
            return jobs
        cmd = [sys.executable, "-m", "stress.memory.preflight_cli", "--scenario", str(self.rd.scenario),
               "--base-dir", str(self.base_dir)]
        if self.sc.session.gpu_memory:
            cmd += ["--gpu-memory", self.sc.session.gpu_memory]
        self.progress.note("preflight: predicting peak GPU memory per resolution")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=child_env())
            result = json.loads(proc.stdout) if proc.returncode == 0 else None
            reason = None if result else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        except (subprocess.TimeoutExpired, ValueError, OSError) as exc:
            result, reason = None, f"{type(exc).__name__}: {exc}"
        if result is None or not result.get("resolutions"):
            why = reason or result.get("reason")
            self.journal.append("preflight", status="unavailable", reason=why)
            self.progress.note(f"preflight unavailable ({why}); running every image")
            return jobs
        self.journal.append("preflight", status="ok", gpu=result.get("gpu"), resolutions=result["resolutions"])
        verdicts = {(r["width"], r["height"]): r for r in result["resolutions"]}
        available = (result.get("gpu") or {}).get("available") or 0
        kept = []
        for job in jobs:
            r = verdicts.get((job.width, job.height))
            if r is None or r["fits"]:
                kept.append(job)
                continue
            error = (f"predicted OOM: needs {r['required'] / 2**30:.1f} GiB "
                     f"(peak {r['predicted_peak'] / 2**30:.1f} GiB in {r['peak_stage']}), "
                     f"{available / 2**30:.1f} GiB available; session.on_predicted_oom is 'skip'")
            for i, s in job.images:
                rec = _failed_record(self.sc, job, i, s, "skipped", error, -1)
                self.records[i] = rec
                self.journal.append("image", **rec)
            self.progress.note(f"skipping images {job.indices} at {job.width}x{job.height}: {error}")
        return kept

    # ---- the workload ----
    def _run_job(self, job: Job) -> list[dict]:
        w = self.worker
        assert w is not None
        if w.oom_watch:
            w.oom_watch.refresh()      # moved into another memory cgroup since it started?
        for i, s in job.images:
            self.journal.append("image_start", index=i, seed=s, width=job.width, height=job.height,
                                worker=w.ordinal)
        if not w.send(cmd="generate", job_id=job.job_id, job=job.to_wire()):
            msg = {"msg": "eof"}
        else:
            msg = w.wait_for(("done", "failed"), self.sc.session.image_timeout * len(job.images))
        kind = msg["msg"]
        if kind == "done":
            return [dict(r, worker=w.ordinal) for r in msg["records"]]
        if kind == "failed":
            outcome, error = msg.get("kind", "error"), msg.get("error", "")
            if outcome == "error" and allocator_failure(error):   # host memory: DefaultCPUAllocator, MemoryError
                outcome = "oom"
        elif kind == "timeout":
            w.kill("killed-timeout")
            self._next_start_reason = "after-timeout"
            outcome = "timeout"
            error = (f"no result within {self.sc.session.image_timeout:.0f}s per image; "
                     f"worker killed by the watchdog")
        else:  # eof: the worker died
            w.reap("crash")
            self._next_start_reason = "after-crash"
            outcome, error = self._classify_death(w)
        return [_failed_record(self.sc, job, i, s, outcome, error, w.ordinal) for i, s in job.images]

    def _classify_death(self, w: WorkerHandle) -> tuple[str, str]:
        """``oom`` when the kernel's OOM killer ended the worker (stress.oom), else ``crash``; the error
        names the signal and the last line the worker itself wrote (not a library's warning)."""
        rc = w.proc.returncode if w.proc else None
        how = describe_returncode(rc)
        kmsg = [k["line"] for k in fold(self.rd.journal).kmsg_tail] \
            if rc == -signal.SIGKILL else []
        evidence = oom_kill_evidence(w.pid, rc, w.oom_watch, kmsg) if w.pid else None
        if evidence:
            return "oom", f"worker killed by the kernel's OOM killer ({how}; {evidence})"
        line = last_own_line(w.stderr_tail(4000))
        said = f"; the last line it wrote: {line}" if line else "; it wrote nothing of its own"
        return "crash", f"worker died ({how}){said}"

    def _workload(self, jobs: list[Job]) -> None:
        sess = self.sc.session
        total = sum(len(j.images) for j in jobs) + len(self.records)
        self.progress.start(total, already=len(self.records))
        for job in jobs:
            if sess.time_limit and time.time() - self.t0 > sess.time_limit:
                raise _Stop("time-limit")
            if self.worker and self.worker.proc and self.worker.proc.poll() is None and sess.restart_worker_every \
                    and self.worker.images_done >= sess.restart_worker_every:
                self.worker.stop()
                self._next_start_reason = "restart-every"
            if self.worker is None or self.worker.proc is None or self.worker.proc.poll() is not None:
                self._start_worker(self._next_start_reason, job.indices)
            if sess.reload_models_every and self.worker.since_reload >= sess.reload_models_every:
                self._reload_models()
            before = len(self.records) // self.sc.probes.during_every
            for rec in self._run_job(job):
                self.records[rec["index"]] = rec
                self.journal.append("image", **rec)
                self.progress.image(rec)
            self.worker.images_done += len(job.images)
            self.worker.since_reload += len(job.images)
            if sess.on_failure == "stop" and any(self.records[i]["outcome"] != "ok" for i in job.indices):
                raise _Stop("stopped-on-failure")
            after = len(self.records) // self.sc.probes.during_every
            if after > before and len(self.records) < self.sc.images:
                self._probe("during", visit=self.during_visits)
                self.during_visits += 1
            self.cycles.after_images(len(self.records))

    def run(self) -> RunResult:
        done = self._prepare()
        from stress.evidence import attach   # witness, capture at failure, previous boot (docs/evidence.md)
        journal = self.journal = attach(self.journal, self.sc, self.rd, resume=self.resume)
        assert journal is not None
        self.cycles = Cycles(self)   # desktop cycles between images / after the workload (docs/scenarios.md#cycles)
        from stress.probes.phases import probe_env
        from stress.samplers import Monitors

        monitors = Monitors(self.sc.monitors, journal, worker_pids=lambda: [self.worker.pid]
                            if self.worker and self.worker.pid else [], display_env=probe_env(self.sc.probes))
        status, applied = "finished", []
        warnings: list[str] = []
        with SignalGuard() as guard:
            try:
                if self.sc.monitors.enabled:
                    monitors.start()
                settings.apply_all(self.sc.settings, journal, applied)   # before the baseline probes
                jobs = [j for j in expand(self.sc) if not set(j.indices) <= done]
                if not self._baseline_done:
                    self._phase("baseline", lambda: self._probe("baseline"))
                jobs = self._preflight(jobs)
                self._phase("workload", lambda: self._workload(jobs))
                if self.sc.session.idle_after:
                    time.sleep(self.sc.session.idle_after)
                self.cycles.after_workload()
                if self.worker and self.worker.proc and self.worker.proc.poll() is None:
                    self._phase("after", lambda: self._probe("after"))
            except _Stop as stop:
                status = stop.status
            except KeyboardInterrupt:
                status = "interrupted"
                self.progress.note("interrupted: stopping the worker and writing the record")
            # Shutting down: a signal here cuts the after-exit probes short, nothing more.
            try:
                if self.worker:
                    if status == "interrupted":
                        self.worker.kill("interrupted")
                    else:
                        self.worker.stop()
                if status != "interrupted":
                    self._phase("after-exit", lambda: self._probe("after-exit"))
            except KeyboardInterrupt:
                status = "interrupted"
                if self.worker:
                    self.worker.kill("interrupted")
            # Writing the record: signals are deferred until it is complete.
            guard.critical = True
            warnings += settings.restore_all(self.sc.settings, applied, journal)
            if self.sc.monitors.enabled:
                try:
                    summary = monitors.stop()
                    journal.append("monitors_summary", **(summary or {}))
                except Exception as exc:  # noqa: BLE001
                    warnings.append(f"monitors did not stop cleanly: {exc}")
            self.progress.finish()
            if guard.received is not None and status != "interrupted":
                journal.append("signal_deferred", signal=signame(guard.received))
            return self._conclude(status, warnings)

    def _phase(self, name: str, fn) -> None:
        self.journal.append("phase", phase=name, state="start")
        try:
            fn()
        finally:
            self.journal.append("phase", phase=name, state="end")

    def _conclude(self, status: str, warnings: list[str]) -> RunResult:
        from stress.analysis import judge

        journal = self.journal
        rec = fold(self.rd.journal)
        counts = derived.counts(rec)
        load_failed = status.startswith("load-failed")
        v = judge(rec, self.sc.probes)
        if load_failed:
            why = f"the workload could not start: {status.split(':', 1)[1]}"
            status = "load-failed"
            if v.get("verdict") == "reproduced":   # a broken desktop is the finding, whatever else failed
                v = dict(v, reasons=list(v.get("reasons", [])) + [why])
            else:
                v = dict(v, verdict="error", exit_code=int(ExitCode.WORKLOAD_ERROR), reasons=[why],
                         details=dict(v.get("details") or {}, error_source="load"))
        exit_code = int(ExitCode.INTERRUPTED) if status == "interrupted" else int(v["exit_code"])
        journal.append("verdict", **dict(v, exit_code=exit_code))
        journal.append("run_end", status=status, images_ok=counts.ok, images_skipped=counts.skipped,
                       images_failed=counts.failed, wall_s=round(time.time() - self.t0, 3))
        journal.close()
        try:
            write_json_atomic(self.rd.run_json, build_run_json(self.rd.root))
        except OSError as exc:  # a full disk: the journal holds the record; run.json can be rebuilt from it
            warnings.append(f"run.json not written ({exc.strerror or exc}); the journal has the whole record: "
                            f"run 'gpu-stress report {self.rd.root} --out DIR' with DIR on a disk with space")
        return RunResult(self.rd.root, exit_code, v, status, warnings=warnings)


def run_scenario(sc: Scenario, scenario_path: Path, *, artifacts: Path, reports: Path | None,
                 resume_dir: Path | None = None, progress: Progress | None = None,
                 report_options: dict | None = None) -> RunResult:
    """Run one (expanded) scenario end to end; write its report unless ``reports`` is None."""
    progress = progress or Progress.for_stream(sys.stderr)
    if resume_dir is not None:
        rd = RunDir(resume_dir)
    else:
        rd = RunDir(artifacts / new_run_id(sc.name))
    base_dir = scenario_path.resolve().parent
    if resume_dir is not None:
        first = load(rd.root).run_start or {}
        base_dir = Path(first.get("base_dir") or base_dir)
    sup = Supervisor(sc, rd, base_dir, progress=progress, resume=resume_dir is not None)
    # Past the supervisor's own guard (the record is complete by then), SIGTERM and SIGHUP still stop
    # the report cleanly (as Ctrl-C: exit 130, "report not written"), never kill the process outright.
    with SignalGuard():
        return _run_and_report(sup, rd, reports, report_options)


def _run_and_report(sup: "Supervisor", rd: RunDir, reports: Path | None, report_options: dict | None) -> RunResult:
    result = sup.run()
    if reports is not None:
        try:
            from stress.report import write_reports

            opts = dict(report_options or {})
            # nvidia-bug-report.sh takes minutes and root: only when there is something to report.
            opts["nvidia_bug_report"] = bool(opts.get("nvidia_bug_report")) and \
                result.verdict.get("verdict") == "reproduced"
            result.report = write_reports(rd.root, reports / rd.run_id, **opts)
            result.warnings.extend(result.report.get("warnings", []))
        except KeyboardInterrupt:
            result.warnings.append(f"report not written (interrupted); the run is recorded: "
                                   f"run 'gpu-stress report {rd.root}' to write it")
            result.exit_code = int(ExitCode.INTERRUPTED)
        except StressError as exc:
            result.warnings.append(f"report not written: {exc}; the run is recorded: run "
                                   f"'gpu-stress report {rd.root} --out DIR' to write it elsewhere")
        except Exception as exc:  # noqa: BLE001 - the run's record is safe; the report can be redone
            result.warnings.append(f"report not written ({type(exc).__name__}: {exc}); "
                                   f"run 'gpu-stress report {rd.root}' to retry")
    return result


def load_resumable(run_dir: Path) -> Scenario:
    rd = RunDir(run_dir)
    if not rd.journal.exists() or not rd.scenario.exists():
        raise StressError(f"{run_dir}: not a run directory (no journal.jsonl / scenario.resolved.json)")
    rec = load(rd.root)
    end = rec.run_end
    if end is not None and end.get("status") == "finished":
        raise StressError(f"{run_dir}: this run already finished; use 'gpu-stress report {run_dir}' "
                          "to rewrite its report, or run the scenario again")
    start = rec.last_run_start or {}
    pid = start.get("pid")
    if isinstance(pid, int) and pid != os.getpid() and end is None and is_stress_process(pid):
        raise StressError(f"{run_dir}: the run is still going (pid {pid}); stop it first")
    try:
        return Scenario.model_validate(json.loads(rd.scenario.read_text(encoding="utf-8")))
    except (ValueError, OSError) as exc:
        raise StressError(f"{rd.scenario}: cannot be read back ({exc}); the run cannot be resumed") from None
