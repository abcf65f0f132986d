"""A scripted stand-in for the ``pynvml`` module (nvidia-ml-py), for machines without an NVIDIA GPU.

A STAND-IN, never a real GPU: used only by ``gpu-stress selftest`` (its NVML fault class, through
``STRESS_NVML_MODULE=stress.selftest.fake_nvml``) and by the tests (``tests/fake_nvml.py`` is this module).

Same function names, constants and exception classes as pynvml (``NVMLError``, ``NVMLError_NotSupported``,
``NVMLError_GpuIsLost``, ..., built the same way pynvml builds them). Per GPU, any NVML function can be
scripted: a value, a :class:`Seq` of values (one per call, the last one repeats), a callable
``f(call_number)``, or an exception (class or instance) to raise. :meth:`FakeNvml.lose` makes a GPU
disappear (every call on it raises ``NVMLError_GpuIsLost``, and event waits report it);
:meth:`FakeNvml.push_xid` delivers a critical-Xid event through ``nvmlEventSetWait``.

Use it by monkeypatching ``stress.hw.nvml._load_pynvml`` to return a :class:`FakeNvml`, or, from a
subprocess, with ``STRESS_NVML_MODULE=fake_nvml`` and this folder on PYTHONPATH: the module itself then
acts as pynvml with one default GPU.
"""
from __future__ import annotations

import os
import queue
import string
import sys
import threading
from dataclasses import dataclass
from typing import Any

# ---- constants, as in pynvml ----
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
nvmlMemory_v2 = 0x02000028
nvmlEventTypeSingleBitEccError = 0x1
nvmlEventTypeDoubleBitEccError = 0x2
nvmlEventTypePState = 0x4
nvmlEventTypeXidCriticalError = 0x8
nvmlEventTypeClock = 0x10
nvmlEventTypeAll = 0x1F
nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonSwPowerCap = 0x4
nvmlClocksEventReasonHwSlowdown = 0x8
nvmlClocksEventReasonSwThermalSlowdown = 0x20


class NVMLError(Exception):
    """As pynvml: ``NVMLError(code)`` becomes the matching ``NVMLError_*`` subclass."""

    _valClassMapping: dict[int, type] = {}

    def __new__(cls, value: int = NVML_ERROR_UNKNOWN):
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int = NVML_ERROR_UNKNOWN):
        super().__init__()

    def __str__(self) -> str:
        return _ERROR_TEXT.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return getattr(other, "value", None) == self.value

    __hash__ = Exception.__hash__


_ERROR_TEXT = {
    NVML_ERROR_NOT_SUPPORTED: "Not Supported", NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost", NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded", NVML_ERROR_UNKNOWN: "Unknown Error",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
}


def _make_error_classes() -> None:
    module = sys.modules[__name__]
    for name in [n for n in dir(module) if n.startswith("NVML_ERROR_")]:
        cls_name = "NVMLError_" + string.capwords(name.replace("NVML_ERROR_", ""), "_").replace("_", "")
        value = getattr(module, name)

        def make_new(val: int):
            def new(typ, *args):
                return NVMLError.__new__(typ, val)
            return new
        cls = type(cls_name, (NVMLError,), {"__new__": make_new(value), "__init__": lambda self, *a: None})
        cls.__module__ = __name__
        setattr(module, cls_name, cls)
        NVMLError._valClassMapping[value] = cls


_make_error_classes()
# Re-exported by name for type checkers and readers; created above.
NVMLError_NotSupported: type = NVMLError._valClassMapping[NVML_ERROR_NOT_SUPPORTED]
NVMLError_NoPermission: type = NVMLError._valClassMapping[NVML_ERROR_NO_PERMISSION]
NVMLError_GpuIsLost: type = NVMLError._valClassMapping[NVML_ERROR_GPU_IS_LOST]
NVMLError_Timeout: type = NVMLError._valClassMapping[NVML_ERROR_TIMEOUT]
NVMLError_Unknown: type = NVMLError._valClassMapping[NVML_ERROR_UNKNOWN]
NVMLError_FunctionNotFound: type = NVMLError._valClassMapping[NVML_ERROR_FUNCTION_NOT_FOUND]
NVMLError_LibraryNotFound: type = NVMLError._valClassMapping[NVML_ERROR_LIBRARY_NOT_FOUND]
NVMLError_DriverNotLoaded: type = NVMLError._valClassMapping[NVML_ERROR_DRIVER_NOT_LOADED]

GiB = 1 << 30
MiB = 1 << 20


# ---- structures, with pynvml's field names ----
@dataclass
class Memory:
    total: int
    free: int
    used: int


@dataclass
class Memory_v2:
    version: int
    total: int
    reserved: int
    free: int
    used: int


@dataclass
class BAR1Memory:
    bar1Total: int
    bar1Free: int
    bar1Used: int


@dataclass
class Utilization:
    gpu: int
    memory: int


@dataclass
class PciInfo:
    busId: str
    busIdLegacy: str
    domain: int
    bus: int
    device: int
    pciDeviceId: int = 0x268410DE


@dataclass
class ProcessInfo:
    pid: int
    usedGpuMemory: int | None
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


@dataclass
class EventData:
    device: Any
    eventType: int
    eventData: int
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


class Seq(list):
    """Per-call values for a scripted function: call n gets item n; the last one repeats."""


class Handle:
    def __init__(self, index: int):
        self.index = index

    def __repr__(self) -> str:
        return f"<fake nvmlDevice {self.index}>"


class EventSet:
    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.handles: list[Handle] = []
        self.freed = False


def default_script(index: int = 0) -> dict[str, Any]:
    """A GeForce-like GPU under load: values move from call to call; ECC/serial not supported."""
    total = 24 * GiB
    reserved = 300 * MiB

    def used(n: int) -> int:
        return min(total - reserved, 900 * MiB + n * 37 * MiB)

    bus = f"00000000:{index + 1:02X}:00.0"
    return {
        "nvmlDeviceGetName": "NVIDIA GeForce RTX 4090",
        "nvmlDeviceGetUUID": f"GPU-0b11d014-1685-04bd-26ed-5fc0bc1c44a{index}",
        "nvmlDeviceGetSerial": NVMLError_NotSupported,
        "nvmlDeviceGetVbiosVersion": "95.02.18.80.5F",
        "nvmlDeviceGetPciInfo": PciInfo(bus, bus[4:], 0, index + 1, 0),
        "nvmlDeviceGetPersistenceMode": 0,
        "memory_v2": lambda n: Memory_v2(nvmlMemory_v2, total, reserved, total - reserved - used(n), used(n)),
        "memory_v1": lambda n: Memory(total, total - used(n), used(n)),
        "nvmlDeviceGetBAR1MemoryInfo": lambda n: BAR1Memory(256 * MiB, 256 * MiB - (12 + n % 3) * MiB,
                                                            (12 + n % 3) * MiB),
        "nvmlDeviceGetUtilizationRates": lambda n: Utilization(90 + n % 10, 40 + n % 20),
        "clock_graphics": lambda n: 2520 - (n % 4) * 15,
        "clock_mem": 10501,
        "nvmlDeviceGetCurrentClocksEventReasons": lambda n: nvmlClocksEventReasonSwPowerCap if n % 5 == 4 else 0,
        "nvmlDeviceGetTemperature": lambda n: 60 + n % 15,
        "nvmlDeviceGetPowerUsage": lambda n: 350000 + (n % 7) * 1234,
        "nvmlDeviceGetEnforcedPowerLimit": 450000,
        "nvmlDeviceGetPowerManagementDefaultLimit": 450000,
        "nvmlDeviceGetPerformanceState": 2,
        "nvmlDeviceGetCurrPcieLinkGeneration": 4,
        "nvmlDeviceGetCurrPcieLinkWidth": 16,
        "nvmlDeviceGetMaxPcieLinkGeneration": 4,
        "nvmlDeviceGetMaxPcieLinkWidth": 16,
        "nvmlDeviceGetPcieReplayCounter": 0,
        "nvmlDeviceGetRemappedRows": NVMLError_NotSupported,
        "nvmlDeviceGetRetiredPages": NVMLError_NotSupported,
        "nvmlDeviceGetRetiredPagesPendingStatus": NVMLError_NotSupported,
        "nvmlDeviceGetDisplayActive": 1,
        "nvmlDeviceGetDisplayMode": 1,
        "nvmlDeviceGetGraphicsRunningProcesses": [],
        "nvmlDeviceGetComputeRunningProcesses": [],
        "nvmlDeviceGetSupportedEventTypes": nvmlEventTypeAll,
    }


class FakeNvml:
    """One scripted NVML: ``FakeNvml(gpus=[script0, script1], driver=..., init_error=code)``.

    ``calls`` counts calls per function name (per GPU for device functions: ``(name, index)``).
    """

    def __init__(self, gpus: list[dict[str, Any]] | None = None, *, driver: str = "550.54.14",
                 cuda: int = 12040, init_error: int | None = None, sysfs_root: str | None = None):
        self._scripts = gpus if gpus is not None else [default_script(0)]
        # The GPU's sysfs (AER counters, BARs, DRM connectors): a tree made with make_sysfs(), or by
        # default one that has none of them, so no test depends on this machine's /sys.
        self.sysfs_root = sysfs_root or "/nonexistent/fake-nvml-sysfs"
        self.driver = driver
        self.cuda = cuda
        self.init_error = init_error
        self.handles = [Handle(i) for i in range(len(self._scripts))]
        self.lost: set[int] = set()
        self.calls: dict[Any, int] = {}
        self.initialized = 0
        self.event_sets: list[EventSet] = []
        self._lock = threading.Lock()
        # module-like attributes
        module = sys.modules[__name__]
        for name in dir(module):
            if name.startswith(("NVML_", "nvml", "NVMLError")) and not hasattr(type(self), name):
                setattr(self, name, getattr(module, name))

    # ---- scripting ----
    def lose(self, index: int) -> None:
        """From now on the GPU is gone: its calls raise GpuIsLost; event waits report it."""
        with self._lock:
            self.lost.add(index)
            for es in self.event_sets:
                if any(h.index == index for h in es.handles):
                    es.queue.put(("error", NVML_ERROR_GPU_IS_LOST))

    def push_xid(self, index: int, xid: int) -> None:
        """Deliver a critical-Xid event for GPU ``index`` to every event set it is registered in."""
        with self._lock:
            for es in self.event_sets:
                for h in es.handles:
                    if h.index == index:
                        es.queue.put(("xid", h, xid))

    def set(self, index: int, name: str, value: Any) -> None:
        self._scripts[index][name] = value

    # ---- internals ----
    def _count(self, key: Any) -> int:
        with self._lock:
            n = self.calls.get(key, 0)
            self.calls[key] = n + 1
            return n

    def _check_init(self) -> None:
        if self.initialized <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _value(self, handle: Handle, key: str, fn_name: str | None = None) -> Any:
        self._check_init()
        n = self._count((fn_name or key, handle.index))
        if handle.index in self.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        v = self._scripts[handle.index].get(key, NVMLError_NotSupported)
        if isinstance(v, type) and issubclass(v, BaseException):
            raise v()
        if isinstance(v, BaseException):
            raise v
        if isinstance(v, Seq):
            v = v[min(n, len(v) - 1)]
            if isinstance(v, BaseException) or (isinstance(v, type) and issubclass(v, BaseException)):
                raise v() if isinstance(v, type) else v
            return v
        if callable(v) and not isinstance(v, type):
            return v(n)
        return v

    def __getattr__(self, name: str) -> Any:
        # Any nvmlDeviceGet* not written out below reads the script by its own name.
        if name.startswith("nvmlDeviceGet"):
            def device_fn(handle: Handle, *args: Any) -> Any:
                return self._value(handle, name)
            device_fn.__name__ = name
            return device_fn
        raise AttributeError(name)

    # ---- system ----
    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized += 1

    def nvmlInitWithFlags(self, flags: int) -> None:
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        self._check_init()
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check_init()
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check_init()
        return self.cuda

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._check_init()
        return self.cuda

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._check_init()
        return "12." + self.driver

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.handles)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._check_init()
        if not 0 <= index < len(self.handles):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.handles[index]

    def nvmlDeviceGetIndex(self, handle: Handle) -> int:
        self._check_init()
        return handle.index

    # ---- device functions with arguments ----
    def nvmlDeviceGetMemoryInfo(self, handle: Handle, version: int | None = None) -> Any:
        key = "memory_v2" if version else "memory_v1"
        return self._value(handle, key, "nvmlDeviceGetMemoryInfo")

    def nvmlDeviceGetClockInfo(self, handle: Handle, clock_type: int) -> int:
        key = {NVML_CLOCK_GRAPHICS: "clock_graphics", NVML_CLOCK_MEM: "clock_mem"}.get(clock_type, "clock_sm")
        return self._value(handle, key, f"nvmlDeviceGetClockInfo:{key}")

    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int:
        return self._value(handle, "nvmlDeviceGetTemperature")

    def nvmlDeviceGetRetiredPages(self, handle: Handle, cause: int) -> list[int]:
        return self._value(handle, "nvmlDeviceGetRetiredPages")

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Handle) -> int:
        return self._value(handle, "nvmlDeviceGetCurrentClocksThrottleReasons")

    # ---- events ----
    def nvmlEventSetCreate(self) -> EventSet:
        self._check_init()
        es = EventSet()
        with self._lock:
            self.event_sets.append(es)
        return es

    def nvmlDeviceRegisterEvents(self, handle: Handle, mask: int, es: EventSet) -> None:
        self._check_init()
        if handle.index in self.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        supported = self._value(handle, "nvmlDeviceGetSupportedEventTypes", "register")
        if not mask & supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        es.handles.append(handle)

    def nvmlEventSetWait(self, es: EventSet, timeoutms: int) -> EventData:
        self._check_init()
        try:
            item = es.queue.get(timeout=timeoutms / 1000)
        except queue.Empty:
            raise NVMLError(NVML_ERROR_TIMEOUT) from None
        if item[0] == "error":
            raise NVMLError(item[1])
        _, handle, xid = item
        return EventData(handle, nvmlEventTypeXidCriticalError, xid)

    nvmlEventSetWait_v2 = nvmlEventSetWait

    def nvmlEventSetFree(self, es: EventSet) -> None:
        es.freed = True


# Used as a module (STRESS_NVML_MODULE=fake_nvml): one default GPU, or none with FAKE_NVML_GPUS=0,
# or no driver at all with FAKE_NVML_INIT_ERROR=<code>.
_default = FakeNvml(
    [default_script(i) for i in range(int(os.environ.get("FAKE_NVML_GPUS", "1")))],
    init_error=int(os.environ["FAKE_NVML_INIT_ERROR"]) if os.environ.get("FAKE_NVML_INIT_ERROR") else None,
)


# selftest's control file (``STRESS_SELFTEST_NVML_CONTROL``): when its text becomes ``lost`` the default GPU
# is lost; ``xid N`` delivers a critical-Xid event. Read at most every 0.2 s, from the sampler's own calls.
CONTROL_ENV = "STRESS_SELFTEST_NVML_CONTROL"
_control = {"seen": "", "checked": 0.0}


def _apply_control() -> None:
    path = os.environ.get(CONTROL_ENV)
    if not path:
        return
    import time

    now = time.monotonic()
    if now - _control["checked"] < 0.2:
        return
    _control["checked"] = now
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(64).strip()
    except OSError:
        return
    if text == _control["seen"]:
        return
    _control["seen"] = text
    if text == "lost":
        _default.lose(0)
    elif text.startswith("xid ") and text[4:].isdigit():
        _default.push_xid(0, int(text[4:]))


def __getattr__(name: str) -> Any:
    _apply_control()
    return getattr(_default, name)


def make_sysfs(root: str | os.PathLike, bus: str = "0000:01:00.0", *, aer: tuple[int, int, int] = (0, 0, 0),
               bars: list[tuple[int, int]] | None = None, connectors: dict[str, str] | None = None) -> str:
    """A sysfs tree for one fake GPU, laid out as the kernel does (aer_dev_*, resource, drm cardN)."""
    from pathlib import Path

    root = Path(root)
    dev = root / "bus" / "pci" / "devices" / bus
    dev.mkdir(parents=True, exist_ok=True)
    cor, nonfatal, fatal = aer
    (dev / "aer_dev_correctable").write_text(f"RxErr {cor}\nBadTLP 0\nBadDLLP 0\nRollover 0\nTimeout 0\n"
                                             f"NonFatalErr 0\nCorrIntErr 0\nHeaderOF 0\nTOTAL_ERR_COR {cor}\n")
    (dev / "aer_dev_nonfatal").write_text(f"Undefined 0\nDLP 0\nSDES 0\nTLP 0\nFCP 0\nCmpltTO {nonfatal}\n"
                                          f"TOTAL_ERR_NONFATAL {nonfatal}\n")
    (dev / "aer_dev_fatal").write_text(f"Undefined 0\nDLP {fatal}\nTOTAL_ERR_FATAL {fatal}\n")
    bars = bars if bars is not None else [(0xf6000000, 16 << 20), (0xe0000000, 256 << 20), (0, 0),
                                          (0xf0000000, 32 << 20), (0, 0), (0xe000, 128)]
    lines = [f"0x{start:016x} 0x{(start + size - 1) if size else 0:016x} 0x{0x40200 if size else 0:016x}"
             for start, size in bars]
    (dev / "resource").write_text("\n".join(lines + ["0x0000000000000000 0x0000000000000000 0x0000000000000000"]) + "\n")
    drm = root / "class" / "drm"
    card = drm / "card1"
    card.mkdir(parents=True, exist_ok=True)
    if not (card / "device").exists():
        os.symlink(dev, card / "device")
    for name, status in (connectors or {"DP-1": "connected", "DP-2": "disconnected", "HDMI-A-1": "connected"}).items():
        c = drm / f"card1-{name}"
        c.mkdir(exist_ok=True)
        (c / "status").write_text(status + "\n")
        (c / "enabled").write_text(("enabled" if status == "connected" else "disabled") + "\n")
    return str(root)
