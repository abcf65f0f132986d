"""The kernel-log follower on recorded real-format lines, fed through real pipes and subprocesses."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from stress.hw import kernel_log
from stress.hw.kernel_log import KernelLogFollower, KernelLogSource, split_line

# As journalctl -k -o short-precise prints them (recorded from real reports; host names changed).
JOURNAL_LINES = [
    "Mar 01 12:41:30.104512 desk kernel: NVRM: GPU at PCI:0000:01:00: GPU-cccfc25d-fc66-0d40-e289-3b1a1f5d7896",
    "Mar 01 12:41:30.104598 desk kernel: NVRM: Xid (PCI:0000:01:00): 62, pid=1532, name=Xorg, 0000(0000) "
    "00000000 00000000",
    "Mar 01 12:41:31.000001 desk kernel: usb 3-2: new high-speed USB device number 5 using xhci_hcd",
    "Mar 01 12:42:00.220013 desk kernel: NVRM: Xid (PCI:0000:01:00): 45, pid=15041, name=gnome-shell, "
    "Ch 00000006",
    "Mar 01 12:42:15.900154 desk kernel: NVRM: Xid (PCI:0000:01:00): 119, pid='<unknown>', name=<unknown>, "
    "Timeout after 45s of waiting for RPC response from GPU0 GSP! Expected function 76 (GSP_RM_CONTROL).",
    "Mar 01 12:42:16.000100 desk kernel: nvidia-modeset: ERROR: GPU:0: Idling display engine timed out: "
    "0x0000c67e:0:0:1128",
    "Mar 01 12:42:16.500100 desk kernel: [drm:nv_drm_atomic_commit [nvidia_drm]] *ERROR* [nvidia-drm] "
    "[GPU ID 0x00000100] Flip event timeout on head 0",
    "Mar 01 12:42:17.000000 desk kernel: EXT4-fs (nvme0n1p2): re-mounted. Quota mode: none.",
]
JOURNAL_EXPECTED_MATCHES = 6
JOURNAL_EXPECTED_XIDS = [62, 45, 119]

# As /dev/kmsg hands them out: "prio,seq,usec,flags;message", dictionary lines start with a space.
KMSG_LINES = [
    "6,1234,5678901,-;nvidia 0000:01:00.0: enabling device (0000 -> 0003)",
    "3,1235,5678999,-;NVRM: Xid (PCI:0000:01:00): 79, pid=1234, name=python3, GPU has fallen off the bus.",
    " SUBSYSTEM=pci",
    " DEVICE=+pci:0000:01:00.0",
    "3,1236,5679000,-;NVRM: GPU 0000:01:00.0: GPU has fallen off the bus.",
    "4,1237,5680000,-;[drm] amdgpu kernel modesetting enabled.",
    "3,1238,5681000,-;NVRM: Xid (PCI:0000:01:00): 56, pid=1024, name=Xorg, CMDre 00000000 00000080 00000000 "
    "00000005 00000008",
    "6,1239,5682000,-;audit: type=1400 audit(1700000000.000:42): apparmor=\"STATUS\"",
]


class Collector:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.xids: list = []
        self.ended: list[str] = []
        self.done = threading.Event()

    def on_line(self, raw: str, msg: str) -> None:
        self.lines.append((raw, msg))

    def on_xid(self, parsed, raw: str) -> None:
        self.xids.append((parsed, raw))

    def on_end(self, reason: str) -> None:
        self.ended.append(reason)
        self.done.set()

    def kw(self) -> dict:
        return {"on_line": self.on_line, "on_xid": self.on_xid, "on_end": self.on_end}


def wait_for(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_split_line_formats() -> None:
    assert split_line(JOURNAL_LINES[1], "journal")[0].startswith("NVRM: Xid (PCI:0000:01:00): 62")
    msg, ts = split_line(KMSG_LINES[1], "kmsg")
    assert msg.startswith("NVRM: Xid") and ts == pytest.approx(5.678999)
    assert split_line(" SUBSYSTEM=pci", "kmsg") == (None, None)
    assert split_line("[Thu Nov 20 00:22:01 2025] NVRM: Xid (PCI:0000:01:00): 79, x", "dmesg")[0].startswith("NVRM")
    msg, ts = split_line("[  269.516977] NVRM: GPU at 0000:01:00.0 has fallen off the bus.", "dmesg")
    assert ts == pytest.approx(269.516977) and msg.startswith("NVRM: GPU at")


def test_kmsg_lines_through_a_pipe_with_partial_writes() -> None:
    r, w = os.pipe()
    c = Collector()
    f = KernelLogFollower(r, "kmsg", **c.kw())
    f.start()
    data = ("\n".join(KMSG_LINES) + "\n").encode()
    # Lines arrive cut at arbitrary places, as from any pipe: the follower must rejoin them.
    for i in range(0, len(data), 37):
        os.write(w, data[i:i + 37])
        time.sleep(0.002)
    assert wait_for(lambda: len(c.lines) == 4)
    assert [m for _, m in c.lines] == [
        "NVRM: Xid (PCI:0000:01:00): 79, pid=1234, name=python3, GPU has fallen off the bus.",
        "NVRM: GPU 0000:01:00.0: GPU has fallen off the bus.",
        "[drm] amdgpu kernel modesetting enabled.",
        "NVRM: Xid (PCI:0000:01:00): 56, pid=1024, name=Xorg, CMDre 00000000 00000080 00000000 00000005 00000008",
    ]
    assert [raw for raw, _ in c.lines][0] == KMSG_LINES[1]      # the raw line is kept as read
    assert [(p.xid, p.bus, p.pid, p.name) for p, _ in c.xids] == [(79, "0000:01:00", 1234, "python3"),
                                                                 (56, "0000:01:00", 1024, "Xorg")]
    os.close(w)                                     # writer gone: the follower says the source ended
    assert c.done.wait(3) and c.ended[0].startswith("source ended")
    assert f.stop(2.0)
    assert f.stats.lines == len(KMSG_LINES) and f.stats.matched == 4 and f.stats.xids == 2


def test_journalctl_format_from_a_real_subprocess(tmp_path: Path) -> None:
    log = tmp_path / "kernel.log"
    log.write_text("\n".join(JOURNAL_LINES) + "\n")
    c = Collector()
    f = KernelLogFollower.open(KernelLogSource("test", "journal", argv=["cat", str(log)]), **c.kw())
    f.start()
    assert c.done.wait(5), "cat ends: the follower must notice"
    assert c.ended == ["source ended (exit status 0)"]
    assert len(c.lines) == JOURNAL_EXPECTED_MATCHES
    assert [p.xid for p, _ in c.xids] == JOURNAL_EXPECTED_XIDS
    gsp = c.xids[2][0]
    assert gsp.pid is None and gsp.detail.startswith("Timeout after 45s")
    assert any("nvidia-modeset: ERROR" in m for _, m in c.lines)
    assert any("Flip event timeout" in m for _, m in c.lines)
    assert not any("EXT4" in m or "usb" in m for _, m in c.lines)
    assert f.stop(2.0)


def test_stop_ends_a_command_that_never_ends(tmp_path: Path) -> None:
    log = tmp_path / "kernel.log"
    log.write_text(KMSG_LINES[1] + "\n")
    c = Collector()
    f = KernelLogFollower.open(
        KernelLogSource("test", "kmsg", argv=["sh", "-c", f"cat '{log}'; exec sleep 60"]), **c.kw())
    f.start()
    assert wait_for(lambda: len(c.xids) == 1)
    t0 = time.monotonic()
    assert f.stop(2.0)
    assert time.monotonic() - t0 < 2.0
    assert f.proc is not None and f.proc.poll() is not None      # the command is gone, not orphaned
    assert c.ended == []                                          # asked to stop: not reported as an end


def test_dmesg_without_follow_new_drops_the_old_buffer() -> None:
    r, w = os.pipe()
    c = Collector()
    f = KernelLogFollower(r, "dmesg", min_uptime=1000.0, **c.kw())
    f.start()
    os.write(w, b"[  269.516977] NVRM: Xid (PCI:0000:01:00): 13, pid=1, name=a, old line\n"
                b"[ 1001.000001] NVRM: Xid (PCI:0000:01:00): 31, pid=2, name=b, new line\n")
    assert wait_for(lambda: len(c.xids) == 1)
    time.sleep(0.05)
    assert [p.xid for p, _ in c.xids] == [31]
    os.close(w)
    assert f.stop(2.0)


def test_real_dev_kmsg_can_be_followed_when_readable() -> None:
    """The real device: opened at its end, so the follower starts quietly and stops cleanly."""
    src, attempts = kernel_log.probe("kmsg")
    if src is None:
        pytest.skip(f"/dev/kmsg not readable here: {attempts[0].reason}")
    c = Collector()
    f = KernelLogFollower.open(src, **c.kw())
    f.start()
    time.sleep(0.3)
    assert f.stop(2.0)
    assert c.ended == []


def test_probe_reports_every_attempt_with_reasons() -> None:
    src, attempts = kernel_log.probe()
    assert attempts, "at least one source is tried"
    for a in attempts[:-1]:
        assert not a.ok and a.reason           # an earlier one was skipped for a stated reason
    if src is None:
        assert all(not a.ok and a.reason for a in attempts)
    else:
        assert attempts[-1].ok and attempts[-1].via == src.via
    missing = kernel_log._probe_kmsg("/nonexistent/kmsg")
    assert not missing.ok and "does not exist" in missing.reason


@pytest.mark.skipif(os.geteuid() != 0 or not hasattr(os, "fork"), reason="needs root to drop to another user")
def test_probe_as_unprivileged_user_explains_the_fix() -> None:
    """Drop to `nobody` in a forked child and probe: the reasons name the group / sysctl / capability."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            _, attempts = kernel_log.probe()
            os.write(w, json.dumps([a.as_dict() for a in attempts]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    attempts = {a["via"]: a for a in json.loads(data)}
    restrict = kernel_log.dmesg_restrict()
    if restrict == 1:
        kmsg = attempts["kmsg"]
        assert not kmsg["ok"] and "dmesg_restrict=1" in kmsg["reason"] and "CAP_SYSLOG missing" in kmsg["reason"]
        assert "sysctl kernel.dmesg_restrict=0" in kmsg["fix"]
    j = attempts["journalctl"]
    if "not in the systemd-journal" in (j["reason"] or ""):
        assert "usermod -aG systemd-journal" in j["fix"]


def test_a_failing_callback_does_not_stop_the_follower() -> None:
    r, w = os.pipe()
    seen: list[str] = []

    def on_line(raw: str, msg: str) -> None:
        if not seen:
            seen.append("boom")
            raise RuntimeError("consumer bug")
        seen.append(msg)

    f = KernelLogFollower(r, "kmsg", on_line=on_line)
    f.start()
    os.write(w, (KMSG_LINES[1] + "\n").encode())
    assert wait_for(lambda: f.stats.errors == 1)
    os.write(w, (KMSG_LINES[4] + "\n").encode())
    assert wait_for(lambda: len(seen) == 2)
    assert seen[1].startswith("NVRM: GPU 0000:01:00.0")
    os.close(w)
    assert f.stop(2.0)
