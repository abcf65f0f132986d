"""Xid classification and parsing of real-format NVRM lines."""
from __future__ import annotations

import pytest

from stress.hw import xid


@pytest.mark.parametrize("code,category", [
    *[(c, xid.DISPLAY) for c in (16, 19, 56, 111, 112, 113, 114, 115, 116, 117, 118)],
    (119, xid.GSP), (120, xid.GSP),
    (79, xid.FALLEN_OFF_BUS),
    *[(c, xid.MEMORY) for c in (48, 63, 64, 92, 94, 95)],
    *[(c, xid.APPLICATION) for c in (13, 31, 43, 45, 68, 69)],
    (62, xid.OTHER), (8, xid.OTHER), (154, xid.OTHER), (110, xid.OTHER),
])
def test_categories(code: int, category: str) -> None:
    assert xid.category(code) == category
    assert category in xid.CATEGORIES


def test_descriptions_follow_nvidia_listing() -> None:
    assert xid.description(79) == "GPU has fallen off the bus"
    assert xid.description(119) == "GSP RPC Timeout"
    assert xid.description(56) == "Display Engine error"
    assert xid.description(114) == "Display Pipeline Underflow Error"
    assert xid.description(13) == "Graphics Engine Exception"
    assert xid.description(48) == "Double Bit ECC Error"
    assert xid.description(4242) == "unlisted Xid 4242"
    assert xid.classify(31) == (xid.APPLICATION, "GPU memory page fault")
    # every described code is classified, and "other" is only for codes outside the named groups
    assert all(xid.category(c) in xid.CATEGORIES for c in xid.DESCRIPTIONS)


def test_parse_modern_line_with_pid_and_name() -> None:
    p = xid.parse_xid_line("NVRM: Xid (PCI:0000:01:00): 79, pid=1234, name=Xorg, GPU has fallen off the bus.")
    assert p == xid.XidLine(xid=79, bus="0000:01:00", pid=1234, name="Xorg", detail="GPU has fallen off the bus.")


def test_parse_unknown_pid_and_gsp_timeout() -> None:
    p = xid.parse_xid_line("NVRM: Xid (PCI:0000:2b:00): 119, pid='<unknown>', name=<unknown>, Timeout after 6s "
                           "of waiting for RPC response from GPU0 GSP! Expected function 76 (GSP_RM_CONTROL).")
    assert p is not None
    assert (p.xid, p.bus, p.pid, p.name) == (119, "0000:2b:00", None, None)
    assert p.detail.startswith("Timeout after 6s")


def test_parse_older_format_and_display_error() -> None:
    p = xid.parse_xid_line("NVRM: Xid (0000:03:00): 14, Channel 00000001")
    assert p is not None and (p.xid, p.bus, p.pid, p.detail) == (14, "0000:03:00", None, "Channel 00000001")
    p = xid.parse_xid_line("NVRM: Xid (PCI:0000:01:00): 56, pid=1024, name=gnome-shell, CMDre 00000000 "
                           "00000080 00000000 00000005 00000008")
    assert p is not None and p.xid == 56 and p.name == "gnome-shell" and p.pid == 1024
    assert xid.category(p.xid) == xid.DISPLAY


@pytest.mark.parametrize("line", [
    "NVRM: GPU at PCI:0000:01:00: GPU-0b11d014-1685-04bd-26ed-5fc0bc1c44ae",
    "nvidia-modeset: ERROR: GPU:0: Idling display engine timed out: 0x0000c67e:0:0:1128",
    "[drm:nv_drm_atomic_commit [nvidia_drm]] *ERROR* [nvidia-drm] [GPU ID 0x00000100] Flip event timeout on head 0",
    "NVRM: Xid mentioned in passing",
])
def test_non_xid_lines(line: str) -> None:
    assert xid.parse_xid_line(line) is None


def test_bus_ids_from_nvml_and_kernel_match() -> None:
    assert xid.normalize_bus_id("00000000:01:00.0") == xid.normalize_bus_id("0000:01:00") == (0, 1, 0)
    assert xid.normalize_bus_id("PCI:0000:2B:00") == (0, 0x2B, 0)
    assert xid.normalize_bus_id("garbage") is None
    assert xid.normalize_bus_id(None) is None
