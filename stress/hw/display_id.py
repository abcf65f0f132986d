"""Which processes are *behind the display the probes use*: the X server that owns ``$DISPLAY`` and the
compositor that owns ``$WAYLAND_DISPLAY``, found from the sockets themselves, never from process names.

- X11: the pid in the lock file ``/tmp/.X<n>-lock``, checked against the peer of a connection to the
  server's socket (``SO_PEERCRED`` on ``/tmp/.X11-unix/X<n>``, or the abstract ``@/tmp/.X11-unix/X<n>``).
  When a Wayland compositor listens on that socket for its Xwayland (wlroots, mutter, kwin start
  Xwayland on demand), the ``Xwayland`` process serving ``:<n>`` is recorded too.
- Wayland: the peer of a connection to ``$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY`` (or an absolute path).

These are the processes *under test*: their exit or restart is evidence. Any other display server or
compositor running on the machine (another user's session, another job's Xvfb) is context only.
Nothing here imports psutil or numpy: the probe child uses it to choose a capture backend.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
from pathlib import Path

_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)*")


def peer_pid(address: str) -> int | None:
    """Pid of the process that listens on a Unix socket (``\\0``-prefixed: abstract), via SO_PEERCRED."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(address)
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                            struct.calcsize("3i")))
        return pid if pid > 0 else None   # 0: the peer is in another pid namespace
    except OSError:
        return None
    finally:
        s.close()


def comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text(errors="replace").strip() or None
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """Clock ticks since boot at which ``pid`` started: tells a restarted process from the old one."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _display_number(display: str | None) -> int | None:
    m = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", (display or "").strip())
    return int(m.group(1)) if m else None


def _lock_pid(n: int) -> int | None:
    try:
        return int(Path(f"/tmp/.X{n}-lock").read_text().strip())
    except (OSError, ValueError):
        return None


def _xwayland_for(n: int) -> int | None:
    """The Xwayland process whose command line serves display ``:n`` (a compositor's child)."""
    want = f":{n}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"Xwayland" and want in argv[1:]:
            return int(entry)
    return None


# X compositing managers (and window managers that composite), by comm.
X_COMPOSITORS = frozenset({"picom", "compton", "xcompmgr", "kwin_x11", "mutter", "gnome-shell", "xfwm4", "marco",
                           "muffin", "compiz", "cinnamon", "budgie-wm", "gala", "enlightenment"})


def _x_compositors(n: int) -> list[int]:
    """Compositing managers whose own environment says ``DISPLAY=:n`` (readable for our own user's
    processes and as root: another user's session stays out, as it should)."""
    want = re.compile(rb"(?:^|\0)DISPLAY=(?:unix)?:%d(?:\.\d+)?(?:\0|$)" % n)
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or comm(int(entry)) not in X_COMPOSITORS:
            continue
        try:
            if want.search(Path(f"/proc/{entry}/environ").read_bytes()):
                out.append(int(entry))
        except OSError:
            continue
    return sorted(out)


def _proc(pid: int, role: str, via: str) -> dict:
    return {"pid": pid, "name": comm(pid), "role": role, "via": via, "start": _start_time(pid)}


def x_server(display: str | None) -> list[dict]:
    """The process(es) behind an X display ``:n``: its socket's owner and, for Xwayland, the server."""
    n = _display_number(display)
    if n is None:
        return []
    out: list[dict] = []
    owner = peer_pid(f"/tmp/.X11-unix/X{n}") or peer_pid(f"\0/tmp/.X11-unix/X{n}")
    lock = _lock_pid(n)
    if owner is not None:
        out.append(_proc(owner, "x-server", f"socket /tmp/.X11-unix/X{n}"))
    elif lock is not None and os.path.exists(f"/proc/{lock}"):
        out.append(_proc(lock, "x-server", f"lock /tmp/.X{n}-lock"))
    if out and out[0]["name"] != "Xwayland" and not (out[0]["name"] or "").startswith("X"):
        # A Wayland compositor holds the X socket for its Xwayland: the server itself is that child.
        xw = _xwayland_for(n)
        out[0]["role"] = "compositor"
        if xw is not None and xw != out[0]["pid"]:
            out.append(_proc(xw, "x-server", f"Xwayland serving :{n}"))
    elif out and out[0]["name"] != "Xwayland":
        out += [_proc(pid, "compositor", f"environ DISPLAY=:{n}") for pid in _x_compositors(n)
                if pid != out[0]["pid"]]
    return out


def wayland_socket(env: dict[str, str]) -> str | None:
    name = env.get("WAYLAND_DISPLAY")
    if not name:
        return None
    if name.startswith("/"):
        return name
    rt = env.get("XDG_RUNTIME_DIR")
    return os.path.join(rt, name) if rt else None


def wayland_compositor(env: dict[str, str]) -> list[dict]:
    path = wayland_socket(env)
    pid = peer_pid(path) if path else None
    return [_proc(pid, "compositor", f"socket {path}")] if pid else []


def under_test(env: dict[str, str] | None = None) -> list[dict]:
    """The display server and compositor processes behind the display in ``env`` (default: ours),
    de-duplicated by pid: ``[{"pid", "name", "role", "via", "start"}]``. Empty without a display."""
    env = dict(os.environ if env is None else env)
    found: dict[int, dict] = {}
    for p in wayland_compositor(env) + x_server(env.get("DISPLAY")):
        found.setdefault(p["pid"], p)
    return list(found.values())


def compositor_name(env: dict[str, str] | None = None) -> str | None:
    """The compositor the Wayland session in ``env`` talks to (``sway``, ``weston``, ``kwin_wayland``...)."""
    procs = wayland_compositor(dict(os.environ if env is None else env))
    return procs[0]["name"] if procs else None


def version(pid: int, timeout: float = 3.0) -> str | None:
    """The program's version, from ``<its executable> --version`` (``-version`` for X servers), else
    the version of the Debian package that holds the executable (Xvfb prints none)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    name = os.path.basename(exe)
    for flag in (("-version",) if name.startswith("X") else ("--version",)):
        try:
            out = subprocess.run([exe, flag], capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return None
        lines = [ln for ln in (out.stdout + "\n" + out.stderr).splitlines() if _VERSION.search(ln)]
        if out.returncode == 0 and len(lines) == 1 and len(lines[0]) < 80:   # "v9.1", "kwin 5.27.5"
            return _VERSION.search(lines[0]).group(0)
        for line in lines:
            if "version" in line.lower() or name.lower() in line.lower():
                return _VERSION.search(line).group(0)
    return _package_version(exe, timeout)


def _package_version(exe: str, timeout: float) -> str | None:
    if not shutil.which("dpkg-query"):
        return None
    try:
        owner = subprocess.run(["dpkg-query", "-S", exe], capture_output=True, text=True, timeout=timeout)
        pkg = owner.stdout.split(":", 1)[0].strip() if owner.returncode == 0 else ""
        if not pkg:
            return None
        ver = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True,
                             timeout=timeout)
        return f"{pkg} {ver.stdout.strip()}" if ver.returncode == 0 and ver.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None
