"""The fold's sampler handling as it was before the columns were built column by column (commit
a110297, stress/record/fold.py): one tick at a time, the reference that ``stress.record.columns`` must
match exactly (tests/test_record_columns.py). Test oracle only; not used by the product."""
from __future__ import annotations

from stress.fields import (ENVELOPE, HOST, HOST_CARRY, HOST_LISTS, NVML, NVML_CARRY, NVML_LISTS, NVML_PROCESS_LISTS,
                           WORKER_TREE, DISPLAY_PROC)
from stress.record.columns import Columns
from stress.record.fold import to_int

_NVML_NAMES = {k: f.name for k, f in NVML.items()}
_NVML_LIST_NAMES = {k: tuple(f.name for f in fs) for k, fs in NVML_LISTS.items()}
_HOST_NAMES = {k: f.name for k, f in HOST.items()}
_HOST_LIST_NAMES = {k: tuple(f.name for f in fs) for k, fs in HOST_LISTS.items()}
_WORKER_FIELDS = tuple((k, f.name) for k, f in WORKER_TREE.items())
_DISPLAY_FIELDS = {k: v[0] for k, v in DISPLAY_PROC.items()}
_DISPLAY_LIST_KEYS = ("display", "compositor", "display_procs")
_GRAPHICS_TYPES = ("graphics", "g", "c+g", "gfx")


class ReferenceSamples:
    def __init__(self) -> None:
        self.nvml: dict[int, Columns] = {}
        self.host = Columns()
        self.worker_pids: set[int] = set()
        self.display_changes: list[dict] = []
        self._display_pids: dict[str, int | None] = {}
        self._display_seen_any = False
        self._display_last_pid: dict[str, int] = {}
        self._nvml_carry: dict[int, dict] = {}
        self._nvml_procs: dict[int, dict] = {}
        self._host_carry: dict = {}
        self.proc_groups: dict[str, str] = {}
        self._keys: dict[tuple, str] = {}
        self.display_events: list[dict] = []

    def feed(self, ev: dict) -> None:
        t = ev.get("t")
        if ev.get("ev") == "worker_start" and type(ev.get("pid")) is int:
            self.worker_pids.add(ev["pid"])
        elif ev.get("ev") == "nvml":
            self._nvml(ev, t)
        elif ev.get("ev") == "host":
            self._host(ev, t)

    def _nvml(self, ev: dict, t: float) -> None:
        gpu = ev.get("gpu")
        gpu = gpu if type(gpu) is int else (to_int(gpu) or 0)
        cols = self.nvml.get(gpu)
        if cols is None:
            cols = self.nvml[gpu] = Columns()
            self._nvml_carry[gpu] = {}
            self._nvml_procs[gpu] = {}
        carry = self._nvml_carry[gpu]
        values: dict = {}
        for k, v in ev.items():
            tv = type(v)
            if tv is int or tv is float:
                if k in ENVELOPE:
                    continue
                name = _NVML_NAMES.get(k, k)
                values[name] = v
                if name in NVML_CARRY:
                    carry[name] = v
            elif tv is list:
                names = _NVML_LIST_NAMES.get(k)
                if names:
                    for name, x in zip(names, v):
                        if type(x) is int or type(x) is float:
                            values[name] = carry[name] = x
                elif k in NVML_PROCESS_LISTS or k == "procs":
                    self._nvml_procs[gpu][k] = v     # change-only: kept until the next list
                    for p in v:
                        if type(p) is list and len(p) >= 2:
                            self.proc_groups[str(p[1])] = NVML_PROCESS_LISTS.get(k, "compute")
                        elif type(p) is dict and p.get("name"):
                            ptype = str(p.get("type", "graphics" if k == "gp" else "compute")).lower()
                            self.proc_groups[str(p["name"])] = "graphics" if ptype in _GRAPHICS_TYPES else "compute"
            elif tv is dict:
                for k2, v2 in v.items():
                    if type(v2) is int or type(v2) is float:
                        values[f"{k}.{k2}"] = v2
        for name, v in carry.items():
            if name not in values:
                values[name] = v
        procs = self._nvml_procs[gpu]
        if procs:
            gfx = 0
            worker_mem = None
            pids = self.worker_pids
            for k, lst in procs.items():
                for p in lst:
                    if type(p) is list and len(p) >= 3:        # compact: [pid, name, mem]
                        pid, name, mem = p[0], p[1], p[2]
                        ptype = "graphics" if k == "gp" else "compute"
                    elif type(p) is dict:
                        pid, name, mem = p.get("pid"), p.get("name"), p.get("mem")
                        ptype = str(p.get("type", "graphics" if k == "gp" else "compute")).lower()
                    else:
                        continue
                    if type(mem) is not int and type(mem) is not float:
                        continue
                    key = self._keys.get((k, name, pid))
                    if key is None:
                        key = self._keys[(k, name, pid)] = f"procs[{name or f'pid {pid}'}].mem"
                    values[key] = values.get(key, 0) + mem
                    if ptype in _GRAPHICS_TYPES:
                        gfx += mem
                    if pid in pids:
                        worker_mem = (worker_mem or 0) + mem
            values["gfx_procs_mem"] = gfx
            if worker_mem is not None:
                values["worker_gpu_mem"] = worker_mem
        cols.add(t, values)

    def _host(self, ev: dict, t: float) -> None:
        if "dsgone" in ev or "dsnew" in ev or "ctxgone" in ev:
            self.display_events.append({"ev": "host", "t": t, **{k: ev[k] for k in ("dsgone", "dsnew", "ctxgone")
                                                                  if type(ev.get(k)) is list}})
        values: dict = {}
        carry = self._host_carry
        for k, v in ev.items():
            tv = type(v)
            if tv is int or tv is float:
                if k in ENVELOPE:
                    continue
                name = _HOST_NAMES.get(k, k)
                values[name] = v
                if name in HOST_CARRY:
                    carry[name] = v
            elif k in _HOST_LIST_NAMES and tv is list:
                for name, x in zip(_HOST_LIST_NAMES[k], v):
                    if type(x) is int or type(x) is float:
                        values[name] = x
            elif k == "wk" and tv is list:          # one entry per worker process tree
                for w in v:
                    if type(w) is not dict:
                        continue
                    for short, name in _WORKER_FIELDS:
                        x = w.get(short)
                        if type(x) is int or type(x) is float:
                            values[name] = values.get(name, 0) + x
            elif tv is dict and k not in _DISPLAY_LIST_KEYS:
                for k2, v2 in v.items():
                    if type(v2) is int or type(v2) is float:
                        values[f"{k}.{k2}"] = v2
        for name, v in carry.items():
            if name not in values:
                values[name] = v
        for lk in ("ds",) + _DISPLAY_LIST_KEYS:
            lst = ev.get(lk)
            if type(lst) is not list:
                continue
            seen: dict[str, int | None] = {}
            for p in lst:
                if type(p) is not dict:
                    continue
                pid = p.get("p", p.get("pid"))
                name = str(p.get("nm") or p.get("name") or f"pid {pid}")
                seen.setdefault(name, pid if type(pid) is int else None)
                keys = self._keys
                for k, v in p.items():
                    if (type(v) is int or type(v) is float) and k != "p" and k != "pid":
                        key = keys.get((name, k))
                        if key is None:
                            key = keys[(name, k)] = f"display[{name}].{_DISPLAY_FIELDS.get(k, k)}"
                        values[key] = values.get(key, 0) + v
            self._track_display(t, seen)
            break
        self.host.add(t, values)

    def _track_display(self, t: float, seen: dict[str, int | None]) -> None:
        """Note when a display-server/compositor process restarts (new pid), vanishes or appears."""
        known = self._display_pids
        changes = self.display_changes
        for name, pid in seen.items():
            if name not in known:
                if self._display_seen_any:   # not part of the first sample's set: it appeared mid-run
                    changes.append({"t": t, "name": name, "change": "appeared", "old_pid": None, "new_pid": pid})
            elif known[name] is None:
                old = self._display_last_pid.get(name)
                changes.append({"t": t, "name": name, "change": "restarted" if old not in (None, pid) else "appeared",
                                "old_pid": old, "new_pid": pid})
            elif pid is not None and known[name] != pid:
                changes.append({"t": t, "name": name, "change": "restarted", "old_pid": known[name],
                                "new_pid": pid})
            known[name] = pid
            if pid is not None:
                self._display_last_pid[name] = pid
        for name, old in known.items():
            if name not in seen and old is not None:
                changes.append({"t": t, "name": name, "change": "vanished", "old_pid": old, "new_pid": None})
                known[name] = None
        if seen:
            self._display_seen_any = True

