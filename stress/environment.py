"""Environment snapshot for run directories and reports. Never imports torch; never raises.

Each collector is small and may fail on its own (pyperf's metadata pattern): a failure becomes
``{"error": "..."}`` under its key, and the rest of the snapshot is still taken.
"""
from __future__ import annotations

import getpass
import os
import platform
import json
import re
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

LIBRARIES = ("torch", "diffusers", "transformers", "compel", "accelerate", "safetensors", "nvidia-ml-py",
             "psutil", "pillow", "mss", "numpy", "pydantic", "gpu-stress")


def _os_release() -> dict:
    out = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            for line in Path(path).read_text().splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    out[k] = v.strip().strip('"')
            break
        except OSError:
            continue
    return {"pretty_name": out.get("PRETTY_NAME"), "id": out.get("ID"), "version_id": out.get("VERSION_ID")}


def _os() -> dict:
    u = platform.uname()
    return {"system": u.system, "release": u.release, "version": u.version, "machine": u.machine,
            "distribution": _os_release() if u.system == "Linux" else None}


def _cpu() -> dict:
    model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {"model": model, "logical_cores": psutil.cpu_count(), "physical_cores": psutil.cpu_count(logical=False)}


def _memory() -> dict:
    import psutil

    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    return {"total": vm.total, "available": vm.available, "swap_total": sw.total}


def _libraries() -> dict:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _python() -> dict:
    return {"version": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable}


def _gpu() -> dict:
    from stress.hw.nvml import gpu_inventory

    return gpu_inventory()


def nvidia_kernel_module() -> dict | None:
    """Which NVIDIA kernel module is loaded (open or proprietary), from /proc; None without one."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    first = text.splitlines()[0] if text else ""
    flavour = "open" if "Open Kernel Module" in first else "proprietary"
    return {"flavour": flavour, "version_line": first.strip()}


def _display() -> dict:
    from stress.hw.host import display_session

    return display_session()


def _host() -> dict:
    from stress.hw.machine_id import machine_id

    # machine_id: a salted hash of /etc/machine-id (stress.hw.machine_id); reports mask it like the host name
    return {"hostname": socket.gethostname(), "user": getpass.getuser(), "home": str(Path.home()),
            "machine_id": machine_id()}


def _git() -> dict:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists() or not shutil.which("git"):
        return {"commit": None}
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return {"commit": rev or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}


# ---- NVIDIA's functional-bug template: facts a driver maintainer asks for ----
NVIDIA_MODULES = ("nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm")
SUSPEND_SERVICES = ("nvidia-suspend.service", "nvidia-hibernate.service", "nvidia-resume.service",
                    "nvidia-suspend-then-hibernate.service", "nvidia-persistenced.service")


def _fact(value: Any = None, *, why: str | None = None, command: str | None = None) -> dict:
    """One template value, or why it is missing and the command that gets it."""
    return {"value": value} if value is not None else {"value": None, "missing": why, "command": command}


def _read_text(path: Path) -> tuple[str | None, str | None]:
    try:
        return path.read_text(errors="replace"), None
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except PermissionError:
        return None, f"{path}: permission denied"
    except OSError as exc:
        return None, f"{path}: {exc.strerror}"


def _command(argv: list[str], timeout: float = 10.0) -> tuple[str | None, str | None]:
    if not shutil.which(argv[0]):
        return None, f"{argv[0]} not installed"
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"{' '.join(argv)} did not answer within {timeout:.0f} s"
    except OSError as exc:
        return None, f"{argv[0]}: {exc.strerror or exc}"
    out = (r.stdout or "").strip()
    if r.returncode != 0 and not out:
        err = (r.stderr or "").strip().splitlines()
        return None, (err[0] if err else f"exit {r.returncode}")[:300]
    return out, None


def nvidia_template_facts(proc: Path = Path("/proc"), sys_root: Path = Path("/sys"),
                          command: Callable[[list[str]], tuple[str | None, str | None]] = _command) -> dict:
    """Kernel command line, NVIDIA module parameters (/proc/driver/nvidia/params and
    /sys/module/nvidia*/parameters, nvidia-drm modeset/fbdev), PreserveVideoMemoryAllocations, the
    nvidia suspend services' state and ``nvidia-smi -L``: each value, or why not and how to get it."""
    facts: dict[str, Any] = {}
    text, why = _read_text(proc / "cmdline")
    facts["kernel_cmdline"] = _fact(text.strip() if text else None, why=why, command="cat /proc/cmdline")
    text, why = _read_text(proc / "driver" / "nvidia" / "params")
    params = None
    if text is not None:
        params = {}
        for line in text.splitlines():
            k, sep, v = line.partition(":")
            if sep and k.strip():
                params[k.strip()] = v.strip().strip('"')
    facts["nvidia_params"] = _fact(params, why=why and f"{why} (the nvidia module is not loaded)",
                                   command="cat /proc/driver/nvidia/params")
    pvma = (params or {}).get("PreserveVideoMemoryAllocations")
    facts["preserve_video_memory_allocations"] = _fact(
        pvma, why="not in /proc/driver/nvidia/params" if params is not None else why,
        command="grep PreserveVideoMemoryAllocations /proc/driver/nvidia/params")
    modules: dict[str, Any] = {}
    for mod in NVIDIA_MODULES:
        pdir = sys_root / "module" / mod / "parameters"
        if not pdir.is_dir():
            modules[mod] = _fact(why=f"{pdir} does not exist (module {mod} not loaded)",
                                 command=f"modinfo -p {mod}; cat /sys/module/{mod}/parameters/*")
            continue
        values = {}
        for f in sorted(pdir.iterdir()):
            t, _ = _read_text(f)
            values[f.name] = t.strip() if t is not None else None     # None: not readable by this user
        modules[mod] = _fact(values)
    facts["module_parameters"] = modules
    for name in ("modeset", "fbdev"):
        t, why = _read_text(sys_root / "module" / "nvidia_drm" / "parameters" / name)
        facts[f"nvidia_drm_{name}"] = _fact(t.strip() if t else None, why=why,
                                            command=f"cat /sys/module/nvidia_drm/parameters/{name}")
    services = {}
    for svc in SUSPEND_SERVICES:
        enabled, why_e = command(["systemctl", "is-enabled", svc])
        active, why_a = command(["systemctl", "is-active", svc])
        if enabled is None and active is None:
            services[svc] = _fact(why=why_e or why_a, command=f"systemctl status {svc}")
        else:
            services[svc] = _fact({"enabled": enabled, "active": active})
    facts["suspend_services"] = services
    out, why = command(["nvidia-smi", "-L"])
    facts["nvidia_smi_L"] = _fact(out.splitlines() if out else None, why=why, command="nvidia-smi -L")
    facts["displays"] = _displays(command)
    return facts


_XRANDR_OUTPUT = re.compile(r"^(\S+) connected(?: primary)? (\d+)x(\d+)\+\d+\+\d+")
_XRANDR_MODE = re.compile(r"^\s+(\d+)x(\d+)\S*\s+(.*)$")


def parse_xrandr(text: str) -> list[dict]:
    """Connected outputs of ``xrandr --query``: name, current size and refresh rate (the ``*`` mode)."""
    out: list[dict] = []
    cur: dict | None = None
    for line in text.splitlines():
        m = _XRANDR_OUTPUT.match(line)
        if m:
            cur = {"name": m.group(1), "width": int(m.group(2)), "height": int(m.group(3)), "refresh_hz": None}
            out.append(cur)
            continue
        if not line.startswith(" "):
            cur = None
            continue
        mm = _XRANDR_MODE.match(line)
        if cur is not None and mm and "*" in mm.group(3):
            rate = next((float(x.rstrip("*+")) for x in mm.group(3).split() if "*" in x), None)
            cur["refresh_hz"] = rate if rate else None     # Xvfb reports 0.00: no refresh rate
    return out


def _displays(command: Callable[[list[str]], tuple[str | None, str | None]]) -> dict:
    """The displays and their refresh rates, as the display server reports them (X11: xrandr; sway:
    swaymsg); missing, with the command, where neither can answer."""
    if os.environ.get("DISPLAY"):
        out, why = command(["xrandr", "--query"])
        if out:
            return _fact(parse_xrandr(out))
    elif os.environ.get("SWAYSOCK"):
        out, why = command(["swaymsg", "-t", "get_outputs", "-r"])
        if out:
            try:
                outs = json.loads(out)
                return _fact([{"name": o.get("name"), "width": (o.get("current_mode") or {}).get("width"),
                               "height": (o.get("current_mode") or {}).get("height"),
                               "refresh_hz": round(((o.get("current_mode") or {}).get("refresh") or 0) / 1000, 3)
                               or None} for o in outs if isinstance(o, dict) and o.get("active")])
            except ValueError:
                why = "swaymsg gave no JSON"
    else:
        why = "no DISPLAY or SWAYSOCK in the environment"
    return _fact(why=why, command="xrandr --query   (X11; on Wayland: wlr-randr, or the desktop's display settings)")


def missing_facts(facts: dict, prefix: str = "") -> list[dict]:
    """Every missing value of :func:`nvidia_template_facts`: ``{"fact", "why", "command"}``."""
    out = []
    for key, v in facts.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict) and "value" in v:
            if v["value"] is None:
                out.append({"fact": name, "why": v.get("missing"), "command": v.get("command")})
        elif isinstance(v, dict):
            out.extend(missing_facts(v, prefix=f"{name}."))
    return out


COLLECTORS: dict[str, Callable[[], Any]] = {
    "os": _os, "cpu": _cpu, "memory": _memory, "python": _python, "libraries": _libraries,
    "gpu": _gpu, "display": _display, "host": _host, "stress_git": _git,
    "nvidia_template": nvidia_template_facts,
}


def collect() -> dict:
    env: dict[str, Any] = {}
    for key, fn in COLLECTORS.items():
        try:
            env[key] = fn()
        except Exception as exc:  # noqa: BLE001 - one failing collector must not lose the others
            env[key] = {"error": f"{type(exc).__name__}: {exc}"}
    module = nvidia_kernel_module()
    if isinstance(env.get("gpu"), dict) and module:
        env["gpu"]["kernel_module"] = module["flavour"]
        env["gpu"]["kernel_module_version"] = module["version_line"]
    env["env_vars"] = {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF",
                                                  "XDG_SESSION_TYPE", "DISPLAY", "WAYLAND_DISPLAY",
                                                  "XDG_CURRENT_DESKTOP", "__GL_SYNC_TO_VBLANK")
                       if k in os.environ}
    return env
