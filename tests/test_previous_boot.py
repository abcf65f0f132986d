"""Records that survive a hard freeze: the previous boot's kernel log and pstore entries, collected on
`report` / `run --resume` after a reboot. Boot ids, pstore and journalctl are injected (this machine
does not reboot in a test); the run directory, files and subprocesses are real."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from stress import previous_boot
from stress.journal import Journal
from tests.conftest import run_cli

BOOT_THEN = "0b6a2c3e-5f1d-4f7e-9a51-2d7b6c1e8f00"
BOOT_NOW = "7c1f0d2a-9e3b-4b6c-8d4e-1a2b3c4d5e6f"
# the previous boot's kernel log as journalctl prints it; the GPU lines are from
# https://github.com/NVIDIA/open-gpu-kernel-modules/issues/1045
PREVIOUS_BOOT_LOG = [
    "Jun 12 16:30:30 fedora-box kernel: usb 3-2: new high-speed USB device number 5 using xhci_hcd",
    "Jun 12 16:30:32 fedora-box kernel: nvidia-modeset: ERROR: GPU:0: Failed to query display engine channel "
    "state: 0x0000ca7e:2:0:0x00000062",
    "Jun 12 16:30:41 fedora-box kernel: [drm:nv_drm_atomic_commit [nvidia_drm]] *ERROR* [nvidia-drm] "
    "[GPU ID 0x00000100] Flip event timeout on head 0",
]


def make_run(tmp_path: Path, boot: str | None = BOOT_THEN) -> Path:
    rd = tmp_path / "run"
    rd.mkdir()
    j = Journal(rd / "journal.jsonl", fsync=False)
    j.append("run_start", run_id="run", scenario="s", argv=[], pid=1)
    if boot:
        j.append("evidence_boot", boot_id=boot, resumed=False)
    j.append("image_start", index=0)
    j.close()
    return rd


def fake_journalctl(tmp_path: Path, *, known_boot: str | None) -> Path:
    """Stands in for journalctl with a persistent journal holding one earlier boot."""
    log = tmp_path / "prev.log"
    log.write_text("\n".join(PREVIOUS_BOOT_LOG) + "\n")
    exe = tmp_path / "journalctl"
    args = tmp_path / "args"
    want = known_boot.replace("-", "") if known_boot else "-1"
    exe.write_text(f"#!/bin/sh\necho \"$@\" >> '{args}'\n"
                   f"[ \"$3\" = '{want}' ] && exec cat '{log}'\n"
                   "echo \"Data from the specified boot ($3) is not available: No such boot ID in journal\" >&2\n"
                   "exit 1\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def boot_file(tmp_path: Path, boot: str) -> Path:
    p = tmp_path / "boot_id"
    p.write_text(boot + "\n")
    return p


def test_after_a_reboot_the_boot_the_run_died_in_is_collected(tmp_path: Path) -> None:
    rd = make_run(tmp_path)
    pstore = tmp_path / "pstore"
    pstore.mkdir()
    (pstore / "dmesg-efi-171234567801001").write_text("Oops#1 Part1\n<4>[ 9000.1] NVRM: Xid (PCI:0000:01:00): 79\n")
    outside = tmp_path / "secret.txt"
    outside.write_text("not pstore")
    os.symlink(outside, pstore / "link-out")
    jc = fake_journalctl(tmp_path, known_boot=BOOT_THEN)
    m = previous_boot.collect(rd, boot_id_path=boot_file(tmp_path, BOOT_NOW), pstore=pstore, journalctl=str(jc))
    assert m["boot_id"] == BOOT_THEN and m["current_boot_id"] == BOOT_NOW
    k = m["items"]["kernel_log"]
    assert k["ok"] and k["command"].endswith(f"-k -b {BOOT_THEN.replace('-', '')} --no-pager -o short-precise")
    dest = rd / "evidence" / "previous-boot"
    assert (dest / "kernel.log").read_text().splitlines() == PREVIOUS_BOOT_LOG
    assert (dest / "kernel-gpu.log").read_text().splitlines() == PREVIOUS_BOOT_LOG[1:]
    p = m["items"]["pstore"]
    assert [f["name"] for f in p["files"]] == ["dmesg-efi-171234567801001"]     # the link is not followed
    assert (dest / "pstore" / "dmesg-efi-171234567801001").read_text().startswith("Oops#1")
    assert not (dest / "pstore" / "link-out").exists()
    assert json.loads((dest / "manifest.json").read_text()) == m
    # once per reboot: a second call returns the same record without running journalctl again
    calls = (tmp_path / "args").read_text().count("\n")
    assert previous_boot.collect(rd, boot_id_path=boot_file(tmp_path, BOOT_NOW), pstore=pstore,
                                 journalctl=str(jc)) == m
    assert (tmp_path / "args").read_text().count("\n") == calls


def test_without_a_persistent_journal_or_pstore_it_says_what_would_get_them(tmp_path: Path) -> None:
    rd = make_run(tmp_path)
    jc = fake_journalctl(tmp_path, known_boot=None)       # knows no boot id: -b -1 is tried next
    m = previous_boot.collect(rd, boot_id_path=boot_file(tmp_path, BOOT_NOW), pstore=tmp_path / "nope",
                              journalctl=str(jc))
    assert m["items"]["kernel_log"]["ok"]                 # the fallback -b -1 found it
    jc.write_text("#!/bin/sh\necho 'Specifying boot ID or boot offset has no effect, no persistent journal "
                  "was found.' >&2\nexit 1\n")
    m = previous_boot.collect(rd, boot_id_path=boot_file(tmp_path, BOOT_NOW), pstore=tmp_path / "nope",
                              journalctl=str(jc), force=True)
    k = m["items"]["kernel_log"]
    assert not k["ok"] and "no persistent journal" in k["reason"] and "/var/log/journal" in k["fix"]
    assert not m["items"]["pstore"]["ok"] and "mount -t pstore" in m["items"]["pstore"]["fix"]


def test_no_reboot_or_no_recorded_boot_collects_nothing(tmp_path: Path) -> None:
    rd = make_run(tmp_path)
    assert previous_boot.collect(rd, boot_id_path=boot_file(tmp_path, BOOT_THEN)) is None
    (tmp_path / "other").mkdir()
    rd2 = make_run(tmp_path / "other", boot=None)           # a run from before evidence_boot existed
    assert previous_boot.collect(rd2, boot_id_path=boot_file(tmp_path, BOOT_NOW)) is None
    assert not (rd / "evidence").exists()


def test_report_collects_after_a_reboot(tmp_path: Path) -> None:
    """`gpu-stress report` on a run whose recorded boot is not this one (as after a freeze and a reboot)."""
    rd = make_run(tmp_path, boot="00000000-0000-0000-0000-000000000001")
    res = run_cli("report", str(rd), "--out", str(tmp_path / "rep"), "--no-history", "--no-bundle", timeout=300)
    assert res.returncode == 0, res.stderr
    assert "previous boot: kernel log" in res.stderr
    m = json.loads((rd / "evidence" / "previous-boot" / "manifest.json").read_text())
    assert m["boot_id"] == "00000000-0000-0000-0000-000000000001"
    assert m["current_boot_id"] == previous_boot.current_boot_id()
    assert json.loads((rd / "evidence" / "fingerprint.json").read_text())["status"] == "none"


def test_readiness_says_what_a_freeze_would_lose(tmp_path: Path) -> None:
    r = previous_boot.readiness(journal_dir=tmp_path / "no-journal", pstore=tmp_path / "no-pstore")
    assert r["persistent_journal"] is False and r["pstore"] is False
    assert "/var/log/journal" in r["fix"] and "mount -t pstore" in r["fix"]
    (tmp_path / "journal").mkdir()
    r = previous_boot.readiness(journal_dir=tmp_path / "journal", pstore=tmp_path / "journal")   # a dir, not a mount
    assert r["persistent_journal"] is True and r["pstore"] is False and "/var/log/journal" not in r["fix"]
