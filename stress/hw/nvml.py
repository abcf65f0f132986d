"""All NVML access: the only module that imports ``pynvml`` (nvidia-ml-py).

Every NVML call goes through :meth:`NvmlSession.query`, which never lets one failing field stop the
others: "not supported"-like errors become an :class:`Unsupported` value (recorded once per field, then
not asked again), a lost GPU raises :class:`GpuLost` (the caller stops sampling that GPU), anything
else becomes a :class:`Failed` value for this tick only. The module that stands for pynvml comes from
:func:`_load_pynvml`; tests replace that function with one returning a scripted stand-in
(stress/selftest/fake_nvml.py). The environment variable ``STRESS_NVML_MODULE`` names another importable module
to use instead of pynvml, for trying the suite end to end without a GPU.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from stress.fields import NVML_CHANGE_ONLY
from stress.hw import pci as pcisys

# NVML return codes (nvml.h); the numbers are part of NVML's ABI, so they are safe to hard-code and
# keep this module independent of which pynvml (or stand-in) is loaded.
_UNINITIALIZED = 1
_INVALID_ARGUMENT = 2
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_NOT_FOUND = 6
_DRIVER_NOT_LOADED = 9
_TIMEOUT = 10
_LIBRARY_NOT_FOUND = 12
_FUNCTION_NOT_FOUND = 13
_GPU_IS_LOST = 15
_RESET_REQUIRED = 16
_LIB_RM_VERSION_MISMATCH = 18
_VGPU_ECC_NOT_SUPPORTED = 22
_ARGUMENT_VERSION_MISMATCH = 25
_DEPRECATED = 26
_GPU_NOT_FOUND = 28

# Errors that will not go away by asking again: the field is recorded as unsupported once.
_UNSUPPORTED_CODES = {
    _NOT_SUPPORTED: "not supported",
    _NO_PERMISSION: "no permission",
    _FUNCTION_NOT_FOUND: "function not found in this driver",
    _NOT_FOUND: "not found",
    _INVALID_ARGUMENT: "invalid argument",
    _VGPU_ECC_NOT_SUPPORTED: "not supported on vGPU",
    _ARGUMENT_VERSION_MISMATCH: "struct version not supported by this driver",
    _DEPRECATED: "deprecated by this driver",
}
_LOST_CODES = {
    _GPU_IS_LOST: "gpu lost",
    _RESET_REQUIRED: "gpu requires reset",
    _GPU_NOT_FOUND: "gpu not found",
}
# A field failing this many ticks in a row for a reason not listed above is given up on too.
_MAX_CONSECUTIVE_FAILURES = 5

XID_EVENT_MASK = 0x0000000000000008   # nvmlEventTypeXidCriticalError

# Keys of an `nvml` event written only when their value differs from the last one written (they
# change rarely or never; readers carry the last value forward): the field table says which.
CHANGE_ONLY_KEYS = NVML_CHANGE_ONLY

# Bits of nvmlDeviceGetCurrentClocksEventReasons (nvml.h nvmlClocksEventReason*), for reports.
CLOCK_EVENT_REASONS = {
    0x1: "gpu idle", 0x2: "application clocks setting", 0x4: "SW power cap", 0x8: "HW slowdown",
    0x10: "sync boost", 0x20: "SW thermal slowdown", 0x40: "HW thermal slowdown", 0x80: "HW power brake",
    0x100: "display clock setting",
}


def clock_event_reasons(mask: int | None) -> list[str] | None:
    """The names of the bits set in a ``thr`` value (unknown bits as hex)."""
    if mask is None:
        return None
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    rest = mask & ~sum(CLOCK_EVENT_REASONS)
    return names + ([hex(rest)] if rest else [])


def _load_pynvml() -> ModuleType:
    """The pynvml module (or the one named by ``STRESS_NVML_MODULE``). Tests monkeypatch this."""
    return importlib.import_module(os.environ.get("STRESS_NVML_MODULE") or "pynvml")


@dataclass(frozen=True)
class Unsupported:
    """A field this GPU/driver cannot give; asked once, recorded once, not asked again."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class Failed:
    """A field that failed this time for a reason that might pass (timeout, unknown error)."""

    reason: str

    def __bool__(self) -> bool:
        return False


class GpuLost(Exception):
    """The GPU went away (Xid 79 and friends): stop sampling it."""


class NvmlUnavailable(Exception):
    """NVML cannot be used on this machine; ``str()`` says why in one line."""


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _error_text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - pynvml's __str__ itself calls into NVML, which may be gone
        text = ""
    return text or type(exc).__name__


def _unavailable_reason(exc: BaseException) -> str:
    code = _code(exc)
    if isinstance(exc, ImportError):
        return f"nvidia-ml-py (pynvml) is not importable: {exc}"
    if code == _LIBRARY_NOT_FOUND:
        return "NVML library not found (libnvidia-ml.so.1): the NVIDIA driver is not installed"
    if code == _DRIVER_NOT_LOADED:
        return "the NVIDIA kernel driver is not loaded (no /dev/nvidia*)"
    if code == _NO_PERMISSION:
        return "no permission to open the NVIDIA device files (/dev/nvidia*)"
    if code == _LIB_RM_VERSION_MISMATCH:
        return "NVML library and kernel driver versions differ (reboot after a driver update)"
    if code in _LOST_CODES:
        return _LOST_CODES[code]
    return f"NVML initialisation failed: {_error_text(exc)}"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


class NvmlSession:
    """NVML initialised once, with the handles of the GPUs to watch. Not a singleton: NVML counts
    init/shutdown pairs, so several sessions (a run and ``gpu_inventory``) can be open at once."""

    def __init__(self, nv: ModuleType, handles: dict[int, Any]):
        # Where the GPU's PCI/DRM facts are read: /sys, or the tree an NVML stand-in brings for the
        # GPU it stands for (stress/selftest/fake_nvml.py ``sysfs_root``).
        self.sysfs = Path(getattr(nv, "sysfs_root", None) or pcisys.SYSFS)
        self.nv = nv
        self.handles = handles
        self._closed = False

    @classmethod
    def open(cls, gpus: list[int] | None = None) -> "NvmlSession":
        """Initialise NVML. Raises :class:`NvmlUnavailable` with the reason."""
        try:
            nv = _load_pynvml()
        except ImportError as exc:
            raise NvmlUnavailable(_unavailable_reason(exc)) from None
        try:
            nv.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - NVMLError or an OSError from ctypes: both mean "no NVML"
            raise NvmlUnavailable(_unavailable_reason(exc)) from None
        session = cls(nv, {})
        try:
            count = nv.nvmlDeviceGetCount()
            wanted = range(count) if gpus is None else [i for i in gpus if 0 <= i < count]
            for i in wanted:
                try:
                    session.handles[i] = nv.nvmlDeviceGetHandleByIndex(i)
                except Exception:  # noqa: BLE001 - one GPU we cannot open is left out, not fatal
                    continue
        except Exception as exc:  # noqa: BLE001
            session.close()
            raise NvmlUnavailable(_unavailable_reason(exc)) from None
        if not session.handles:
            session.close()
            raise NvmlUnavailable("no NVIDIA GPU found" if gpus is None
                                  else f"none of the GPUs {gpus} found")
        return session

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.nv.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down after a lost GPU may fail; nothing to do
                pass

    # ---- the one query helper ----
    def query(self, fn_name: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``pynvml.<fn_name>(*args)``: the value, :class:`Unsupported` or :class:`Failed`;
        raises :class:`GpuLost` when the GPU is gone."""
        fn = getattr(self.nv, fn_name, None)
        if fn is None:
            return Unsupported(f"{fn_name} missing in this nvidia-ml-py")
        try:
            return fn(*args, **kwargs)
        except self.nv.NVMLError as exc:
            code = _code(exc)
            if code in _LOST_CODES:
                raise GpuLost(_LOST_CODES[code]) from None
            if code in _UNSUPPORTED_CODES:
                return Unsupported(_UNSUPPORTED_CODES[code])
            if code == _UNINITIALIZED:
                raise GpuLost("NVML was shut down") from None
            return Failed(_error_text(exc))
        except TypeError as exc:  # an older nvidia-ml-py without the keyword we pass
            return Unsupported(f"{fn_name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - ctypes/OS trouble: this tick only, like an NVML error
            return Failed(f"{type(exc).__name__}: {exc}")

    def query_first(self, names: tuple[str, ...], *args: Any) -> Any:
        """The first of several equivalent functions (new name, deprecated name) that works."""
        result: Any = Unsupported("no function")
        for name in names:
            result = self.query(name, *args)
            if not isinstance(result, Unsupported):
                return result
        return result

    # ---- once per run ----
    def driver_info(self) -> dict:
        out: dict[str, Any] = {"driver": None, "cuda_driver": None, "nvml_version": None}
        v = self.query("nvmlSystemGetDriverVersion")
        if not isinstance(v, (Unsupported, Failed)):
            out["driver"] = _text(v)
        cv = self.query_first(("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"))
        if isinstance(cv, int):
            out["cuda_driver"] = _cuda_version(cv)
        nv = self.query("nvmlSystemGetNVMLVersion")
        if isinstance(nv, (str, bytes)):
            out["nvml_version"] = _text(nv)
        return out

    def static_info(self, index: int) -> dict:
        """The ``gpu_static`` fields of one GPU (None where the driver does not say)."""
        h = self.handles[index]

        def val(result: Any, conv: Callable[[Any], Any] = lambda x: x) -> Any:
            return None if isinstance(result, (Unsupported, Failed)) else conv(result)

        pci = self.query("nvmlDeviceGetPciInfo", h)
        bus_id = None if isinstance(pci, (Unsupported, Failed)) else _text(getattr(pci, "busId", "") or "")
        mem = self.query("nvmlDeviceGetMemoryInfo", h)
        bar1 = self.query("nvmlDeviceGetBAR1MemoryInfo", h)
        mem_total, bar1_total = val(mem, lambda m: int(m.total)), val(bar1, lambda b: int(b.bar1Total))
        bdf = pcisys.sysfs_bdf(bus_id)
        return {
            "gpu": index,
            "name": val(self.query("nvmlDeviceGetName", h), _text),
            "uuid": val(self.query("nvmlDeviceGetUUID", h), _text),
            "serial": val(self.query("nvmlDeviceGetSerial", h), _text),
            "vbios": val(self.query("nvmlDeviceGetVbiosVersion", h), _text),
            "bus_id": bus_id or None,
            "persistence_mode": val(self.query("nvmlDeviceGetPersistenceMode", h), int),
            "memory_total": mem_total,
            "bar1_total": bar1_total,
            # Resizable BAR: BAR1 maps all of video memory (without it, 256 MiB on desktop GPUs)
            "rebar_active": None if mem_total is None or bar1_total is None else bar1_total >= mem_total,
            "pci_bar_sizes": pcisys.bar_sizes(bdf, self.sysfs) if bdf else None,
            "pcie_max_gen": val(self.query("nvmlDeviceGetMaxPcieLinkGeneration", h), int),
            "pcie_max_width": val(self.query("nvmlDeviceGetMaxPcieLinkWidth", h), int),
            "power_default_limit_w": val(self.query("nvmlDeviceGetPowerManagementDefaultLimit", h),
                                         lambda mw: round(mw / 1000, 1)),
        }

    def xid_events_supported(self, index: int) -> bool | None:
        """True/False, or None when the driver cannot say."""
        r = self.query("nvmlDeviceGetSupportedEventTypes", self.handles[index])
        if isinstance(r, (Unsupported, Failed)):
            return None
        return bool(int(r) & XID_EVENT_MASK)


class _ProcNames:
    """pid -> process name through psutil, cached (pids of a live process keep their name)."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, pid: int) -> str:
        name = self._cache.get(pid)
        if name is None:
            try:
                import psutil

                name = psutil.Process(pid).name()
            except Exception:  # noqa: BLE001 - gone, hidden in another pid namespace, no psutil
                name = "?"
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[pid] = name
        return name


class GpuSampler:
    """Samples one GPU: compact per-tick fields, slow fields every ``slow_every`` ticks, change-only
    keys dropped when unchanged, unsupported fields reported once and then skipped."""

    def __init__(self, session: NvmlSession, index: int, *, slow_every: int = 20, processes: bool = True,
                 proc_names: Callable[[int], str] | None = None):
        self.s = session
        self.nv = session.nv
        self.index = index
        self.h = session.handles[index]
        self.slow_every = max(1, int(slow_every))
        self.lost: str | None = None
        self.unsupported: dict[str, str] = {}     # field -> reason (all so far)
        self._pending_unsupported: dict[str, str] = {}
        self._failures: dict[str, int] = {}
        self._last: dict[str, Any] = {}
        self._mem_v1 = False
        self._names = proc_names or _ProcNames()
        fields: list[tuple[str, bool, Callable[[], Any]]] = [
            ("memory", False, self._memory),
            ("bar1", False, self._bar1),
            ("utilization", False, self._util),
            ("clock_graphics", False,
             lambda: self._one("cg", "nvmlDeviceGetClockInfo", self._c("NVML_CLOCK_GRAPHICS", 0))),
            ("clock_memory", False,
             lambda: self._one("cm", "nvmlDeviceGetClockInfo", self._c("NVML_CLOCK_MEM", 2))),
            ("clock_event_reasons", False, self._throttle),
            ("temperature", False,
             lambda: self._one("tc", "nvmlDeviceGetTemperature", self._c("NVML_TEMPERATURE_GPU", 0))),
            ("power", False, self._power),
            ("pstate", False, lambda: self._one("ps", "nvmlDeviceGetPerformanceState")),
            ("pcie_gen", False, lambda: self._one("pg", "nvmlDeviceGetCurrPcieLinkGeneration")),
            ("pcie_width", False, lambda: self._one("pwd", "nvmlDeviceGetCurrPcieLinkWidth")),
            ("power_limit", True, self._power_limit),
            ("pcie_replay", True, lambda: self._one("prc", "nvmlDeviceGetPcieReplayCounter")),
            ("remapped_rows", True, self._remapped_rows),
            ("retired_pages", True, self._retired_pages),
            ("display_active", True, lambda: self._one("da", "nvmlDeviceGetDisplayActive")),
            ("display_mode", True, lambda: self._one("dm", "nvmlDeviceGetDisplayMode")),
            ("pcie_aer", True, self._aer),
            ("drm_connectors", True, self._connectors),
        ]
        if processes:
            fields += [
                ("graphics_processes", False, lambda: self._procs("gp", ("nvmlDeviceGetGraphicsRunningProcesses",))),
                ("compute_processes", False, lambda: self._procs("cp", ("nvmlDeviceGetComputeRunningProcesses",))),
            ]
        self._fields = fields

    def _bdf(self) -> str | None:
        if not hasattr(self, "_bdf_cache"):
            r = self.s.query("nvmlDeviceGetPciInfo", self.h)
            bus = None if isinstance(r, (Unsupported, Failed)) else _text(getattr(r, "busId", "") or "")
            self._bdf_cache = pcisys.sysfs_bdf(bus) if bus else None
        return self._bdf_cache

    def _aer(self) -> Any:
        bdf = self._bdf()
        got = pcisys.aer_counters(bdf, self.s.sysfs) if bdf else None
        if got is None:
            return Unsupported(f"no PCIe AER counters in sysfs for {bdf or 'this GPU'} "
                               "(no AER capability, or AER not enabled in the kernel)")
        return {"aer": [got.get("correctable"), got.get("nonfatal"), got.get("fatal")]}

    def _connectors(self) -> Any:
        bdf = self._bdf()
        got = pcisys.drm_connectors(bdf, self.s.sysfs) if bdf else None
        if got is None:
            return Unsupported(f"no DRM card bound to {bdf or 'this GPU'} (nvidia-drm not loaded?)")
        return {"dcon": [pcisys.connected_count(got), sum(c["enabled"] == "enabled" for c in got)]}

    def _c(self, name: str, default: int) -> int:
        return getattr(self.nv, name, default)

    # ---- field readers: a dict of compact keys, or Unsupported/Failed ----
    def _one(self, key: str, fn: str, *args: Any) -> Any:
        r = self.s.query(fn, self.h, *args)
        return r if isinstance(r, (Unsupported, Failed)) else {key: int(r)}

    def _memory(self) -> Any:
        v2 = getattr(self.nv, "nvmlMemory_v2", None)
        if v2 is not None and not self._mem_v1:
            r = self.s.query("nvmlDeviceGetMemoryInfo", self.h, version=v2)
            if isinstance(r, Unsupported):
                self._mem_v1 = True   # older driver: fall back to v1, which has no "reserved"
            elif isinstance(r, Failed):
                return r
            else:
                return {"mu": int(r.used), "mf": int(r.free), "mr": int(getattr(r, "reserved", 0)),
                        "mt": int(r.total)}
        r = self.s.query("nvmlDeviceGetMemoryInfo", self.h)
        if isinstance(r, (Unsupported, Failed)):
            return r
        return {"mu": int(r.used), "mf": int(r.free), "mt": int(r.total)}

    def _bar1(self) -> Any:
        r = self.s.query("nvmlDeviceGetBAR1MemoryInfo", self.h)
        if isinstance(r, (Unsupported, Failed)):
            return r
        return {"b1u": int(r.bar1Used), "b1t": int(r.bar1Total)}

    def _util(self) -> Any:
        r = self.s.query("nvmlDeviceGetUtilizationRates", self.h)
        if isinstance(r, (Unsupported, Failed)):
            return r
        return {"ug": int(r.gpu), "um": int(r.memory)}

    def _throttle(self) -> Any:
        r = self.s.query_first(("nvmlDeviceGetCurrentClocksEventReasons",
                                "nvmlDeviceGetCurrentClocksThrottleReasons"), self.h)
        return r if isinstance(r, (Unsupported, Failed)) else {"thr": int(r)}

    def _power(self) -> Any:
        r = self.s.query("nvmlDeviceGetPowerUsage", self.h)
        return r if isinstance(r, (Unsupported, Failed)) else {"pw": round(r / 1000, 1)}

    def _power_limit(self) -> Any:
        r = self.s.query("nvmlDeviceGetEnforcedPowerLimit", self.h)
        return r if isinstance(r, (Unsupported, Failed)) else {"pl": round(r / 1000, 1)}

    def _remapped_rows(self) -> Any:
        r = self.s.query("nvmlDeviceGetRemappedRows", self.h)
        return r if isinstance(r, (Unsupported, Failed)) else {"rr": [int(x) for x in r]}

    def _retired_pages(self) -> Any:
        counts = []
        for cause in (self._c("NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS", 0),
                      self._c("NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR", 1)):
            r = self.s.query("nvmlDeviceGetRetiredPages", self.h, cause)
            if isinstance(r, (Unsupported, Failed)):
                return r
            counts.append(len(r))
        pending = self.s.query("nvmlDeviceGetRetiredPagesPendingStatus", self.h)
        counts.append(None if isinstance(pending, (Unsupported, Failed)) else int(pending))
        return {"rp": counts}

    def _procs(self, key: str, names: tuple[str, ...]) -> Any:
        r = self.s.query_first(names, self.h)
        if isinstance(r, (Unsupported, Failed)):
            return r
        out = []
        for p in r:
            mem = getattr(p, "usedGpuMemory", None)
            out.append([int(p.pid), self._names(int(p.pid)), None if mem is None else int(mem)])
        out.sort(key=lambda x: x[0])
        return {key: out}

    # ---- one tick ----
    def sample(self, tick: int) -> dict | None:
        """The compact fields of this tick (``gpu`` included), or None once the GPU is lost."""
        if self.lost:
            return None
        out: dict[str, Any] = {"gpu": self.index}
        slow_tick = tick % self.slow_every == 0
        for name, slow, read in self._fields:
            if name in self.unsupported or (slow and not slow_tick):
                continue
            try:
                r = read()
            except GpuLost as exc:
                self.lost = str(exc)
                return None
            if isinstance(r, Unsupported):
                self._mark_unsupported(name, r.reason)
            elif isinstance(r, Failed):
                n = self._failures[name] = self._failures.get(name, 0) + 1
                if n >= _MAX_CONSECUTIVE_FAILURES:
                    self._mark_unsupported(name, f"failing: {r.reason} ({n} times in a row)")
            else:
                self._failures.pop(name, None)
                for k, v in r.items():
                    if k in CHANGE_ONLY_KEYS:
                        if k in self._last and self._last[k] == v:
                            continue
                        self._last[k] = v
                    out[k] = v
        return out

    def _mark_unsupported(self, name: str, reason: str) -> None:
        self.unsupported[name] = reason
        self._pending_unsupported[name] = reason

    def take_new_unsupported(self) -> dict[str, str]:
        """Fields found unsupported since the last call (each reported once)."""
        new, self._pending_unsupported = self._pending_unsupported, {}
        return new


def gpu_inventory() -> dict:
    """GPU and driver facts for environment.json. Never raises."""
    out: dict[str, Any] = {"available": False, "reason": None, "driver": None, "cuda_driver": None,
                           "nvml_version": None, "gpus": []}
    try:
        session = NvmlSession.open()
    except NvmlUnavailable as exc:
        out["reason"] = str(exc)
        return out
    except Exception as exc:  # noqa: BLE001 - an inventory must never stop a run
        out["reason"] = f"NVML: {type(exc).__name__}: {exc}"
        return out
    try:
        out.update(session.driver_info())
        out["available"] = True
        for i in sorted(session.handles):
            try:
                static = session.static_info(i)
                static.pop("gpu")
                info = {"index": i, **static, "xid_events": session.xid_events_supported(i), "lost": None}
            except GpuLost as exc:
                info = {"index": i, "lost": str(exc)}
            out["gpus"].append(info)
    except Exception as exc:  # noqa: BLE001
        out["reason"] = f"NVML: {type(exc).__name__}: {exc}"
    finally:
        session.close()
    return out
