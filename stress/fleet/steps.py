"""The Buildbot steps of a fleet build (imported only by the master: ``stress.fleet.master``).

- :class:`SoakStep`: runs ``gpu-stress soak`` on the worker and watches that the worker still answers.
  The master pings the worker every ``ping_s``; output from the soak counts as an answer too. When
  nothing has been heard for ``unresponsive_s`` (a hung host: a wedged driver can stop the whole
  machine, SIGSTOP in the test) or the connection is lost (a reboot, a power cut, a cable), the step
  records **host stopped responding** in the shared history for the machine and the scenario that was
  running, with the time the master last heard from it, and ends the build (Buildbot marks it RETRY
  and runs it again when the worker comes back).
- :class:`RecordStep`: on the master, records the runs the worker uploaded in the shared history.

The history is written from a thread (``deferToThread``): its calls block.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from twisted.internet import defer, error, task, threads
from twisted.python import log
from twisted.python.failure import Failure

from buildbot.process import buildstep, logobserver
from buildbot.process.results import FAILURE, SUCCESS, WARNINGS
from buildbot.steps.shell import ShellCommand

from stress.errors import StressError
from stress.fleet.records import HistoryRef

# The soak's own progress line at the start of each iteration (stress.soak.loop).
_ITERATION = re.compile(r"^soak: iteration (\d+)(?:/\d+)? \((.+)\), attempt (\d+)")


class _Heard(logobserver.LogLineObserver):
    def __init__(self, step: "SoakStep"):
        super().__init__()
        self.step = step

    def outLineReceived(self, line: str) -> None:
        self.step._heard(line)

    errLineReceived = outLineReceived


class SoakStep(ShellCommand):
    """``gpu-stress soak`` on the worker, with the master watching that the worker still answers."""

    name = "soak"
    renderables = ["note_dir"]

    def __init__(self, *, history: HistoryRef, machine: str, scenarios: list[str], note_dir, unresponsive_s: float,
                 ping_s: float, **kwargs):
        super().__init__(**kwargs)
        self.history = history
        self.machine = machine
        self.scenario_names = list(scenarios)
        self.note_dir = note_dir
        self.unresponsive_s = float(unresponsive_s)
        self.ping_s = float(ping_s)
        self._last_heard = self._started = time.time()
        self._scenario = self.scenario_names[0] if self.scenario_names else None
        self._last_line: str | None = None
        self._stopped_host: defer.Deferred | None = None
        self._ping_out = False
        self.addLogObserver("stdio", _Heard(self))

    # -- what the master hears ----------------------------------------------------------------
    def _heard(self, line: str | None = None) -> None:
        self._last_heard = time.time()
        if line and line.strip():
            self._last_line = line.strip()[:300]
            m = _ITERATION.match(self._last_line)
            if m:
                self._scenario = m.group(2)

    def _ping(self) -> None:
        if self._stopped_host is not None:
            return
        silent = time.time() - self._last_heard
        if silent >= self.unresponsive_s:
            self._host_stopped(f"no answer from the worker for {silent:.0f} s (pings every {self.ping_s:g} s)",
                               disconnect=True)
            return
        if self._ping_out or self.remote is None:
            return
        self._ping_out = True

        def answered(_):
            self._ping_out = False
            self._heard()

        def failed(f: Failure):
            self._ping_out = False
            return None  # a lost connection is handled by run(); a failed ping is not an answer

        try:
            self.remote.remotePrint(message="gpu-stress fleet: are you there?").addCallbacks(answered, failed)
        except Exception as exc:  # noqa: BLE001 - the connection went away between two checks
            self._ping_out = False
            log.msg(f"gpu-stress fleet: ping to {self.machine} failed: {exc}")

    def _host_stopped(self, reason: str, *, disconnect: bool) -> defer.Deferred:
        if self._stopped_host is not None:
            return self._stopped_host
        from stress.fleet.records import record_host_stopped

        build = f"build{self.getProperty('buildnumber')}"
        last = self._last_heard
        log.msg(f"gpu-stress fleet: {self.machine} stopped responding during {self._scenario}: {reason}")
        d = threads.deferToThread(record_host_stopped, self.history.target, machine=self.machine, scenario=self._scenario,
                                  build=build, started_at=self._started, last_event_at=last, reason=reason,
                                  last_output=self._last_line,
                                  note_dir=Path(self.note_dir) if self.note_dir else None)

        def done(run_id):
            self.descriptionDone = ["host", "stopped", "responding"]
            return self.addCompleteLog("host stopped responding",
                                       f"{reason}\nlast heard from at {time.ctime(last)}\n"
                                       f"scenario: {self._scenario}\nrecorded in the history as {run_id}\n")

        def not_recorded(f: Failure):
            log.err(f, "gpu-stress fleet: host stopped responding, but not recorded")
            return self.addCompleteLog("host stopped responding", f"{reason}\nNOT recorded: {f.getErrorMessage()}\n")

        d.addCallbacks(done, not_recorded)
        if disconnect:
            def drop(_):
                # End the build: drop the worker's connection (the build sees it lost and stops) and
                # stop waiting for the command, which will never answer.
                conn = self.build.conn if self.build is not None else None
                if conn is not None:
                    try:
                        conn.loseConnection()
                    except Exception as exc:  # noqa: BLE001
                        log.msg(f"gpu-stress fleet: dropping {self.machine}'s connection: {exc}")
                return self.interrupt(Failure(error.ConnectionLost(reason)))

            d.addBoth(drop)
        self._stopped_host = d
        return d

    @defer.inlineCallbacks
    def run(self):
        self._last_heard = self._started = time.time()
        loop = task.LoopingCall(self._ping)
        loop.clock = self.master.reactor
        loop.start(self.ping_s, now=False)
        try:
            result = yield super().run()
        except error.ConnectionLost:
            yield self._host_stopped("the worker's connection was lost during the soak", disconnect=False)
            raise
        finally:
            if loop.running:
                loop.stop()
        if self._stopped_host is not None:
            yield self._stopped_host
            raise error.ConnectionLost("host stopped responding")
        return result


class RecordStep(buildstep.BuildStep):
    """On the master: record the uploaded runs in the shared history under the machine's fleet name."""

    name = "record"
    renderables = ["upload"]

    def __init__(self, *, upload, history: HistoryRef, machine: str, expect: dict, leftover: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.leftover = leftover
        self.upload = upload
        self.history = history
        self.machine = machine
        self.expect = dict(expect)

    @defer.inlineCallbacks
    def run(self):
        from stress.fleet.records import record_upload

        try:
            rec = yield threads.deferToThread(record_upload, Path(self.upload), self.history.target, machine=self.machine,
                                              expect=self.expect)
        except StressError as exc:
            yield self.addCompleteLog("history", f"nothing recorded: {exc}\n")
            self.descriptionDone = ["nothing", "recorded"]
            return FAILURE
        if self.leftover and not rec.runs and not rec.problems:
            shutil.rmtree(self.upload, ignore_errors=True)  # an empty pack: keep the bundles folder tidy
            self.descriptionDone = ["nothing", "left", "over"]
            return SUCCESS
        lines = [f"{r['run_id']}: {r['scenario']}: {r['verdict']}" for r in rec.runs]
        lines += [f"differs from the fleet file: {m}" for m in rec.mismatches]
        lines += [f"problem: {p}" for p in rec.problems]
        yield self.addCompleteLog("history", "\n".join(lines or ["no finished run in the upload"]) + "\n")
        self.descriptionDone = [f"{len(rec.runs)} run(s) recorded"]
        # A build whose soak finished nothing is worth a look; a previous build that left nothing is not.
        empty = not rec.runs and not self.leftover
        return WARNINGS if (rec.problems or rec.mismatches or empty) else SUCCESS
