"""NVIDIA Xid codes: what each one means and which kind of failure it points at.

The descriptions follow NVIDIA's published Xid listing (docs.nvidia.com/deploy/xid-errors, "Xid Error
Listing", codes 1-143) and the names in the open kernel modules' ``nverror.h``; 154 comes from NVIDIA's
newer Xid catalog. Codes NVIDIA lists as "Unused" or "Reserved" are left out and fall back to
"unlisted Xid N". The categories are ours: they sort an Xid by what it says about the desktop-after-load
problem this suite reproduces (a broken display engine, a firmware (GSP) hang, a GPU lost from the bus,
memory/ECC trouble, or a fault of one application).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DISPLAY = "display-engine"
GSP = "gsp"
FALLEN_OFF_BUS = "fallen-off-bus"
MEMORY = "memory"
APPLICATION = "application"
OTHER = "other"

CATEGORIES = (DISPLAY, GSP, FALLEN_OFF_BUS, MEMORY, APPLICATION, OTHER)

_CATEGORY_OF: dict[int, str] = {
    **{x: DISPLAY for x in (16, 19, 56, *range(111, 119))},
    119: GSP, 120: GSP,
    79: FALLEN_OFF_BUS,
    # 140 (unrecovered ECC error) is not in the list we were given, but it is an ECC error all the same.
    **{x: MEMORY for x in (48, 63, 64, 92, 94, 95, 140)},
    **{x: APPLICATION for x in (13, 31, 43, 45, 68, 69)},
}

DESCRIPTIONS: dict[int, str] = {
    1: "Invalid or corrupted push buffer stream",
    2: "Invalid or corrupted push buffer stream",
    3: "Invalid or corrupted push buffer stream",
    4: "Invalid or corrupted push buffer stream, or GPU semaphore timeout",
    6: "Invalid or corrupted push buffer stream",
    7: "Invalid or corrupted push buffer address",
    8: "GPU stopped processing",
    9: "Driver error programming GPU",
    11: "Invalid or corrupted push buffer stream",
    12: "Driver error handling GPU exception",
    13: "Graphics Engine Exception",
    16: "Display engine hung",
    18: "Bus mastering disabled in PCI Config Space",
    19: "Display Engine error",
    20: "Invalid or corrupted Mpeg push buffer",
    21: "Invalid or corrupted Motion Estimation push buffer",
    22: "Invalid or corrupted Video Processor push buffer",
    24: "GPU semaphore timeout",
    25: "Invalid or illegal push buffer stream",
    26: "Framebuffer timeout",
    27: "Video processor exception",
    28: "Video processor exception",
    29: "Video processor exception",
    30: "GPU semaphore access error",
    31: "GPU memory page fault",
    32: "Invalid or corrupted push buffer stream",
    33: "Internal micro-controller error",
    34: "Video processor exception",
    35: "Video processor exception",
    36: "Video processor exception",
    37: "Driver firmware error",
    38: "Driver firmware error",
    42: "Video processor exception",
    43: "GPU stopped processing",
    44: "Graphics Engine fault during context switch",
    45: "Preemptive cleanup, due to previous errors",
    46: "GPU stopped processing",
    47: "Video processor exception",
    48: "Double Bit ECC Error",
    54: "Auxiliary power is not connected to the GPU board",
    56: "Display Engine error",
    57: "Error programming video memory interface",
    58: "Unstable video memory interface detected",
    59: "Internal micro-controller error (older drivers)",
    60: "Video processor exception",
    61: "Internal micro-controller breakpoint/warning (newer drivers)",
    62: "Internal micro-controller halt (newer drivers)",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapper recording failure",
    65: "Video processor exception",
    66: "Illegal access by driver",
    67: "Illegal access by driver",
    68: "NVDEC0 Exception",
    69: "Graphics Engine class error",
    70: "CE3: Unknown Error",
    71: "CE4: Unknown Error",
    72: "CE5: Unknown Error",
    73: "NVENC2 Error",
    74: "NVLINK Error",
    75: "CE6: Unknown Error",
    76: "CE7: Unknown Error",
    77: "CE8: Unknown Error",
    78: "vGPU Start Error",
    79: "GPU has fallen off the bus",
    80: "Corrupted data sent to GPU",
    81: "VGA Subsystem Error",
    82: "NVJPG0 Error",
    83: "NVDEC1 Error",
    84: "NVDEC2 Error",
    85: "CE9: Unknown Error",
    86: "OFA Exception",
    88: "NVDEC3 Error",
    89: "NVDEC4 Error",
    92: "High single-bit ECC error rate",
    93: "Non-fatal violation of provisioned InfoROM wear limit",
    94: "Contained ECC error",
    95: "Uncontained ECC error",
    96: "NVDEC5 Error",
    97: "NVDEC6 Error",
    98: "NVDEC7 Error",
    99: "NVJPG1 Error",
    100: "NVJPG2 Error",
    101: "NVJPG3 Error",
    102: "NVJPG4 Error",
    103: "NVJPG5 Error",
    104: "NVJPG6 Error",
    105: "NVJPG7 Error",
    106: "SMBPBI Test Message",
    107: "SMBPBI Test Message Silent",
    109: "Context Switch Timeout Error",
    110: "Security Fault Error",
    111: "Display Bundle Error Event",
    112: "Display Supervisor Error",
    113: "DP Link Training Error",
    114: "Display Pipeline Underflow Error",
    115: "Display Core Channel Error",
    116: "Display Window Channel Error",
    117: "Display Cursor Channel Error",
    118: "Display Pixel Pipeline Error",
    119: "GSP RPC Timeout",
    120: "GSP Error",
    121: "C2C Link Error",
    122: "SPI PMU RPC Read Failure",
    123: "SPI PMU RPC Write Failure",
    124: "SPI PMU RPC Erase Failure",
    125: "Inforom FS Failure",
    137: "NVLink FLA privilege error",
    140: "Unrecovered ECC Error",
    143: "GPU Initialization Failure",
    154: "GPU Recovery Action Changed",
}


def category(xid: int) -> str:
    """One of :data:`CATEGORIES`."""
    return _CATEGORY_OF.get(xid, OTHER)


def description(xid: int) -> str:
    return DESCRIPTIONS.get(xid, f"unlisted Xid {xid}")


def classify(xid: int) -> tuple[str, str]:
    """``(category, description)`` of an Xid code."""
    return category(xid), description(xid)


@dataclass(frozen=True)
class XidLine:
    """One ``NVRM: Xid (...)`` kernel-log line, parsed."""

    xid: int
    bus: str | None          # as the driver printed it, e.g. "0000:01:00"
    pid: int | None
    name: str | None         # process name the driver blamed, if any
    detail: str              # the rest of the message after the code


# NVRM: Xid (PCI:0000:01:00): 79, pid=1234, name=Xorg, GPU has fallen off the bus.
# NVRM: Xid (0000:03:00): 14, Channel 00000001               (older drivers: no "PCI:")
_XID_RE = re.compile(r"NVRM: Xid \((?:PCI:)?(?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}(?:\.[0-7])?)\)"
                     r":\s*(?P<xid>\d+)(?:,\s*(?P<rest>.*))?$")
_PID_RE = re.compile(r"^pid='?(?P<pid>\d+|<unknown>)'?,\s*")
_NAME_RE = re.compile(r"^name=(?P<name>[^,]*),?\s*")


def parse_xid_line(message: str) -> XidLine | None:
    """Parse the message part of a kernel-log line; None unless it is an Xid report."""
    m = _XID_RE.search(message.rstrip())
    if not m:
        return None
    rest = (m.group("rest") or "").strip()
    pid = name = None
    pm = _PID_RE.match(rest)
    if pm:
        pid = int(pm.group("pid")) if pm.group("pid").isdigit() else None
        rest = rest[pm.end():]
        nm = _NAME_RE.match(rest)
        if nm:
            name = nm.group("name").strip() or None
            if name == "<unknown>":
                name = None
            rest = rest[nm.end():]
    return XidLine(xid=int(m.group("xid")), bus=m.group("bus"), pid=pid, name=name, detail=rest.strip())


def normalize_bus_id(bus: str | None) -> tuple[int, int, int] | None:
    """``"00000000:01:00.0"`` (NVML) and ``"0000:01:00"`` (kernel log) -> ``(0, 1, 0)``."""
    if not bus:
        return None
    m = re.fullmatch(r"(?:PCI:)?([0-9A-Fa-f]{1,8}):([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})(?:\.[0-7])?", bus.strip())
    if not m:
        return None
    return int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16)


# What NVIDIA asks for after each Xid that a desktop run meets, from the resolution buckets of
# NVIDIA's Xid catalog (docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html: RESTART_APP,
# RESET_GPU, RESTART_BM = reboot the machine) and, for 79, NVIDIA's answer in
# github.com/NVIDIA/open-gpu-kernel-modules/issues/507. On a desktop, "reset the GPU" means a reboot:
# the GPU that drives the screen cannot be reset while the compositor holds it.
ACTIONS: dict[int, str] = {
    13: "RESTART_APP: usually the faulting application's error; if other applications hit it too, "
        "report it with nvidia-bug-report.log.gz",
    16: "report it with nvidia-bug-report.log.gz: the display engine hung",
    31: "RESTART_APP: an illegal GPU memory access by the named process (or by the driver on its "
        "behalf); the process name in the line says which",
    43: "none: the driver already stopped the faulting application's channel",
    45: "none: cleanup after an earlier error or a killed process; the Xid before it is the one to read",
    48: "RESET_GPU: an uncorrectable ECC error; repeated ones mean the board needs service",
    56: "report it with nvidia-bug-report.log.gz: a display engine error (driver or hardware)",
    62: "RESET_GPU: an internal micro-controller halted (reboot on a desktop)",
    63: "RESET_GPU to activate the remapped row or retired page",
    64: "RESET_GPU; if it recurs the board needs service (remapping failed)",
    69: "RESTART_APP: a graphics engine class error raised by the application",
    79: "RESTART_BM (reboot): the GPU left the PCIe bus; check power cables, seating, PSU, "
        "temperatures and the PCIe AER counters before blaming the driver",
    109: "RESTART_APP: a context-switch timeout; if the desktop is gone too, reboot and report it",
    119: "RESET_GPU (reboot on a desktop): the GSP firmware stopped answering; report it with "
         "nvidia-bug-report.log.gz",
    120: "RESET_GPU (reboot on a desktop): a GSP firmware error; report it with nvidia-bug-report.log.gz",
    154: "do what the driver now asks: 'nvidia-smi -q' shows the GPU Recovery Action (None, GPU Reset, "
         "Node Reboot, Drain P2P, Drain and Reset)",
}


def action(xid: int) -> str | None:
    """NVIDIA's recommended action for an Xid code, or None where this table does not list one."""
    return ACTIONS.get(xid)
