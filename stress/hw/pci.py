"""PCI and DRM facts of a GPU from sysfs, so a hardware or link fault is not blamed on the driver.

- :func:`aer_counters`: the PCIe Advanced Error Reporting totals of the device
  (``/sys/bus/pci/devices/<bdf>/aer_dev_correctable``, ``aer_dev_nonfatal``, ``aer_dev_fatal``);
- :func:`bar_sizes`: the sizes of BAR0..BAR5 (``/sys/bus/pci/devices/<bdf>/resource``): BAR1 is the
  aperture the display path maps buffers through (256 MiB without Resizable BAR);
- :func:`drm_connectors`: the DRM connectors of the card on that device and their status
  (``/sys/class/drm/cardN-<connector>/status``, ``enabled``).

Every function takes ``sysfs`` (default ``/sys``) so tests run on their own tree, and returns None
where the kernel does not expose the file (no AER capability, no DRM driver bound).
"""
from __future__ import annotations

import os
from pathlib import Path

from stress.hw.xid import normalize_bus_id

SYSFS = Path("/sys")
_AER_FILES = (("correctable", "TOTAL_ERR_COR"), ("nonfatal", "TOTAL_ERR_NONFATAL"), ("fatal", "TOTAL_ERR_FATAL"))


def sysfs_bdf(bus_id: str | None) -> str | None:
    """``"00000000:01:00.0"`` (NVML) or ``"0000:01:00"`` -> ``"0000:01:00.0"`` (sysfs device name)."""
    key = normalize_bus_id(bus_id)
    if key is None:
        return None
    fn = bus_id.strip().rsplit(".", 1)[1] if bus_id and "." in bus_id else "0"
    return f"{key[0]:04x}:{key[1]:02x}:{key[2]:02x}.{fn}"


def _device(bdf: str, sysfs: Path) -> Path:
    return sysfs / "bus" / "pci" / "devices" / bdf


def aer_counters(bdf: str, sysfs: Path = SYSFS) -> dict[str, int] | None:
    """``{"correctable": n, "nonfatal": n, "fatal": n}`` since boot, or None without AER files."""
    dev = _device(bdf, sysfs)
    out: dict[str, int] = {}
    for name, total_key in _AER_FILES:
        try:
            text = (dev / f"aer_dev_{name}").read_text()
        except OSError:
            continue
        values: dict[str, int] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                values[parts[0]] = int(parts[1])
        out[name] = values.get(total_key, sum(v for k, v in values.items() if not k.startswith("TOTAL")))
    return out or None


def bar_sizes(bdf: str, sysfs: Path = SYSFS) -> list[int] | None:
    """Sizes in bytes of BAR0..BAR5 (0 where unused), from the device's ``resource`` file."""
    try:
        lines = (_device(bdf, sysfs) / "resource").read_text().splitlines()
    except OSError:
        return None
    sizes = []
    for line in lines[:6]:
        try:
            start, end, _flags = (int(x, 16) for x in line.split()[:3])
        except ValueError:
            return None
        sizes.append(end - start + 1 if end > start else 0)
    return sizes


def drm_connectors(bdf: str, sysfs: Path = SYSFS) -> list[dict] | None:
    """The connectors of the DRM card(s) bound to the device: ``name``, ``status``, ``enabled``."""
    drm = sysfs / "class" / "drm"
    try:
        entries = sorted(os.listdir(drm))
    except OSError:
        return None
    target = os.path.realpath(_device(bdf, sysfs))
    cards = [e for e in entries if e.startswith("card") and "-" not in e
             and os.path.realpath(drm / e / "device") == target]
    if not cards:
        return None
    out = []
    for e in entries:
        card, sep, name = e.partition("-")
        if not sep or card not in cards:
            continue
        status = _read(drm / e / "status")
        out.append({"name": name, "card": card, "status": status, "enabled": _read(drm / e / "enabled")})
    return out


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


def connected_count(connectors: list[dict] | None) -> int | None:
    return None if connectors is None else sum(c["status"] == "connected" for c in connectors)


__all__ = ["sysfs_bdf", "aer_counters", "bar_sizes", "drm_connectors", "connected_count", "SYSFS"]
