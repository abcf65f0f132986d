"""What each desktop cycle does (stress/cycles.py decides when): the commands, with timeouts, and a read
back of the state they were meant to cause, so that a cycle that did not take effect says so.

- display off/on: X11 with the DPMS extension: ``xset dpms force off`` / ``force on``, read back with
  ``xset q`` ("Monitor is Off"); an X server without it (Xvfb has none): the screen saver's blanking,
  ``xset s activate`` / ``xset s reset``, read back with XScreenSaverQueryInfo in a child process
  (``python -m stress.cycle_actions xss``); sway: ``swaymsg output * dpms off|on``, read back from
  ``swaymsg -t get_outputs``. Other Wayland compositors have no such command: refused.
- VT switch: ``chvt N`` and back (root, a real VT: /sys/class/tty/tty0/active).
- idle: nothing, for the given time.
- suspend: ``rtcwake -m mem -s N`` (root, a wake-up clock, ``mem`` in /sys/power/state), read back
  from /sys/power/suspend_stats/success.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from stress.proc import child_env

CMD_TIMEOUT = 10.0


def _cmd(argv: list[str], env: dict[str, str], timeout: float = CMD_TIMEOUT) -> tuple[int | None, str]:
    """Run a command; (returncode, its output) or (None, why) when it could not run or timed out."""
    try:
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, start_new_session=True)
    except subprocess.TimeoutExpired:
        return None, f"{argv[0]} did not answer within {timeout:g} s"
    except OSError as exc:
        return None, f"{argv[0]} could not run ({exc.strerror or exc})"
    return p.returncode, (p.stdout + p.stderr).strip()


def _session(env: dict[str, str]) -> str:
    from stress.probes.phases import session_type

    return session_type(env)


# ---- display off/on ----

def display_method(env: dict[str, str], wanted: str = "auto") -> tuple[str | None, str]:
    """How the display in ``env`` can be switched off here: ``dpms``, ``screensaver`` or ``sway``,
    or None and why not."""
    session = _session(env)
    if session == "none":
        return None, "no display to switch off (no DISPLAY or WAYLAND_DISPLAY, and no probes.display)"
    if session == "wayland" and wanted in ("auto", "sway"):
        from stress.hw.display_id import compositor_name

        name = compositor_name(env)
        if name == "sway":
            if not shutil.which("swaymsg"):
                return None, "swaymsg is not installed (apt-get install sway)"
            if not _sway_socket(env):
                return None, "the sway IPC socket was not found (set SWAYSOCK)"
            return "sway", ""
        return None, (f"on Wayland only sway has a command to switch outputs off (swaymsg output * dpms off); "
                      f"the compositor here is {name or 'unknown'}")
    if session == "wayland" or wanted == "sway":
        return None, f"method {wanted} needs {'an X11 display' if wanted != 'sway' else 'sway'}"
    if not shutil.which("xset"):
        return None, "xset is not installed (apt-get install x11-xserver-utils)"
    rc, out = _cmd(["xset", "q"], env)
    if rc != 0:
        return None, f"xset q failed on DISPLAY={env.get('DISPLAY')}: {out[-200:] or 'no output'}"
    has_dpms = "Monitor is" in out or "DPMS is" in out
    if wanted in ("auto", "dpms") and has_dpms:
        return "dpms", ""
    if wanted == "dpms":
        return None, f"the X server on DISPLAY={env.get('DISPLAY')} has no DPMS extension (xset q)"
    return "screensaver", ""


def _sway_socket(env: dict[str, str]) -> str | None:
    if env.get("SWAYSOCK") and os.path.exists(env["SWAYSOCK"]):
        return env["SWAYSOCK"]
    from stress.hw.display_id import wayland_compositor

    procs = wayland_compositor(env)
    rt = env.get("XDG_RUNTIME_DIR") or ""
    pids = [p["pid"] for p in procs]
    socks = sorted(glob.glob(os.path.join(rt, "sway-ipc.*.sock")))
    mine = [s for s in socks if any(s.endswith(f".{pid}.sock") for pid in pids)]
    return (mine or socks or [None])[0]


def _x_dpms_state(env: dict[str, str]) -> str | None:
    rc, out = _cmd(["xset", "q"], env)
    for line in out.splitlines():
        if "Monitor is" in line:
            return line.split("Monitor is", 1)[1].strip().lower()
    return None


def xss_state(display: str) -> dict:
    """The X screen saver's state (XScreenSaverQueryInfo through libXss): run in a child, never in the
    supervisor (a stopped X server would hang it)."""
    import ctypes

    class Info(ctypes.Structure):
        _fields_ = [("window", ctypes.c_ulong), ("state", ctypes.c_int), ("kind", ctypes.c_int),
                    ("til_or_since", ctypes.c_ulong), ("idle", ctypes.c_ulong), ("event_mask", ctypes.c_ulong)]

    x11, xss = ctypes.CDLL("libX11.so.6"), ctypes.CDLL("libXss.so.1")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(Info)]
    dpy = x11.XOpenDisplay(display.encode())
    if not dpy:
        return {"error": f"cannot open display {display}"}
    info = Info()
    if not xss.XScreenSaverQueryInfo(dpy, x11.XDefaultRootWindow(dpy), ctypes.byref(info)):
        return {"error": "the X server has no MIT-SCREEN-SAVER extension"}
    return {"state": {0: "off", 1: "on", 2: "cycle", 3: "disabled"}.get(info.state, str(info.state)),
            "kind": {0: "blanked", 1: "internal", 2: "external"}.get(info.kind, str(info.kind))}


def _xss(env: dict[str, str]) -> dict:
    rc, out = _cmd([sys.executable, "-m", "stress.cycle_actions", "xss"], child_env(env))
    try:
        return json.loads(out.splitlines()[-1]) if rc == 0 else {"error": out[-200:]}
    except (ValueError, IndexError):
        return {"error": out[-200:] or "no output"}


def _sway_dpms(env: dict[str, str]) -> list | None:
    rc, out = _cmd(["swaymsg", "-s", _sway_socket(env) or "", "-t", "get_outputs", "-r"], env)
    try:
        outputs = json.loads(out) if rc == 0 else None
    except ValueError:
        return None
    if not isinstance(outputs, list):
        return None
    return [o.get("power", o.get("dpms")) for o in outputs if isinstance(o, dict)]


def display_off_on(spec, env: dict[str, str]) -> dict:
    method, why = display_method(env, spec.method)
    if method is None:
        return {"status": "refused", "reason": why}
    if method == "dpms":
        off, on, read = ["xset", "dpms", "force", "off"], ["xset", "dpms", "force", "on"], _x_dpms_state
        want_off, want_on = "off", "on"
    elif method == "screensaver":
        off, on = ["xset", "s", "activate"], ["xset", "s", "reset"]
        def read(e: dict[str, str]) -> str | None:
            got = _xss(e)
            return got.get("state") or got.get("error")
        want_off, want_on = "on", "off"          # the screen saver is on while the screen is blanked
    else:
        sock = _sway_socket(env) or ""
        off, on = ["swaymsg", "-s", sock, "output", "*", "dpms", "off"], ["swaymsg", "-s", sock, "output", "*", "dpms", "on"]
        read = lambda e: ("off" if (s := _sway_dpms(e)) and not any(s) else "on" if s and all(s) else str(s))  # noqa: E731
        want_off, want_on = "off", "on"
    readback: dict = {}
    rc, out = _cmd(off, env)
    if rc != 0:
        return {"status": "error", "method": method, "reason": f"{' '.join(off)}: {out[-200:] or f'exit {rc}'}"}
    try:
        readback["during"] = read(env)
        time.sleep(spec.off_s)
    except BaseException:        # Ctrl-C while the display is off: switch it back on before stopping
        _cmd(on, env)
        raise
    rc, out = _cmd(on, env)
    if rc != 0:
        return {"status": "error", "method": method, "readback": readback,
                "reason": f"{' '.join(on)}: {out[-200:] or f'exit {rc}'}; the display may still be off"}
    readback["after"] = read(env)
    if readback["during"] != want_off or readback["after"] != want_on:
        what = "screen saver" if method == "screensaver" else "display"
        return {"status": "error", "method": method, "readback": readback,
                "reason": f"the {what} read back {readback['during']!r} while off and {readback['after']!r} "
                          f"after (expected {want_off!r} then {want_on!r}): the cycle did not take effect"}
    note = ("the X server has no DPMS extension (Xvfb has none): blanked with the X screen saver instead"
            if method == "screensaver" and spec.method == "auto" else None)
    return {"status": "ok", "method": method, "readback": readback, "reason": note}


# ---- VT switch ----

def _active_vt() -> int | None:
    try:
        name = Path("/sys/class/tty/tty0/active").read_text().strip()
    except OSError:
        return None
    return int(name[3:]) if name.startswith("tty") and name[3:].isdigit() else None


def vt_missing() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if not shutil.which("chvt"):
        missing.append("chvt (apt-get install kbd)")
    if _active_vt() is None:
        missing.append("a real virtual terminal (/sys/class/tty/tty0/active names none)")
    return missing


def vt_switch(spec, env: dict[str, str]) -> dict:
    home = _active_vt()
    target = spec.vt or ((home or 1) % 12 + 1)
    rc, out = _cmd(["chvt", str(target)], env)
    if rc != 0:
        return {"status": "error", "method": "chvt", "reason": f"chvt {target}: {out[-200:] or f'exit {rc}'}"}
    try:
        readback = {"during": _active_vt()}
        time.sleep(spec.off_s)
    except BaseException:        # Ctrl-C while away: back to the user's VT before stopping
        _cmd(["chvt", str(home)], env)
        raise
    rc, out = _cmd(["chvt", str(home)], env)
    readback["after"] = _active_vt()
    if rc != 0 or readback != {"during": target, "after": home}:
        return {"status": "error", "method": "chvt", "readback": readback,
                "reason": f"VT {home} -> {target} -> {home} read back {readback} ({out[-120:]})"}
    return {"status": "ok", "method": "chvt", "readback": readback, "reason": None}


# ---- suspend ----

def _suspend_count() -> int | None:
    try:
        return int(Path("/sys/power/suspend_stats/success").read_text().strip())
    except (OSError, ValueError):
        return None


def suspend_missing() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("it needs root")
    if not shutil.which("rtcwake"):
        missing.append("rtcwake is not installed (apt-get install util-linux-extra)")
    if not os.path.exists("/dev/rtc0"):
        missing.append("no wake-up clock (/dev/rtc0 is missing)")
    try:
        states = Path("/sys/power/state").read_text().split()
    except OSError:
        states = []
    if "mem" not in states:
        missing.append(f"/sys/power/state offers no 'mem' (it offers: {' '.join(states) or 'nothing'})")
    return missing


def suspend(spec, env: dict[str, str]) -> dict:
    before = _suspend_count()
    t0 = time.time()
    rc, out = _cmd(["rtcwake", "-m", "mem", "-s", str(max(1, round(spec.seconds)))], env,
                   timeout=spec.seconds + 300)
    readback = {"suspend_success_before": before, "suspend_success_after": _suspend_count(),
                "wall_s": round(time.time() - t0, 3)}
    if rc != 0:
        return {"status": "error", "method": "rtcwake", "readback": readback,
                "reason": f"rtcwake: {out[-200:] or f'exit {rc}'}"}
    if before is not None and readback["suspend_success_after"] == before:
        return {"status": "error", "method": "rtcwake", "readback": readback,
                "reason": "rtcwake returned but the kernel counted no successful suspend"}
    return {"status": "ok", "method": "rtcwake", "readback": readback, "reason": None}


def idle(spec, env: dict[str, str]) -> dict:
    t_end = time.monotonic() + spec.seconds
    while (left := t_end - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))
    return {"status": "ok", "method": "sleep", "reason": None}


ACTIONS = {"display_off_on": display_off_on, "vt_switch": vt_switch, "suspend": suspend, "idle": idle}


def perform(spec, env: dict[str, str]) -> dict:
    return ACTIONS[spec.do](spec, env)


if __name__ == "__main__":   # python -m stress.cycle_actions xss   (DISPLAY from the environment)
    if sys.argv[1:] == ["xss"]:
        print(json.dumps(xss_state(os.environ.get("DISPLAY", ""))))
    else:
        sys.exit("usage: python -m stress.cycle_actions xss")
