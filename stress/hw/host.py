"""Host state through psutil: memory, swap, load, the worker process tree, and the display server and
compositor processes (the ones that break when the desktop breaks), plus the display session type.

The display processes *under test* are the ones behind the display the probes use, found from its
sockets (:mod:`stress.hw.display_id`): their exit is evidence (``dsgone``). Every other process with a
display server's or compositor's name (another session, another job's Xvfb) is sampled as context
only (``ut`` false; its exit goes to ``ctxgone``, never into the verdict)."""
from __future__ import annotations

import os
from typing import Any, Callable

import psutil

# Process names (Linux comm, as psutil reports them). X servers first: they are "display servers";
# on Wayland the compositor is the display server.
X_SERVERS = ("Xorg", "X", "Xwayland", "Xvfb", "Xephyr", "Xnest", "Xvnc", "Xtigervnc")
COMPOSITORS = (
    "gnome-shell", "kwin_wayland", "kwin_x11", "kwin", "mutter", "sway", "Hyprland", "weston", "picom",
    "compton", "xcompmgr", "xfwm4", "marco", "muffin", "cinnamon", "enlightenment", "labwc", "niri",
    "river", "wayfire", "cage", "gamescope", "compiz", "budgie-wm", "gala", "hyprland", "cosmic-comp",
)
# Compositors that implement wlr-screencopy, so `grim` can take a screenshot.
WLROOTS = frozenset({"sway", "Hyprland", "hyprland", "labwc", "river", "wayfire", "cage", "niri"})
DISPLAY_PROCESS_NAMES = frozenset(X_SERVERS + COMPOSITORS)


def _proc_names() -> list[tuple[int, str]]:
    """``(pid, comm)`` of every process, read straight from /proc: several times cheaper than
    psutil.process_iter, which builds an object per process (this runs every rescan)."""
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [(p.pid, p.info["name"]) for p in psutil.process_iter(["name"])]
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as fh:
                out.append((int(entry), fh.read().decode("utf-8", "replace").rstrip("\n")))
        except OSError:   # exited meanwhile, or hidden
            continue
    return out


def find_display_processes() -> list[tuple[psutil.Process, str]]:
    """Running display servers and compositors as ``(process, name)``, by pid."""
    found = []
    for pid, name in sorted(_proc_names()):
        if name in DISPLAY_PROCESS_NAMES:
            try:
                found.append((psutil.Process(pid), name))
            except psutil.Error:
                continue
    return found


def display_session(env: dict[str, str] | None = None, versions: bool = True) -> dict:
    """What kind of graphical session this process runs in, and which server/compositor is up.

    ``type`` comes from the environment (XDG_SESSION_TYPE, then WAYLAND_DISPLAY, then DISPLAY);
    ``compositor`` and ``display_server`` from the running processes, so they are found even when
    stress runs over ssh without DISPLAY.
    """
    env = os.environ if env is None else env
    xdg = (env.get("XDG_SESSION_TYPE") or "").strip().lower()
    wayland = env.get("WAYLAND_DISPLAY") or None
    display = env.get("DISPLAY") or None
    if xdg in ("x11", "wayland", "tty"):
        kind = xdg
        if kind == "tty" and (wayland or display):   # e.g. a nested/Xvfb session started from a tty
            kind = "wayland" if wayland else "x11"
    elif wayland:
        kind = "wayland"
    elif display:
        kind = "x11"
    else:
        kind = "tty" if xdg else "none"
    try:
        found = [(p.pid, name) for p, name in find_display_processes()]
    except Exception:  # noqa: BLE001 - no /proc access: report what the environment says
        found = []
    names = [name for _, name in found]
    from stress.hw import display_id

    try:
        under = display_id.under_test(dict(env))
    except OSError:
        under = []
    for p in under:
        p["version"] = display_id.version(p["pid"]) if versions else None
    ut_comp = next((p["name"] for p in under if p["role"] == "compositor"), None)
    ut_server = next((p["name"] for p in under if p["role"] == "x-server"), None)
    if under:
        compositor = ut_comp
        server = ut_server or ut_comp
    else:   # no socket to follow (remote DISPLAY, no session): what runs on the machine, as context
        compositor = next((n for n in names if n in COMPOSITORS), None)
        server = next((n for n in names if n in X_SERVERS and n != "Xwayland"), None)
        if server is None:
            if kind == "wayland" and compositor:
                server = compositor
            elif "Xwayland" in names:
                server = "Xwayland"
    ut_pids = {p["pid"] for p in under}
    return {
        "type": kind,
        "display": display,
        "wayland_display": wayland,
        "xdg_session_type": xdg or None,
        "desktop": env.get("XDG_CURRENT_DESKTOP") or None,
        "compositor": compositor,
        "display_server": server,
        "xwayland": "Xwayland" in names or any(p["name"] == "Xwayland" for p in under),
        "under_test": under,
        # Same names, other displays: listed so that a reader sees them, never used as evidence.
        "context": [{"pid": pid, "name": name} for pid, name in found if pid not in ut_pids],
    }


def _children_pids(pid: int) -> list[int] | None:
    """Direct children from /proc/<pid>/task/*/children (Linux 3.5+); None where that is missing."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                kids.extend(int(x) for x in fh.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue          # the thread ended meanwhile
            return None           # kernel without CONFIG_PROC_CHILDREN
        except (OSError, ValueError):
            continue
    return kids


def _tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants. Walks only this tree when the kernel allows it; psutil's
    children() reads every process's stat file instead."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return []
    out, todo, seen = [root], [pid], {pid}
    while todo:
        kids = _children_pids(todo.pop())
        if kids is None:
            try:
                return [root, *root.children(recursive=True)]
            except psutil.Error:
                return [root]
        for k in kids:
            if k in seen:
                continue
            seen.add(k)
            try:
                out.append(psutil.Process(k))
            except psutil.Error:
                continue
            todo.append(k)
    return out


class HostSampler:
    """One ``host`` event's fields per :meth:`sample`. Process objects are kept between ticks (psutil's
    cpu_percent measures since the previous call); process lists are searched again only every
    ``rescan_every`` ticks or when one goes away, because walking /proc is the expensive part."""

    def __init__(self, worker_pids: Callable[[], list[int]] = lambda: [], *, rescan_every: int = 20,
                 tree_every: int = 4, display_env: dict[str, str] | None = None):
        self.worker_pids = worker_pids
        self.display_env = dict(os.environ if display_env is None else display_env)
        self._under: dict[int, dict] = {}      # pid -> {"name", "role"} of the processes under test
        self._roles_lost: dict[str, int] = {}  # role -> pid that went away (to tell a restart)
        self._reported: set[int] = set()       # pids whose exit was recorded: once per pid
        self.rescan_every = max(1, rescan_every)
        self.tree_every = max(1, tree_every)
        self._display: dict[int, psutil.Process] = {}
        self._display_names: dict[int, str] = {}
        self._roots: tuple[int, ...] = ()
        self._trees: dict[int, list[psutil.Process]] = {}
        self._last: dict[str, Any] = {}
        self._rescan = True
        self._hunt = 0                         # ticks left to look for a lost role's successor at once
        self.errors = 0

    @staticmethod
    def _proc_stats(p: psutil.Process, fds: bool) -> dict | None:
        try:
            with p.oneshot():
                if p.status() == psutil.STATUS_ZOMBIE:   # exited, not reaped: not running any more
                    return {"zombie": True}
                d = {"r": p.memory_info().rss, "c": round(p.cpu_percent(None), 1), "t": p.num_threads()}
                if fds:
                    try:
                        d["fd"] = p.num_fds()
                    except psutil.AccessDenied:
                        d["fd"] = None
            return d
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        except psutil.AccessDenied:
            return {"r": None, "c": None, "t": None}

    def _scan_display(self) -> None:
        from stress.hw import display_id

        try:
            under = {p["pid"]: p for p in display_id.under_test(self.display_env)}
        except OSError:
            under = {}
        # Pids under test that vanished stay known until sample() has recorded their exit.
        self._under.update({pid: {"name": p["name"], "role": p["role"]} for pid, p in under.items()})
        fresh, names = {}, {}
        candidates = [(p, name) for p, name in find_display_processes()]
        seen = {p.pid for p, _ in candidates}
        for pid, p in under.items():   # under test whatever its name (e.g. a renamed binary)
            if pid not in seen:
                try:
                    candidates.append((psutil.Process(pid), p["name"] or "?"))
                except psutil.Error:
                    pass
        for p, name in candidates:
            if p.pid in self._reported:
                continue
            known = self._display.get(p.pid)
            if known is None:
                try:
                    p.cpu_percent(None)   # prime: the first call always says 0.0
                except psutil.Error:
                    continue
            fresh[p.pid] = known if known is not None else p
            names[p.pid] = name
        self._display, self._display_names = fresh, names

    def _restarted(self) -> list[list]:
        """``[pid, name, role]`` of under-test processes that took the role of one that went away."""
        out = []
        for pid, p in self._under.items():
            lost = self._roles_lost.get(p["role"])
            if lost is not None and lost != pid and pid in self._display:
                out.append([pid, p["name"], p["role"]])
                del self._roles_lost[p["role"]]
        return out

    def _gone(self, out: dict, pid: int, name: str | None) -> None:
        """Record a display process that went away: evidence when under test, else context."""
        ut = self._under.pop(pid, None)
        if pid in self._reported:   # a zombie seen again by a rescan: it exited once
            return
        self._reported.add(pid)
        if ut is not None:
            out.setdefault("dsgone", []).append([pid, name, ut["role"]])
            self._roles_lost[ut["role"]] = pid
            self._hunt = self.rescan_every
        else:
            out.setdefault("ctxgone", []).append([pid, name])

    def _worker_tree(self, tick: int) -> list[dict]:
        try:
            roots = tuple(int(p) for p in (self.worker_pids() or ()))
        except Exception:  # noqa: BLE001 - a runner callback bug must not stop host sampling
            roots = ()
        if roots != self._roots or tick % self.tree_every == 0:
            old = {p.pid: p for procs in self._trees.values() for p in procs}
            self._trees = {}
            for r in roots:
                procs = []
                for p in _tree(r):
                    kept = old.get(p.pid)
                    if kept is None:
                        try:
                            p.cpu_percent(None)
                        except psutil.Error:
                            continue
                        kept = p
                    procs.append(kept)
                self._trees[r] = procs
            self._roots = roots
        out = []
        for root, procs in self._trees.items():
            agg = {"p": root, "n": 0, "r": 0, "c": 0.0, "t": 0}
            for p in procs:
                s = self._proc_stats(p, fds=False)
                if s is not None and s.get("zombie"):
                    agg["z"] = agg.get("z", 0) + 1
                    continue
                if s is None or s["r"] is None:
                    continue
                agg["n"] += 1
                agg["r"] += s["r"]
                agg["c"] += s["c"]
                agg["t"] += s["t"]
            agg["c"] = round(agg["c"], 1)
            out.append(agg)
        return out

    def sample(self, tick: int) -> dict:
        out: dict[str, Any] = {}
        vm = psutil.virtual_memory()
        sw = psutil.swap_memory()
        out["ma"] = vm.available
        out["mu"] = vm.used
        out["su"] = sw.used
        for k, v in (("mt", vm.total), ("st", sw.total)):   # totals: only when they change
            if self._last.get(k) != v:
                self._last[k] = v
                out[k] = v
        try:
            out["ld"] = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            pass
        cps = cpu_pressure_total()
        if cps is not None:
            out["cps"] = cps
        out["wk"] = self._worker_tree(tick)
        # While a display process under test is gone without a successor, every tick looks for one
        # (for one rescan interval): a restart between two periodic rescans is not missed.
        hunting = bool(self._roles_lost) and self._hunt > 0
        if self._rescan or hunting or tick % self.rescan_every == 0:
            self._hunt -= 1 if hunting else 0
            before = dict(self._display_names)
            self._scan_display()
            self._rescan = False
            for pid, name in before.items():
                if pid not in self._display_names:
                    self._gone(out, pid, name)
            restarted = self._restarted()
            if restarted:
                out["dsnew"] = restarted
        ds = []
        for pid, p in list(self._display.items()):
            s = self._proc_stats(p, fds=True)
            if s is None or s.get("zombie"):   # the display server or compositor went away: say so, look again
                self._gone(out, pid, self._display_names.get(pid))
                del self._display[pid]
                self._display_names.pop(pid, None)
                self._rescan = True
                continue
            rec = {"p": pid, "nm": self._display_names.get(pid), **s}
            if pid in self._under:
                rec["ut"] = self._under[pid]["role"]
            ds.append(rec)
        out["ds"] = ds
        return out


PRESSURE_CPU = "/proc/pressure/cpu"


def cpu_pressure_total(path: str = PRESSURE_CPU) -> int | None:
    """``some total=`` of the kernel's CPU pressure (PSI): microseconds since boot in which at least
    one runnable task waited for a CPU. None where the kernel has no PSI (or it is switched off)."""
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("some "):
                    for part in line.split():
                        if part.startswith("total="):
                            return int(part[6:])
    except (OSError, ValueError):
        return None
    return None
