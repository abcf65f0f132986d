"""``gpu-stress fleet check|init|status|view|pack|force``: many machines, one history, Buildbot (docs/fleet.md)."""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stress.errors import ExitCode, StressError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="run soaks on many machines with Buildbot, into one shared history",
                       description="Fleets of lab machines (docs/fleet.md): check a fleet file, write the Buildbot "
                                   "master and worker set-up, show the matrix of last results.")
    fs = p.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND")
    fs.required = True

    c = fs.add_parser("check", help="validate a fleet file (and its scenarios); exit 2 with file:line errors")
    c.add_argument("fleet", metavar="FLEET_YAML")
    c.add_argument("--json", action="store_true", help="print the validated fleet as JSON")
    c.set_defaults(func=check_command)

    i = fs.add_parser("init", help="write a Buildbot master (master.cfg, buildbot.tac, secrets/) and worker folders")
    i.add_argument("fleet", metavar="FLEET_YAML")
    i.add_argument("--master", required=True, metavar="DIR", help="the master's folder (created)")
    i.add_argument("--workers", metavar="DIR", help="also create each machine's worker folder here, DIR/<machine> "
                                                    "(for workers on this host; otherwise run the printed command "
                                                    "on each machine)")
    i.set_defaults(func=init_command)

    for name, helptext in (("status", "print machines x scenarios: the last result, runs and incidence"),
                           ("view", "write the fleet view (self-contained HTML, or --json) from the shared history")):
        s = fs.add_parser(name, help=helptext)
        s.add_argument("fleet", metavar="FLEET_YAML", nargs="?", help="the fleet file (machines, scenarios, history)")
        s.add_argument("--history", metavar="DB_OR_URL", help="the shared history (default: the fleet file's; "
                                                             "without one, $STRESS_HISTORY_URL or reports/history.db)")
        s.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "view":
            s.add_argument("--out", metavar="FILE", default="fleet.html", help="the HTML page (default fleet.html)")
        s.set_defaults(func=status_command if name == "status" else view_command)

    k = fs.add_parser("pack", help="(on a worker, run by the build) gather a soak's runs and reports for upload")
    k.add_argument("state", metavar="SOAK_STATE_DIR")
    k.add_argument("--out", required=True, metavar="DIR")
    k.add_argument("--machine", metavar="NAME")
    k.add_argument("--leftover", metavar="MARKER", help="pack only what a previous build left behind: nothing "
                                                        "when MARKER exists (that build uploaded) or there is no "
                                                        "soak state")
    k.set_defaults(func=pack_command)

    r = fs.add_parser("record", help="record uploaded builds in the shared history again (after the database "
                                     "was unreachable); idempotent")
    r.add_argument("uploads", nargs="+", metavar="BUNDLE_DIR", help="<bundles>/<machine>/<build>/ folders")
    r.add_argument("--fleet", metavar="FLEET_YAML", help="the fleet file (its history)")
    r.add_argument("--history", metavar="DB_OR_URL", help="the shared history (default: the fleet file's)")
    r.set_defaults(func=record_command)

    f = fs.add_parser("force", help="start a build now on some or all machines (through the master's REST API)")
    f.add_argument("fleet", metavar="FLEET_YAML")
    f.add_argument("machines", nargs="*", metavar="MACHINE", help="default: every machine")
    f.add_argument("--reason", default="forced with gpu-stress fleet force")
    f.add_argument("--iterations", type=int, metavar="N", help="this build's soak: N iterations (instead of the "
                                                               "fleet file's length), e.g. 1 to try a new machine")
    f.add_argument("--duration", metavar="TIME", help="this build's soak: this long (instead of the fleet file's)")
    f.add_argument("--www", metavar="URL", help="the master's web address (default: the fleet file's master.www)")
    f.set_defaults(func=force_command)


def _load(path: str):
    from stress.fleet.schema import load_fleet

    if not Path(path).is_file():
        raise StressError(f"{path}: no such fleet file")
    return load_fleet(path)


def check_command(args: argparse.Namespace) -> int:
    from stress.fleet.schema import scenario_names

    fleet = _load(args.fleet)
    names = scenario_names(fleet)
    if args.json:
        print(json.dumps({"fleet": fleet.model_dump(mode="json"), "scenario_names": names}, indent=2))
        return int(ExitCode.OK)
    s = fleet.schedule
    print(f"fleet:     {fleet.fleet} ({len(fleet.machines)} machines, {len(fleet.scenarios)} scenarios)")
    print("schedule:  " + (f"nightly at {s.nightly}" if s.nightly else f"every {s.every}")
          + f"; soak {fleet.soak.duration or ''}{' ' if fleet.soak.duration and fleet.soak.iterations else ''}"
          + (f"{fleet.soak.iterations} iterations" if fleet.soak.iterations else "")
          + f"; host stopped responding after {fleet.soak.unresponsive_after} of silence")
    pw = fleet.history.password
    where = (f" (password from {'$' + pw.env if pw.env else ''}{' or ' if pw.env and pw.file else ''}"
             f"{pw.file or ''})") if pw else ""
    print(f"history:   {fleet.history.url}{where}")
    print(f"bundles:   {fleet.bundles}")
    for m in fleet.machines:
        exp = ", ".join(f"{k} {v}" for k, v in m.expect.model_dump(exclude_none=True).items()) or "no expectations"
        runs = ", ".join(f"{k} ({', '.join(names[k])})" for k in m.scenarios)
        print(f"machine:   {m.name}: {runs}; expects {exp}")
    return int(ExitCode.OK)


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise StressError(f"'{name}' is not installed: pip install 'gpu-stress[fleet]'", ExitCode.ENVIRONMENT)
    return found


def _run(cmd: list[str], what: str, *, redact: str | None = None) -> None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StressError(f"{what} failed: {exc}", ExitCode.ENVIRONMENT) from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        text = tail[0].replace(redact, "***") if redact else tail[0]
        raise StressError(f"{what} failed (exit {res.returncode}): {text}", ExitCode.ENVIRONMENT)


MASTER_CFG = '''# Written by gpu-stress fleet init. The fleet file says everything; this file only points at it.
# Worker passwords: secrets/worker-<machine> (mode 600). See docs/fleet.md.
from stress.fleet.master import configure

c = BuildmasterConfig = {{}}
configure(BuildmasterConfig, {fleet!r}, basedir=basedir)
'''


def init_command(args: argparse.Namespace) -> int:
    fleet = _load(args.fleet)
    master = Path(args.master).resolve()
    if (master / "master.cfg").exists():
        raise StressError(f"{master}: a master is already there (master.cfg exists); remove it or choose another --master")
    master.mkdir(parents=True, exist_ok=True)
    _run([_tool("buildbot"), "create-master", "-r", str(master)], "buildbot create-master")
    (master / "master.cfg").write_text(MASTER_CFG.format(fleet=str(Path(fleet.source))), encoding="utf-8")
    sec = master / "secrets"
    sec.mkdir(mode=0o700, exist_ok=True)
    os.chmod(sec, 0o700)
    passwords = {}
    for m in fleet.machines:
        if m.password is not None:  # the fleet file names its own place for it
            continue
        f = sec / f"worker-{m.name}"
        if not f.exists():
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24) + "\n")
        passwords[m.name] = f.read_text(encoding="utf-8").strip()
    print(f"master:  {master} (start it with: buildbot start {master})")
    hostport = f"{fleet.master.host}:{fleet.master.port}"
    for m in fleet.machines:
        if args.workers and m.name in passwords:
            wdir = Path(args.workers).resolve() / m.name
            if wdir.exists():
                raise StressError(f"{wdir}: already exists; remove it or choose another --workers")
            wdir.parent.mkdir(parents=True, exist_ok=True)
            _run([_tool("buildbot-worker"), "create-worker", "-r", str(wdir), hostport, m.name, passwords[m.name]],
                 f"buildbot-worker create-worker {m.name}", redact=passwords[m.name])
            print(f"worker:  {m.name}: {wdir} (start it with: buildbot-worker start {wdir})")
        else:
            src = f"{sec}/worker-{m.name}" if m.name in passwords else "its password (see the fleet file)"
            print(f"worker:  {m.name}: on that machine run: buildbot-worker create-worker ~/gpu-stress-worker "
                  f"{hostport} {m.name} PASSWORD   (PASSWORD: {src})")
    return int(ExitCode.OK)


def _history_and_fleet(args: argparse.Namespace):
    from stress.fleet.master import history_of
    from stress.fleet.schema import scenario_names

    fleet = _load(args.fleet) if args.fleet else None
    if args.history or fleet is None:
        from stress.history import history_location

        history = history_location(args.history)   # --history, else $STRESS_HISTORY_URL, else reports/history.db
    else:
        history = history_of(fleet)
    machines = [m.name for m in fleet.machines] if fleet else None
    scen = [n for key in fleet.scenarios for n in scenario_names(fleet)[key]] if fleet else None
    return fleet, history, machines, scen


def _matrix(args: argparse.Namespace) -> tuple[dict, object]:
    from stress.fleet.view import fleet_matrix
    from stress.history import query_runs

    fleet, history, machines, scen = _history_and_fleet(args)
    runs = query_runs(history, None)
    return fleet_matrix(runs, machines=machines, scenarios=scen), fleet


def status_command(args: argparse.Namespace) -> int:
    from stress.commands.history import _table
    from stress.fleet.records import HOST_STOPPED

    matrix, _ = _matrix(args)
    if args.json:
        print(json.dumps(matrix, indent=2, default=str))
        return int(ExitCode.OK)
    cells = {(c["machine"], c["scenario"]): c for c in matrix["cells"]}
    rows = []
    for m in matrix["machines"]:
        row = [m]
        for s in matrix["scenarios"]:
            c = cells[(m, s)]
            if not c["runs"]:
                row.append("-")
                continue
            last = c["last"]
            v = "HOST STOPPED RESPONDING" if last["verdict"] == HOST_STOPPED else (last["verdict"] or "?")
            when = time.strftime("%m-%d %H:%M", time.localtime(last["ended_at"] or last["started_at"] or 0))
            inc = c["incidence"]
            row.append(f"{v} {when} ({inc['reproduced']}/{inc['conclusive']} of {c['runs']}"
                       + (f", stopped {c['host_stopped']}x" if c["host_stopped"] else "") + ")")
        rows.append(row)
    print(_table(rows, ["machine", *matrix["scenarios"]]) if rows else "no machines and no runs")
    print("cells: last verdict, when (reproduced/conclusive of runs)")
    return int(ExitCode.OK)


def view_command(args: argparse.Namespace) -> int:
    from stress.fleet.view import render_html

    matrix, fleet = _matrix(args)
    if args.json:
        print(json.dumps(matrix, indent=2, default=str))
        return int(ExitCode.OK)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    title = f"gpu-stress fleet {fleet.fleet}" if fleet else "gpu-stress fleet"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(matrix, title=title, page_dir=out.resolve().parent), encoding="utf-8")
    os.replace(tmp, out)
    print(f"fleet view: {out} ({len(matrix['machines'])} machines x {len(matrix['scenarios'])} scenarios, "
          f"{matrix['runs']} runs)")
    return int(ExitCode.OK)


def pack_command(args: argparse.Namespace) -> int:
    from stress.fleet.records import empty_pack, pack

    state = Path(args.state)
    if args.leftover and (Path(args.leftover).exists() or not (state / "summary.json").is_file()):
        empty_pack(Path(args.out), machine=args.machine, why="nothing left over")
        print("packed:  nothing left over by the previous build")
        return int(ExitCode.OK)
    man = pack(state, Path(args.out), machine=args.machine)
    print(f"packed:  {len(man['runs'])} run(s) of soak {man['soak_id']} ({man['status']}) into {args.out}")
    for r in man["runs"]:
        print(f"  {r['run_id']}: {r['scenario']}: {r['verdict']}" + ("" if r["report"] else " (no report)"))
    return int(ExitCode.OK)


def record_command(args: argparse.Namespace) -> int:
    from stress.fleet.records import record_host_stopped, record_upload

    fleet, history, _, _ = _history_and_fleet(args)
    done = 0
    for up in map(Path, args.uploads):
        note, man = up / "host-stopped.json", up / "pack.json"
        if note.is_file():
            n = json.loads(note.read_text(encoding="utf-8"))
            record_host_stopped(history, machine=n["machine"], scenario=n.get("scenario"), build=n["build"],
                                started_at=n.get("started_at"), last_event_at=n.get("last_event_at"),
                                reason=n["reason"], last_output=n.get("last_output"), note_dir=up)
            print(f"recorded: {up}: {n['machine']} host stopped responding")
            done += 1
        elif man.is_file():
            machine = json.loads(man.read_text(encoding="utf-8")).get("machine") or up.parent.name
            expect = fleet.machine(machine).expect.model_dump(exclude_none=True) if fleet and machine in \
                {m.name for m in fleet.machines} else None
            rec = record_upload(up, history, machine=machine, expect=expect)
            print(f"recorded: {up}: {len(rec.runs)} run(s) of {machine}")
            for line in rec.mismatches + rec.problems:
                print(f"  {line}")
            done += 1
        else:
            raise StressError(f"{up}: neither pack.json nor host-stopped.json there (not a fleet upload)")
    return int(ExitCode.OK if done else ExitCode.BAD_INPUT)


def force_command(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    fleet = _load(args.fleet)
    names = args.machines or [m.name for m in fleet.machines]
    for n in names:
        if n not in {m.name for m in fleet.machines}:
            raise StressError(f"{n}: no such machine in {args.fleet} ({', '.join(m.name for m in fleet.machines)})")
    if args.iterations is not None and args.iterations < 1:
        raise StressError(f"--iterations must be at least 1 (got {args.iterations})")
    if args.duration:
        from stress.scenario import parse_duration

        try:
            parse_duration(args.duration)
        except ValueError as exc:
            raise StressError(f"--duration {args.duration!r}: {exc}") from None
    www = args.www or (f"http://{fleet.master.www}" if fleet.master.www else None)
    if not www:
        raise StressError("the fleet file has master.www: null; give --www URL or force from Buildbot's own tools")
    body = json.dumps({"jsonrpc": "2.0", "method": "force", "id": 1,
                       "params": {"builderNames": names, "reason": args.reason,
                                  "soak_iterations": str(args.iterations) if args.iterations else "",
                                  "soak_duration": args.duration or ""}}).encode()
    req = urllib.request.Request(www.rstrip("/") + "/api/v2/forceschedulers/force", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read(1 << 20) or b"{}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StressError(f"{www}: the master did not take the request ({exc})", ExitCode.ENVIRONMENT) from None
    if answer.get("error"):
        raise StressError(f"{www}: {answer['error'].get('message', answer['error'])}", ExitCode.ENVIRONMENT)
    print(f"forced:  {', '.join(names)} (build set {answer.get('result', ['?'])[0]})")
    return int(ExitCode.OK)
