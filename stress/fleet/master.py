"""The Buildbot master configuration made from a fleet file. The master's ``master.cfg`` is two lines::

    from stress.fleet.master import configure
    configure(BuildmasterConfig, "fleet.yaml")

One worker and one builder per machine (the worker's properties carry its expected GPU, driver and
compositor), a Nightly scheduler (or a Periodic one for ``every: 6h``) and a Force scheduler over all
builders. A build: fetch the machine's scenario files from the master, ``gpu-stress soak`` them
(stress.fleet.steps.SoakStep, watched for a host that stops answering), pack the soak's runs and
reports (``gpu-stress fleet pack``), upload them to ``<bundles>/<machine>/<build number>/`` on the
master, and record them in the shared history there (stress.fleet.steps.RecordStep).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from stress.errors import StressError
from stress.fleet.schema import Fleet, Machine, load_fleet, read_secret, scenario_names
from stress.fleet.records import HistoryRef, history_target

RUN = "run"          # per build, on the worker, below the builder's work folder: state/, reports/, upload/


def soak_command(fleet: Fleet, m: Machine, *, iterations: str | None = None, duration: str | None = None) -> list[str]:
    """The worker's soak command line. ``iterations``/``duration`` (a forced build's own length)
    replace the fleet file's soak length."""
    s = fleet.soak
    cmd = [*m.argv, "soak", *[f"scenarios/{key}.yaml" for key in m.scenarios], "--state", f"{RUN}/state",
           "--reports", f"{RUN}/reports", "--history", "local-history.db", "--stop-on", s.stop_on,
           "--min-free-disk", s.min_free_disk, "--keep", str(s.keep)]
    if iterations or duration:
        cmd += (["--iterations", iterations] if iterations else []) + (["--duration", duration] if duration else [])
        return cmd + (["--iteration-timeout", s.iteration_timeout] if s.iteration_timeout else [])
    if s.duration:
        cmd += ["--duration", s.duration]
    if s.iterations:
        cmd += ["--iterations", str(s.iterations)]
    if s.iteration_timeout:
        cmd += ["--iteration-timeout", s.iteration_timeout]
    return cmd


def history_of(fleet: Fleet) -> str:
    """The shared history as stress.history takes it, its password (if any) read from where the fleet
    file says (an environment variable or a file, never the fleet file)."""
    password = read_secret(fleet.history.password, what="history password") if fleet.history.password else None
    return history_target(fleet.history.url, password, fleet.base)


def worker_password(m: Machine, base: Path) -> str:
    pw = read_secret(m.password, default_file=base / "secrets" / f"worker-{m.name}", what=f"worker {m.name}")
    assert pw is not None
    return pw


def bundles_dir(fleet: Fleet) -> Path:
    p = Path(fleet.bundles).expanduser()
    return p if p.is_absolute() else (fleet.base / p).resolve()


def _factory(fleet: Fleet, m: Machine, history: HistoryRef, names: dict[str, list[str]]):
    from buildbot.plugins import steps, util
    from buildbot.process.results import EXCEPTION, FAILURE, SUCCESS, WARNINGS

    from stress.fleet.steps import RecordStep, SoakStep

    s = fleet.soak
    dest = str(bundles_dir(fleet) / m.name) + "/%(prop:buildnumber)s"
    f = util.BuildFactory()
    # What a previous build left behind (its host stopped responding before the upload, and finished
    # runs are on the worker): packed, uploaded and recorded first, so that no finished run is lost.
    # A build that uploaded writes run/uploaded at its end; then there is nothing left over.
    left = str(bundles_dir(fleet) / m.name) + "/%(prop:buildnumber)s-leftover"
    f.addStep(steps.ShellCommand(name="pack leftover", command=[*m.argv, "fleet", "pack", f"{RUN}/state", "--out",
                                                                f"{RUN}/upload", "--machine", m.name,
                                                                "--leftover", f"{RUN}/uploaded"],
                                 env=dict(m.env) or None, haltOnFailure=False, flunkOnFailure=False,
                                 warnOnFailure=True, timeout=600))
    f.addStep(steps.DirectoryUpload(name="upload leftover", workersrc=f"{RUN}/upload",
                                    masterdest=util.Interpolate(left), haltOnFailure=False, flunkOnFailure=False,
                                    warnOnFailure=True))
    f.addStep(RecordStep(name="record leftover", upload=util.Interpolate(left), history=history, machine=m.name,
                         expect={}, leftover=True, flunkOnFailure=False, warnOnFailure=True))
    f.addStep(steps.RemoveDirectory(name="clean", dir=f"build/{RUN}", haltOnFailure=True))
    for key in m.scenarios:
        f.addStep(steps.FileDownload(name=f"scenario {key}", mastersrc=str(fleet.scenario_path(key)),
                                     workerdest=f"scenarios/{key}.yaml", haltOnFailure=True))
    duration = s.seconds("duration") or 0
    max_time = s.seconds("timeout") or (duration + 2 * 3600 if duration else None)
    unresponsive = s.seconds("unresponsive_after") or 600
    ping = s.seconds("ping_every") or max(1.0, unresponsive / 5)
    @util.renderer
    def command(props):
        # A forced build may ask for its own soak length (gpu-stress fleet force --iterations 1).
        it = str(props.getProperty("soak_iterations") or "").strip() or None
        du = str(props.getProperty("soak_duration") or "").strip() or None
        return soak_command(fleet, m, iterations=it, duration=du)

    f.addStep(SoakStep(
        command=command, env=dict(m.env) or None, history=history, machine=m.name,
        scenarios=[n for key in m.scenarios for n in names.get(key, [key])],
        note_dir=util.Interpolate(dest), unresponsive_s=unresponsive, ping_s=ping,
        timeout=None, maxTime=max_time, sigtermTime=300,
        # exit codes (docs/exit-codes.md): verdicts are results; 13 and others are harness problems
        decodeRC={0: SUCCESS, 10: FAILURE, 11: WARNINGS, 12: WARNINGS, 13: FAILURE, 130: EXCEPTION},
        haltOnFailure=False, flunkOnFailure=True, warnOnWarnings=True))
    f.addStep(steps.ShellCommand(name="pack", command=[*m.argv, "fleet", "pack", f"{RUN}/state", "--out",
                                                       f"{RUN}/upload", "--machine", m.name],
                                 env=dict(m.env) or None, alwaysRun=True, haltOnFailure=True, timeout=600))
    f.addStep(steps.DirectoryUpload(name="upload", workersrc=f"{RUN}/upload", masterdest=util.Interpolate(dest),
                                    alwaysRun=True, haltOnFailure=True))
    f.addStep(RecordStep(upload=util.Interpolate(dest), history=history, machine=m.name,
                         expect=m.expect.model_dump(exclude_none=True), alwaysRun=True, haltOnFailure=True))
    f.addStep(steps.StringDownload("uploaded and recorded\n", name="mark uploaded", workerdest=f"{RUN}/uploaded"))
    return f


def configure(c: dict, fleet_file: str | os.PathLike, *, basedir: str | os.PathLike | None = None) -> Fleet:
    """Fill a BuildmasterConfig dict from the fleet file (found from ``basedir``, default the master
    directory Buildbot runs in, where ``secrets/worker-<name>`` hold the workers' passwords). Problems
    become Buildbot configuration errors, one per line."""
    from buildbot.config.errors import ConfigErrors
    from buildbot.plugins import schedulers, util, worker

    if basedir is None:  # master.cfg is run with the master's folder as 'basedir' in its globals
        basedir = sys._getframe(1).f_globals.get("basedir") or os.getcwd()
    base = Path(basedir).resolve()
    try:
        fleet = load_fleet(base / fleet_file)
        history = HistoryRef(history_of(fleet))
        passwords = {m.name: worker_password(m, base) for m in fleet.machines}
    except StressError as exc:
        raise ConfigErrors(exc.lines()) from None
    names = scenario_names(fleet)
    builders = [m.name for m in fleet.machines]

    c["buildbotNetUsageData"] = None          # never phone home
    c["title"] = fleet.master.title
    c.setdefault("db", {"db_url": "sqlite:///state.sqlite"})
    c["protocols"] = {"pb": {"port": f"tcp:{fleet.master.port}:interface={fleet.master.listen}"}}
    c["workers"] = [worker.Worker(m.name, passwords[m.name], max_builds=1,
                                  properties={"fleet": fleet.fleet, **{f"expect_{k}": v for k, v in
                                                                       m.expect.model_dump(exclude_none=True).items()}})
                    for m in fleet.machines]
    c["builders"] = [util.BuilderConfig(name=m.name, workernames=[m.name], factory=_factory(fleet, m, history, names),
                                        tags=["gpu-stress", fleet.fleet],
                                        properties={"scenarios": ",".join(m.scenarios)})
                     for m in fleet.machines]
    sched = fleet.schedule
    if sched.hour_minute:
        hour, minute = sched.hour_minute
        timed = schedulers.Nightly(name="nightly", builderNames=builders, hour=hour, minute=minute,
                                   onlyIfChanged=False)
    else:
        timed = schedulers.Periodic(name="periodic", builderNames=builders, periodicBuildTimer=int(sched.every_s))
    c["schedulers"] = [timed, schedulers.ForceScheduler(
        name="force", builderNames=builders,
        properties=[util.StringParameter(name="soak_iterations", label="iterations (this build only)", default=""),
                    util.StringParameter(name="soak_duration", label="duration (this build only)", default="")])]
    if fleet.master.www:
        host, _, port = fleet.master.www.rpartition(":")
        c["www"] = {"port": f"tcp:{port}:interface={host}", "plugins": {}}
        c["buildbotURL"] = f"http://{host}:{port}/"
    c.setdefault("services", [])
    return fleet
