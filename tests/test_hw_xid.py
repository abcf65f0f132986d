"""Xid classification and parsing of real-format NVRM lines."""
from __future__ import annotations

import json
import re
from pathlib import Path

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


# ---- NVIDIA's recommended action per code (stress/hw/xid_catalog.json) ----
CATALOG_URL = "https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html"
# the codes of the desktop-after-load bug class that NVIDIA documents (issue 13)
BUG_CLASS = (13, 31, 32, 43, 45, 48, 56, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 109, 119, 120, 143, 149, 154)


def test_every_shipped_action_names_its_source_or_is_marked_unverified() -> None:
    raw = json.loads(xid.CATALOG_FILE.read_text())
    assert set(BUG_CLASS) <= set(xid.ACTIONS)
    for e in raw["xids"]:
        a = xid.ACTIONS[e["xid"]]
        assert a.status in xid.STATUSES and a.mnemonic and a.immediate in raw["buckets"]
        if a.status == "verified":
            assert a.source["url"].startswith(("https://docs.nvidia.com/", "https://github.com/NVIDIA/"))
            assert a.source["title"] and a.source["table"]
            if a.source["doc"] == "catalog":        # the row is named: the code is in "where"
                assert f"code {a.xid}" in a.source["where"]
        else:
            assert a.text().startswith("unverified")
        if a.description == "Unused":                # deprecated in the catalog: the older listing's meaning
            assert a.archive_description == xid.DESCRIPTIONS[a.xid] and "unused" in a.text()


@pytest.mark.parametrize("code,immediate,investigatory", [
    (13, "RESTART_APP", "WORKFLOW_XID_13"), (31, "RESTART_APP", "WORKFLOW_XID_31"),
    (43, "IGNORE", "CONTACT_SUPPORT"), (48, "WORKFLOW_XID_48", "WORKFLOW_XID_48"),
    (62, "RESET_GPU", "CONTACT_SUPPORT"), (63, "IGNORE", "IGNORE"),          # was RESET_GPU, from memory
    (79, "RESTART_BM", "CONTACT_SUPPORT"), (94, "RESTART_APP", "IGNORE (sympathetic)"),
    (109, "RESET_GPU", "CONTACT_SUPPORT"),                                     # was RESTART_APP, from memory
    (119, "RESET_GPU", "INVESTIGATE_SW"), (154, "XID_154", "N/A Informational only regarding another Xid"),
])
def test_buckets_are_the_catalogs(code: int, immediate: str, investigatory: str) -> None:
    a = xid.action_info(code)
    assert (a.immediate, a.investigatory) == (immediate, investigatory)
    assert a.source["url"] == CATALOG_URL and a.verified
    assert xid.action(code).startswith(immediate) and set(a.buckets) == {immediate, investigatory}


def test_the_suites_own_reading_is_kept_apart_from_nvidias() -> None:
    a = xid.action_info(79)
    assert "AER" in a.desktop_note and "AER" not in a.text()       # ours is a note, not NVIDIA's action
    assert xid.action(4242) is None and xid.action_info(4242) is None


def _catalog(tmp_path: Path, entry: dict) -> Path:
    data = json.loads(xid.CATALOG_FILE.read_text())
    data["xids"] = [entry]
    p = tmp_path / "c.json"
    p.write_text(json.dumps(data))
    return p


BASE = {"xid": 4242, "mnemonic": "M", "description": "d", "immediate": "RESET_GPU", "investigatory": "CONTACT_SUPPORT"}


@pytest.mark.parametrize("entry,error", [
    ({**BASE, "status": "verified"}, "a verified entry needs a source (or mark it status: unverified)"),
    ({**BASE, "status": "verified", "source": {"doc": "memory", "where": "x"}}, "source must name one of"),
    ({**BASE, "status": "sure", "source": {"doc": "catalog", "where": "x"}}, "status must be verified or unverified"),
    ({**BASE, "immediate": "REBOOT", "status": "unverified"}, "bucket 'REBOOT' is not in the file's buckets"),
    ({**BASE, "xid": "79", "status": "unverified"}, "xid must be an integer"),
])
def test_a_broken_catalog_names_the_entry(tmp_path: Path, entry: dict, error: str) -> None:
    p = _catalog(tmp_path, entry)
    with pytest.raises(ValueError, match=re.escape(f"{p}: xids[0]: {error}")):
        xid.load_catalog(p)


def test_an_unverified_entry_is_rendered_as_unverified_in_the_ticket(tmp_path: Path, monkeypatch) -> None:
    from stress.hw.fingerprint import fingerprint
    from stress.report.ticket import evidence_section

    remembered = xid.load_catalog(_catalog(tmp_path, {**BASE, "status": "unverified"}))[4242]
    assert remembered.source is None and not remembered.verified
    monkeypatch.setitem(xid.ACTIONS, 4242, remembered)
    fp = fingerprint([{"ev": "xid", "xid": 4242, "source": "kernel-log", "t": 1.0},
                      {"ev": "xid", "xid": 79, "source": "kernel-log", "t": 2.0},
                      {"ev": "xid", "xid": 4343, "source": "kernel-log", "t": 3.0}])
    md = evidence_section({"evidence": {"fingerprint": fp}})
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| `xid:")}
    assert ("unverified (not checked against NVIDIA's Xid catalog): RESET_GPU; if it recurs or is unexpected: "
            "CONTACT_SUPPORT |") in rows["`xid:4242`"]                   # no source reference
    assert rows["`xid:79`"].endswith("RESTART_BM; if it recurs or is unexpected: CONTACT_SUPPORT [1] |")
    assert "not in stress/hw/xid_catalog.json" in rows["`xid:4343`"]
    assert (f"- [1] NVIDIA, Analyzing Xid Errors with the Xid Catalog: Table 1 Xids, code 79 (and Trigger "
            f"Conditions), {CATALOG_URL}") in md
    assert "`RESTART_BM`: restart the machine (bare metal)" in md
    assert "- `xid:79` (this suite's note, not NVIDIA's): check power cables" in md
    assert "- `xid:79` (NVIDIA): the driver found the GPU inaccessible over PCIe" in md


def test_the_table_in_docs_monitors_md_is_the_data() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "monitors.md").read_text()
    section = doc.split("### NVIDIA's action per Xid", 1)[1].split("\n### ", 1)[0]
    shown: dict[int, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0][:1].isdigit():
            for codes, immediate in ((cells[0], cells[1]), (cells[4], cells[5])):
                for c in codes.split(","):
                    shown[int(c)] = immediate.split(" ")[0]
    assert shown == {code: a.immediate for code, a in xid.ACTIONS.items()}
