"""The one table of sampler fields: compact journal key -> long name, label, unit, chart, carried.

The samplers (``stress.hw.nvml``, ``stress.hw.host``, the worker's allocator stats) write the compact
keys to keep an 8-hour journal small; the fold (``stress.record``), the report, the bundle's thinning
and the history read them through this table and nothing else. A field written only when it changes
is ``carry``: readers carry its last value forward. docs/monitors.md lists the same table (a test
checks that the two agree).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class Field:
    name: str                 # the long name (report.json, history)
    label: str                # what a person reads
    unit: str = ""
    kind: Kind = "gauge"
    chart: bool = False       # goes into the timeline and the charts
    carry: bool = False       # written only when it changes (readers carry it forward)


def _f(name: str, label: str, unit: str = "", kind: Kind = "gauge", *, chart: bool = False,
       carry: bool = False) -> Field:
    return Field(name, label, unit, kind, chart, carry)


# ``nvml`` events: compact key -> field. Keys not listed here are taken under their own name.
NVML: dict[str, Field] = {
    "mu": _f("mem_used", "GPU memory used", "bytes", chart=True),
    "mf": _f("mem_free", "GPU memory free", "bytes"),
    "mr": _f("mem_reserved", "GPU memory reserved by the driver", "bytes", carry=True),
    "mt": _f("mem_total", "GPU memory total", "bytes", carry=True),
    "b1u": _f("bar1_used", "BAR1 used", "bytes", chart=True),
    "b1t": _f("bar1_total", "BAR1 total", "bytes", carry=True),
    "ug": _f("util_gpu", "GPU utilization", "%", chart=True),
    "um": _f("util_mem", "memory controller utilization", "%"),
    "cg": _f("clk_gfx", "graphics clock", "MHz", chart=True),
    "cm": _f("clk_mem", "memory clock", "MHz", chart=True),
    "tc": _f("temp", "GPU temperature", "°C", chart=True),
    "pw": _f("power", "power draw", "W", chart=True),
    "pl": _f("power_limit", "power limit", "W", carry=True),
    "ps": _f("pstate", "performance state"),
    "prc": _f("pcie_replay", "PCIe replay counter", "count", "counter", chart=True, carry=True),
    "pg": _f("pcie_gen", "PCIe link generation", carry=True),
    "pwd": _f("pcie_width", "PCIe link width", carry=True),
    "thr": _f("throttle", "clock event (throttle) reasons, bitmask"),
    "da": _f("display_active", "display active", carry=True),
    "dm": _f("display_mode", "display mode", carry=True),
}
# PCIe AER counters and DRM connectors (sysfs, stress.hw.pci), written on slow ticks when they change.
# List-valued ``nvml`` keys: one compact key, several long names (all carried).
NVML_LISTS: dict[str, tuple[Field, ...]] = {
    "rr": (_f("remapped_corr", "rows remapped (correctable errors)", "count", "counter", carry=True),
           _f("remapped_unc", "rows remapped (uncorrectable errors)", "count", "counter", carry=True),
           _f("remap_pending", "row remapping pending", carry=True),
           _f("remap_failure", "row remapping failed", carry=True)),
    "rp": (_f("retired_sbe", "pages retired (single-bit ECC)", "count", "counter", carry=True),
           _f("retired_dbe", "pages retired (double-bit ECC)", "count", "counter", carry=True),
           _f("retired_pending", "page retirement pending", carry=True)),
    "aer": (_f("aer_correctable", "PCIe AER correctable errors", "count", "counter", chart=True, carry=True),
            _f("aer_nonfatal", "PCIe AER non-fatal errors", "count", "counter", chart=True, carry=True),
            _f("aer_fatal", "PCIe AER fatal errors", "count", "counter", chart=True, carry=True)),
    "dcon": (_f("connectors_connected", "display connectors connected", carry=True),
             _f("connectors_enabled", "display connectors enabled", carry=True)),
}
# Process lists of an ``nvml`` event: [[pid, name, used GPU memory], ...], written when they change.
NVML_PROCESS_LISTS = {"gp": "graphics", "cp": "compute"}
# Derived by the fold from the process lists.
NVML_DERIVED: dict[str, Field] = {
    "gfx_procs_mem": _f("gfx_procs_mem", "GPU memory of graphics processes", "bytes", chart=True),
    "worker_gpu_mem": _f("worker_gpu_mem", "GPU memory of the worker (NVML)", "bytes", chart=True),
}

# ``host`` events.
HOST: dict[str, Field] = {
    "mu": _f("mem_used", "system memory used", "bytes", chart=True),
    "ma": _f("mem_available", "system memory available", "bytes"),
    "mt": _f("mem_total", "system memory total", "bytes", carry=True),
    "su": _f("swap_used", "swap used", "bytes", chart=True),
    "st": _f("swap_total", "swap total", "bytes", carry=True),
    "cpu": _f("cpu", "CPU utilization", "%"),
    # /proc/pressure/cpu "some total": microseconds in which a runnable task waited for a CPU (the
    # judge's per-phase host measure: the stall share between two samples, stress.analysis)
    "cps": _f("cpu_pressure_us", "CPU pressure: time a task waited for a CPU (total)", "us", "counter"),
}
HOST_LISTS: dict[str, tuple[Field, ...]] = {
    "ld": (_f("load1", "load average (1 min)", chart=True), _f("load5", "load average (5 min)"),
           _f("load15", "load average (15 min)")),
}
# ``host.wk``: one entry per worker process tree; summed over trees.
WORKER_TREE: dict[str, Field] = {
    "r": _f("worker.rss", "worker RSS (process tree)", "bytes", chart=True),
    "c": _f("worker.cpu", "worker CPU (process tree)", "%"),
    "t": _f("worker.threads", "worker threads (process tree)"),
    "n": _f("worker.procs", "worker processes (tree)"),
    "z": _f("worker.zombies", "worker zombie processes"),
}
# ``host.ds``: one entry per display-server / compositor process: {"p": pid, "nm": name, ...}.
DISPLAY_PROC: dict[str, tuple[str, str, str]] = {   # key -> (long name, label, unit)
    "r": ("rss", "RSS", "bytes"), "c": ("cpu", "CPU", "%"), "t": ("threads", "threads", ""),
    "fd": ("fds", "open files", ""),
}

# ``alloc`` events (the worker's allocator statistics; long names already).
ALLOC: dict[str, Field] = {f.name: f for f in (
    _f("allocated", "CUDA memory allocated (torch)", "bytes", chart=True),
    _f("reserved", "CUDA memory reserved (torch)", "bytes", chart=True),
    _f("peak_allocated", "peak CUDA memory allocated (torch)", "bytes"),
    _f("peak_reserved", "peak CUDA memory reserved (torch)", "bytes"),
    _f("num_alloc_retries", "allocator retries (cudaMalloc after cache flush)", "count", "counter"),
    _f("num_ooms", "allocator out-of-memory events", "count", "counter"),
    _f("inactive_split", "inactive split blocks (fragmentation)", "bytes"),
    _f("rss", "worker RSS (CPU device)", "bytes", chart=True),
    _f("peak_rss", "worker peak RSS (CPU device)", "bytes"),
)}

# ``gpu_static`` events (once per GPU): the names the sampler writes and the report reads.
GPU_STATIC = ("gpu", "name", "uuid", "serial", "vbios", "bus_id", "persistence_mode", "memory_total",
              "bar1_total", "pcie_max_gen", "pcie_max_width", "power_default_limit_w", "rebar_active",
              "pci_bar_sizes")

# Keys of a ``host`` event that say a display process went away or took another's place (evidence the
# judge reads): a journal on a full disk and the bundle's thinning never drop them.
DISPLAY_EVENT_KEYS = frozenset({"dsgone", "dsnew", "ctxgone"})

# Envelope keys of a sample event: never a metric.
ENVELOPE = frozenset({"ev", "t", "gpu", "worker", "pid", "index", "at"})

# Compact ``nvml`` keys written only when they change (the sampler's rule, the readers' carry).
NVML_CHANGE_ONLY = frozenset({k for k, f in NVML.items() if f.carry} | set(NVML_LISTS) | set(NVML_PROCESS_LISTS))

_BY_LONG: dict[str, dict[str, Field]] = {
    "nvml": {f.name: f for f in (*NVML.values(), *(x for fs in NVML_LISTS.values() for x in fs),
                                  *NVML_DERIVED.values())},
    "host": {f.name: f for f in (*HOST.values(), *(x for fs in HOST_LISTS.values() for x in fs),
                                  *WORKER_TREE.values())},
    "allocator": dict(ALLOC),
}
NVML_CARRY = frozenset(f.name for f in _BY_LONG["nvml"].values() if f.carry)
HOST_CARRY = frozenset(f.name for f in _BY_LONG["host"].values() if f.carry)
_COUNTER_RE = re.compile(r"replay|_count$|^ecc|retired|errors?$|num_")


def field_of(src: str, name: str) -> Field:
    """The field of a long name in a source (``nvml``, ``host``, ``allocator``). Names of no table
    (a sampler field added later, a per-process series) still get a field, so nothing is dropped."""
    f = _BY_LONG.get(src, {}).get(name)
    if f is not None:
        return f
    m = re.fullmatch(r"(display|procs)\[(.+)\]\.(\w+)", name)
    if m:
        what, proc, fld = m.groups()
        if what == "procs":
            return Field(name, f"GPU memory of {proc} (NVML)", "bytes", chart=True)
        long_label = {v[0]: (v[1], v[2]) for v in DISPLAY_PROC.values()}
        label, unit = long_label.get(fld, (fld, ""))
        return Field(name, f"{proc} {label}", unit, chart=fld == "rss")
    return Field(name, name, "", "counter" if _COUNTER_RE.search(name) else "gauge")
