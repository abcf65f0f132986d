"""``stress doctor``: before a long session, say what will and will not be recorded here, and why.

Each check says what it found and, when something is missing, the fix. The essentials (Python
dependencies, torch importable, more than 1 GiB free in the artifacts folder, that folder writable)
decide the exit status: 0 when they are there, 3 (ENVIRONMENT) otherwise. Everything else (no GPU, no
kernel-log access, no display) only limits what a run records. torch is never imported here: its
version and CUDA state come from a ``python -m stress.workload.torch_probe`` subprocess with a timeout.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from stress.proc import child_env
from stress.errors import ExitCode

MIN_FREE_BYTES = 1 << 30

# Imported by the supervisor itself (module name, distribution name).
SUPERVISOR_DEPS = (("pydantic", "pydantic"), ("yaml", "PyYAML"), ("psutil", "psutil"), ("PIL", "pillow"),
                   ("mss", "mss"), ("pynvml", "nvidia-ml-py"), ("numpy", "numpy"), ("scipy", "scipy"),
                   ("matplotlib", "matplotlib"), ("jinja2", "Jinja2"), ("sqlalchemy", "SQLAlchemy"),
                   ("alembic", "alembic"))   # the history (psycopg only for a PostgreSQL one: docs/history.md)
# Imported only by the worker, next to torch: checked in the torch subprocess.
WORKER_DEPS = (("diffusers", "diffusers"), ("transformers", "transformers"), ("compel", "compel"),
               ("safetensors", "safetensors"), ("accelerate", "accelerate"))

@dataclass
class Check:
    key: str
    title: str
    status: str   # "ok", "warn" (works, with limits), "missing" (not recorded), "fail" (essential), "skipped"
    summary: str
    fix: str | None = None
    essential: bool = False
    details: dict = field(default_factory=dict)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "doctor", help="say what will and will not be recorded on this machine, and why",
        description="Check this machine before a long session: NVML and driver, Xid events, kernel-log "
                    "access, display session, screenshot backend, torch/CUDA, disk. Exit 0 when the "
                    "essentials are there, 3 otherwise.")
    p.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    p.add_argument("--artifacts", default="artifacts", metavar="DIR",
                   help="where runs will be written (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="skip importing torch and the worker libraries (the slow part, several seconds)")
    p.add_argument("--torch-timeout", type=float, default=180.0, metavar="S",
                   help="seconds allowed for importing torch and the worker libraries (default: %(default)s)")
    p.set_defaults(func=run)


# ---- checks ----
def check_python() -> Check:
    versions, broken = {}, {}
    for mod, dist in SUPERVISOR_DEPS:
        try:
            importlib.import_module(mod)
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                versions[dist] = "?"
        except Exception as exc:  # noqa: BLE001 - a broken binary wheel raises more than ImportError
            broken[dist] = f"{type(exc).__name__}: {exc}"
    py = sys.version.split()[0]
    if broken:
        return Check("python", "Python dependencies", "fail",
                     f"Python {py}; not importable: " + "; ".join(f"{k} ({v})" for k, v in broken.items()),
                     fix=f"{sys.executable} -m pip install " + " ".join(broken) + "   (or: make setup)",
                     essential=True, details={"python": py, "versions": versions, "broken": broken})
    return Check("python", "Python dependencies", "ok",
                 f"Python {py}; " + ", ".join(f"{k} {v}" for k, v in versions.items()),
                 essential=True, details={"python": py, "versions": versions})


def run_torch_probe(timeout: float) -> dict:
    """torch + worker libraries, imported in a subprocess (the doctor never imports torch)."""
    try:
        r = subprocess.run([sys.executable, "-m", "stress.workload.torch_probe", *(f"{m}:{d}" for m, d in WORKER_DEPS)],
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=child_env())
    except subprocess.TimeoutExpired:
        return {"torch": None, "error": f"importing torch took longer than {timeout:.0f} s", "deps": {}}
    except OSError as exc:
        return {"torch": None, "error": f"cannot start {sys.executable}: {exc}", "deps": {}}
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("STRESS-DOCTOR "):
            return json.loads(line[len("STRESS-DOCTOR "):])
    tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"exit status {r.returncode}"]
    return {"torch": None, "error": tail[0], "deps": {}}


def check_torch(probe: dict) -> list[Check]:
    checks = []
    if not probe.get("torch"):
        checks.append(Check("torch", "torch", "fail", f"torch is not importable: {probe.get('error')}",
                            fix="make setup   (installs the pinned torch into .venv)", essential=True))
    else:
        cuda = probe.get("cuda_build")
        if probe.get("cuda_available"):
            devs = ", ".join(probe.get("devices") or [])
            checks.append(Check("torch", "torch / CUDA", "ok",
                                f"torch {probe['torch']}, CUDA {cuda}, cuDNN {probe.get('cudnn')}; GPUs: {devs}",
                                essential=True, details=probe))
        else:
            why = ("this torch is a CPU-only build" if not cuda
                   else f"torch was built for CUDA {cuda} but sees no usable GPU")
            checks.append(Check(
                "torch", "torch / CUDA", "warn",
                f"torch {probe['torch']}; {why}: the workload runs on the CPU, so it cannot load the GPU "
                "and reproduce a driver regression (fine for a smoke test)",
                fix=("install a CUDA build of torch into .venv (the CUDA wheel of the pinned version, "
                     "e.g. via make setup TORCH_SPEC=...) and check that the NVIDIA driver is loaded (nvidia-smi)"),
                essential=True, details=probe))
    deps = probe.get("deps") or {}
    broken = {m: d.get("error") for m, d in deps.items() if not d.get("ok")}
    if probe.get("torch") and (broken or not deps):
        checks.append(Check("worker-deps", "Worker libraries", "fail",
                            "not importable next to torch: " + "; ".join(f"{k} ({v})" for k, v in broken.items()),
                            fix="make setup   (or pip install " + " ".join(broken) + ")", essential=True,
                            details={"deps": deps}))
    elif deps:
        checks.append(Check("worker-deps", "Worker libraries", "ok",
                            ", ".join(f"{m} {d.get('version')}" for m, d in deps.items()), essential=True,
                            details={"deps": deps}))
    return checks


def check_nvml() -> tuple[list[Check], dict]:
    from stress.hw.nvml import gpu_inventory

    inv = gpu_inventory()
    if not inv["available"]:
        reason = inv["reason"] or "unknown"
        fix = ("pip install nvidia-ml-py (make setup)" if "not importable" in reason
               else "install the NVIDIA driver and reboot; check with nvidia-smi")
        return [Check("nvml", "NVML / driver", "missing",
                      f"unavailable: {reason}. No GPU memory, clocks, temperatures, power or GPU processes "
                      "will be recorded", fix=fix, details=inv),
                Check("xid-events", "Xid events (NVML)", "missing",
                      "unavailable without NVML; Xids can still be read from the kernel log", details={})], inv
    gpus = inv["gpus"]
    names = "; ".join(f"GPU {g['index']}: {g.get('name')} ({g.get('bus_id')})" for g in gpus)
    nvml = Check("nvml", "NVML / driver", "ok",
                 f"driver {inv['driver']}, CUDA driver {inv['cuda_driver']}; {names}", details=inv)
    support = {g["index"]: g.get("xid_events") for g in gpus}
    if all(v is True for v in support.values()):
        xid = Check("xid-events", "Xid events (NVML)", "ok", "critical Xid events supported on every GPU",
                    details={"support": support})
    else:
        bad = ", ".join(f"GPU {i}: {'no' if v is False else 'unknown'}" for i, v in support.items() if v is not True)
        xid = Check("xid-events", "Xid events (NVML)", "warn",
                    f"not available on {bad}; Xids are still read from the kernel log if it is readable",
                    details={"support": support})
    return [nvml, xid], inv


def check_kernel_log() -> Check:
    from stress.hw import kernel_log

    source, attempts = kernel_log.probe()
    details = {"attempts": [a.as_dict() for a in attempts], "dmesg_restrict": kernel_log.dmesg_restrict(),
               "cap_syslog": kernel_log.has_cap_syslog(), "groups": kernel_log.user_groups()}
    failed = [a for a in attempts if not a.ok]
    before = "; ".join(f"{a.via}: {a.reason}" for a in failed)
    if source is not None:
        details["via"] = source.via
        summary = f"followed through {source.via}" + (f" (skipped {before})" if failed else "")
        return Check("kernel-log", "Kernel log (NVRM/Xid/DRM lines)", "ok", summary, details=details)
    fixes = [f"{a.via}: {a.fix}" for a in failed if a.fix]
    return Check("kernel-log", "Kernel log (NVRM/Xid/DRM lines)", "missing",
                 f"not readable ({before}): driver messages and Xids from the kernel log will not be recorded",
                 fix=" | ".join(fixes) or None, details=details)


def check_freeze_records() -> Check:
    from stress.previous_boot import readiness

    r = readiness()
    title = "Freeze records"
    if r["persistent_journal"] and r["pstore"]:
        return Check("freeze-records", title, "ok", "the kernel log of a boot that froze, and pstore, are kept",
                     details=r)
    lost = [n for n, ok in (("the kernel log of the boot", r["persistent_journal"]), ("pstore", r["pstore"])) if not ok]
    return Check("freeze-records", title, "missing", f"after a hard freeze {' and '.join(lost)} would be lost (persistent journal, pstore)",
                 fix=r["fix"], details=r)


def check_display() -> tuple[Check, dict]:
    from stress.hw.host import display_session

    s = display_session()
    under = s.get("under_test") or []
    if under:   # found from the display's own sockets: these are what the probes will talk to
        who = ", ".join(f"{p['role']} {p['name']}{' ' + p['version'] if p.get('version') else ''} (pid {p['pid']})"
                        for p in under)
        if s.get("context"):
            who += f"; also running, not under test: {', '.join(sorted({c['name'] for c in s['context']}))}"
    else:
        who = ", ".join(f"{k} {s[k]}" for k in ("display_server", "compositor") if s.get(k)) or "no display server found"
    if s["type"] in ("x11", "wayland"):
        where = s.get("display") if s["type"] == "x11" else s.get("wayland_display")
        return Check("display", "Display session", "ok", f"{s['type']} ({where}); {who}", details=s), s
    return Check("display", "Display session", "missing",
                 f"no graphical session ({s['type']}: DISPLAY and WAYLAND_DISPLAY are not set; {who}): the desktop "
                 "probes will record 'unavailable' and a run's verdict will be inconclusive",
                 fix="run stress from a terminal inside the desktop session, or set probes.display "
                     "(e.g. ':0'); for a smoke test: Xvfb :99 & DISPLAY=:99 gpu-stress run ...",
                 details=s), s


def _x11_socket(display: str | None) -> bool | None:
    if not display or not display.startswith(":"):
        return None   # remote or unusual DISPLAY: cannot tell
    num = display[1:].split(".")[0]
    return os.path.exists(f"/tmp/.X11-unix/X{num}")


_BACKEND_NAMES = {"portal": "xdg-desktop-portal", "weston": "weston-screenshooter"}


def _backend_ready(name: str, comp: str | None) -> tuple[bool, str | None, str | None]:
    """Whether the programs a Wayland capture backend needs are here: ``(ok, why not, fix)``."""
    bus = bool(os.environ.get("DBUS_SESSION_BUS_ADDRESS") or os.environ.get("XDG_RUNTIME_DIR"))
    if name == "grim":
        ok = bool(shutil.which("grim"))
        return ok, None if ok else "grim is not installed", \
            None if ok else f"sudo apt-get install grim   (the simplest capture on {comp or 'wlroots'})"
    if name == "weston":
        ok = bool(shutil.which("weston-screenshooter"))
        return ok, None if ok else "weston-screenshooter is not installed", \
            "start weston with --debug (it only lets clients take screenshots then)" + ("" if ok else "; sudo apt-get install weston")
    if name == "kwin":
        ok = bool(shutil.which("gdbus")) and bus
        return ok, None if ok else "gdbus or the session bus is missing", \
            None if ok else "sudo apt-get install libglib2.0-bin; run inside the Plasma session"
    portal_bin = next((p for p in ("/usr/libexec/xdg-desktop-portal", "/usr/lib/xdg-desktop-portal")
                       if os.path.exists(p)), None)
    problems = [text for bad, text in ((not shutil.which("gdbus"), "gdbus is not installed"),
                                       (not bus, "there is no D-Bus session bus"),
                                       (not portal_bin, "xdg-desktop-portal is not installed")) if bad]
    return not problems, "; ".join(problems) or None, \
        None if not problems else ("sudo apt-get install xdg-desktop-portal libglib2.0-bin and your desktop's portal "
                                   "(xdg-desktop-portal-gnome, -kde or -wlr)")


def screenshot_backend(session: dict) -> dict:
    """Which capture backend the screenshot probe would use here (as stress.probes.capture chooses)."""
    kind = session["type"]
    if kind == "x11":
        try:
            importlib.import_module("mss")
            ok, reason = True, None
        except Exception as exc:  # noqa: BLE001
            ok, reason = False, f"mss not importable: {exc}"
        sock = _x11_socket(session.get("display"))
        if ok and sock is False:
            ok, reason = False, f"no X server socket for DISPLAY={session.get('display')}"
        return {"backend": "mss", "ok": ok, "reason": reason,
                "fix": None if ok else "pip install mss / check DISPLAY"}
    if kind == "wayland":
        # The order is the probe's own (stress.probes.capture.wayland_backends); only readiness is checked here.
        from stress.probes.capture import wayland_backends

        comp = session.get("compositor")
        order = wayland_backends(comp)
        if not order:
            return {"backend": None, "ok": False, "reason": f"{comp} without gnome-shell offers no screenshot "
                    "interface to clients", "fix": "probe a gnome-shell session (its portal answers) instead"}
        fixes: list[str] = []
        reasons: list[str] = []
        for name in order:
            ok, reason, fix = _backend_ready(name, comp)
            if ok:
                return {"backend": _BACKEND_NAMES.get(name, name), "ok": True, "reason": None, "fix": None}
            reasons.append(reason or f"{name} cannot work here")
            if fix:
                fixes.append(fix)
        return {"backend": _BACKEND_NAMES.get(order[-1], order[-1]), "ok": False, "reason": "; ".join(reasons),
                "fix": " ; ".join(fixes) or None}
    return {"backend": None, "ok": False, "reason": "no display session",
            "fix": "run inside the desktop session (see Display session)"}


def probe_kinds(session: dict, shot: dict) -> dict[str, str | None]:
    """Each probe kind -> None when it will run here, else why it will not."""
    try:
        importlib.import_module("_tkinter")
        tk = None
    except ImportError:
        tk = "this Python has no tkinter (python3-tk / libtk8.6)"
    kinds: dict[str, str | None] = {"decode": None}
    kinds["screenshot"] = None if shot["ok"] else (shot["reason"] or "no screenshot backend")
    x = session.get("display")
    kinds["display"] = tk or (None if x and shot["ok"] else
                              "needs X11 or Xwayland (DISPLAY)" if not x else "no screenshot backend")
    if session["type"] == "wayland":
        kinds["display-wayland"] = None if shot["ok"] else "no screenshot backend on this compositor"
    else:
        kinds["display-wayland"] = "needs a Wayland session"
    return kinds


def check_probe_kinds(session: dict) -> Check:
    kinds = probe_kinds(session, screenshot_backend(session))
    works = [k for k, why in kinds.items() if why is None]
    not_here = [f"{k} ({why})" for k, why in kinds.items() if why is not None]
    comp = session.get("compositor") or session.get("display_server") or "no compositor"
    summary = f"on {comp}: {', '.join(works) or 'none'} will run"
    if not_here:
        summary += f"; not here: {'; '.join(not_here)}"
    return Check("probe-kinds", "Probe kinds", "ok" if kinds["screenshot"] is None else "missing", summary,
                 details={"kinds": kinds, "compositor": comp})


def check_screenshot(session: dict) -> Check:
    b = screenshot_backend(session)
    if b["backend"] is None:
        why = b["reason"] if session.get("type") in ("x11", "wayland") else "without a display session"
        return Check("screenshot", "Screenshot backend", "missing",
                     f"none: no screenshots can be taken ({why})", fix=b["fix"], details=b)
    if b["ok"]:
        return Check("screenshot", "Screenshot backend", "ok", f"{b['backend']}", details=b)
    return Check("screenshot", "Screenshot backend", "missing", f"{b['backend']} would be used, but {b['reason']}",
                 fix=b["fix"], details=b)


def check_disk(artifacts: Path) -> list[Check]:
    probe = artifacts
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        disk = Check("disk", "Free disk (artifacts)", "fail", f"cannot measure free space at {probe}: {exc}",
                     essential=True)
    else:
        gib = free / (1 << 30)
        if free < MIN_FREE_BYTES:
            disk = Check("disk", "Free disk (artifacts)", "fail",
                         f"{gib:.2f} GiB free at {artifacts} (needs more than 1 GiB)",
                         fix="free some space or point --artifacts / the run at another disk", essential=True,
                         details={"free_bytes": free})
        else:
            disk = Check("disk", "Free disk (artifacts)", "ok", f"{gib:.1f} GiB free at {artifacts}",
                         essential=True, details={"free_bytes": free})
    try:
        artifacts.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=artifacts, prefix=".doctor-", delete=True) as fh:
            fh.write(b"ok")
            fh.flush()
            os.fsync(fh.fileno())
        writable = Check("artifacts", "Artifacts folder writable", "ok", f"{artifacts.resolve()}", essential=True)
    except OSError as exc:
        writable = Check("artifacts", "Artifacts folder writable", "fail",
                         f"cannot write in {artifacts}: {exc.strerror or exc}",
                         fix="choose a writable folder with --artifacts, or fix its permissions", essential=True)
    return [disk, writable]


def gather(artifacts: Path, torch_timeout: float, *, quick: bool = False) -> dict:
    checks: list[Check] = [check_python()]
    if quick:
        torch_probe: dict = {}
        checks.append(Check("torch", "torch / CUDA", "skipped", "not checked (--quick)", essential=True))
    else:
        torch_probe = run_torch_probe(torch_timeout)
        checks += check_torch(torch_probe)
    nvml_checks, inv = check_nvml()
    checks += nvml_checks
    checks.append(check_kernel_log())
    checks.append(check_freeze_records())
    display, session = check_display()
    checks.append(display)
    checks.append(check_screenshot(session))
    checks.append(check_probe_kinds(session))
    checks += check_disk(artifacts)
    ok = not any(c.essential and c.status == "fail" for c in checks)
    by = {c.key: c for c in checks}
    records = {
        "nvml": by["nvml"].status == "ok",
        "xid_events": by["xid-events"].status == "ok",
        "kernel_log": by["kernel-log"].details.get("via"),
        "host": True,
        "allocator": None if quick else "cuda" if torch_probe.get("cuda_available") else "cpu-rss",
        "screenshots": by["screenshot"].details.get("backend") if by["screenshot"].status == "ok" else None,
        "desktop_probes": by["display"].status == "ok",
    }
    return {"ok": ok, "exit_code": int(ExitCode.OK if ok else ExitCode.ENVIRONMENT), "records": records,
            "checks": [asdict(c) for c in checks]}


_MARK = {"ok": "ok", "warn": "warn", "missing": "MISSING", "fail": "FAIL", "skipped": "skipped"}


def _print_human(report: dict) -> None:
    out = sys.stdout
    print("gpu-stress doctor: what a run will record on this machine\n", file=out)
    for c in report["checks"]:
        print(f"  {_MARK[c['status']]:<8}{c['title']:<34}{c['summary']}", file=out)
        if c["fix"] and c["status"] != "ok":
            print(f"  {'':<8}{'':<34}fix: {c['fix']}", file=out)
    r = report["records"]
    print("\nRecorded during a run:", file=out)
    xid_from = [w for w, on in (("NVML events", r["xid_events"]), ("the kernel log", r["kernel_log"])) if on]
    lines = [
        ("GPU state (NVML)", "yes" if r["nvml"] else "no"),
        ("Xid errors", "from " + " and ".join(xid_from) if xid_from else "no"),
        ("kernel log", f"yes, through {r['kernel_log']}" if r["kernel_log"] else "no"),
        ("host memory, load, processes", "yes"),
        ("allocator", {"cuda": "CUDA allocator statistics", "cpu-rss": "worker RSS only (no CUDA)"}.get(
            r["allocator"], "not checked (--quick)")),
        ("screenshots", f"yes, with {r['screenshots']}" if r["screenshots"] else "no"),
        ("desktop probes", "yes" if r["desktop_probes"] else "no (no display session)"),
    ]
    for what, val in lines:
        print(f"  {what + ':':<32}{val}", file=out)
    if report["ok"]:
        print("\nEssentials are in place: runs can start (anything marked MISSING only limits what is recorded).",
              file=out)
    else:
        bad = [c["title"] for c in report["checks"] if c["essential"] and c["status"] == "fail"]
        print(f"\nEssentials missing: {', '.join(bad)}. Fix them before a run (exit status 3).", file=out)


def run(args: argparse.Namespace) -> int:
    report = gather(Path(args.artifacts), args.torch_timeout, quick=args.quick)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_human(report)
    return report["exit_code"]


__all__ = ["register", "run", "gather", "screenshot_backend", "Check"]
