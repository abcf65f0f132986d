"""Environment snapshot for run directories and reports. Never imports torch; never raises.

Each collector is small and may fail on its own (pyperf's metadata pattern): a failure becomes
``{"error": "..."}`` under its key, and the rest of the snapshot is still taken.
"""
from __future__ import annotations

import getpass
import os
import platform
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
    return {"hostname": socket.gethostname(), "user": getpass.getuser(), "home": str(Path.home())}


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


COLLECTORS: dict[str, Callable[[], Any]] = {
    "os": _os, "cpu": _cpu, "memory": _memory, "python": _python, "libraries": _libraries,
    "gpu": _gpu, "display": _display, "host": _host, "stress_git": _git,
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
