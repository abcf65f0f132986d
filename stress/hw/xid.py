"""NVIDIA Xid codes: what each one means, which kind of failure it points at, and what NVIDIA asks for.

:data:`DESCRIPTIONS` is the "Failure" column of NVIDIA's Xid Error Listing (docs.nvidia.com/deploy/
xid-errors/archive/index.html, "3. Xid Error Listing", codes 1-143), with the codes that listing has
not (39-41, 144-158) from the Description column of NVIDIA's Xid catalog (docs.nvidia.com/deploy/
xid-errors/analyzing-xid-catalog.html, Table 1 Xids); both checked on 2026-12-01. Codes listed as
"Unused" or "Reserved" in both are left out and fall back to "unlisted Xid N". NVIDIA's recommended
action per code, with where it was read, is data: :data:`CATALOG_FILE` (see :func:`action_info`).
The categories are ours: they sort an Xid by what it says about the desktop-after-load problem this
suite reproduces (a broken display engine, a firmware (GSP) hang, a GPU lost from the bus, memory/ECC
trouble, or a fault of one application).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    # not in the archive listing; the catalog's Description column
    39: "Copy Engine Exception",
    40: "Copy Engine Exception",
    41: "Copy Engine Exception",
    144: "NVLINK: SAW Error",
    145: "NVLINK: RLW Error",
    146: "NVLINK: TLW Error",
    147: "NVLINK: TREX Error",
    148: "NVLINK: NVLPW_CTRL Error",
    149: "NVLINK: NETIR Error",
    150: "NVLINK: MSE Error",
    154: "GPU Recovery Action Changed",
    155: "NVLINK: SW Defined Error",
    156: "Resource Retirement Event",
    157: "Resource Retirement Failure",
    158: "GPU Fatal Timeout",
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




# ---- NVIDIA's recommended action per code (stress/hw/xid_catalog.json) ----
CATALOG_FILE = Path(__file__).with_name("xid_catalog.json")
STATUSES = ("verified", "unverified")


@dataclass(frozen=True)
class XidAction:
    """One entry of :data:`CATALOG_FILE`: NVIDIA's resolution buckets for a code and where they were read."""

    xid: int
    mnemonic: str
    description: str                 # the catalog's Description ("Unused" for deprecated codes)
    immediate: str                   # Resolution Bucket (Immediate Action), literal
    investigatory: str | None        # Resolution Bucket (Investigatory Action), literal
    status: str                      # "verified" | "unverified"
    source: dict | None              # {"doc", "where", "title", "url", "table"}; None only when unverified
    nvidia_note: str | None = None   # NVIDIA's trigger-condition text, shortened
    desktop_note: str | None = None  # this suite's reading for a desktop: ours, not NVIDIA's
    archive_description: str | None = None
    buckets: dict = field(default_factory=dict)   # bucket -> its wording, for the buckets this entry names

    @property
    def verified(self) -> bool:
        return self.status == "verified"

    def text(self) -> str:
        """The action as one line; an unverified entry says so first, and a code the catalog lists as
        unused says that too, so nothing remembered or out of scope reads as NVIDIA's instruction."""
        out = self.immediate
        if self.investigatory and self.investigatory != self.immediate and not self.investigatory.startswith("N/A"):
            out += f"; if it recurs or is unexpected: {self.investigatory}"
        if self.description == "Unused":
            out += f" (the catalog lists Xid {self.xid} as unused on the data-center GPUs it covers)"
        if not self.verified:
            out = f"unverified (not checked against NVIDIA's Xid catalog): {out}"
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"xid": self.xid, "mnemonic": self.mnemonic, "immediate": self.immediate,
                "investigatory": self.investigatory, "status": self.status, "source": self.source,
                "nvidia_note": self.nvidia_note, "desktop_note": self.desktop_note,
                "buckets": dict(self.buckets), "text": self.text()}


def load_catalog(path: Path = CATALOG_FILE) -> dict[int, XidAction]:
    """The action table. Raises ValueError naming the entry and key that is wrong: every entry needs
    its buckets, and a ``source`` naming one of the file's ``sources`` unless it is ``unverified``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    sources = data.get("sources") or {}
    glossary = data.get("buckets") or {}
    out: dict[int, XidAction] = {}
    for n, e in enumerate(data.get("xids", [])):
        where = f"{path}: xids[{n}]"
        if not isinstance(e.get("xid"), int) or isinstance(e.get("xid"), bool):
            raise ValueError(f"{where}: xid must be an integer")
        missing = [k for k in ("mnemonic", "description", "immediate", "status") if not e.get(k)]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        if e["status"] not in STATUSES:
            raise ValueError(f"{where}: status must be verified or unverified, not {e['status']!r}")
        src = e.get("source")
        if src is None and e["status"] == "verified":
            raise ValueError(f"{where}: a verified entry needs a source (or mark it status: unverified)")
        if src is not None:
            if not isinstance(src, dict) or src.get("doc") not in sources or not src.get("where"):
                raise ValueError(f"{where}: source must name one of {sorted(sources)} as doc, and where in it")
            doc = sources[src["doc"]]
            src = {"doc": src["doc"], "where": src["where"], "title": doc.get("title"), "url": doc.get("url"),
                   "table": doc.get("table")}
        if e["xid"] in out:
            raise ValueError(f"{where}: Xid {e['xid']} appears twice")
        names = [b for b in (e["immediate"], e.get("investigatory")) if b]
        unknown = [b for b in names if b not in glossary]
        if unknown:
            raise ValueError(f"{where}: bucket {unknown[0]!r} is not in the file's buckets")
        out[e["xid"]] = XidAction(
            xid=e["xid"], mnemonic=e["mnemonic"], description=e["description"], immediate=e["immediate"],
            investigatory=e.get("investigatory"), status=e["status"], source=src,
            nvidia_note=e.get("nvidia_note"), desktop_note=e.get("desktop_note"),
            archive_description=e.get("archive_description"), buckets={b: glossary[b] for b in names})
    return out


ACTIONS: dict[int, XidAction] = load_catalog()


def action_info(xid: int) -> XidAction | None:
    """NVIDIA's documented action for a code with its provenance, or None where the table has none."""
    return ACTIONS.get(xid)


def action(xid: int) -> str | None:
    """NVIDIA's recommended action for an Xid code as one line (see :meth:`XidAction.text`), or None."""
    e = ACTIONS.get(xid)
    return e.text() if e else None
