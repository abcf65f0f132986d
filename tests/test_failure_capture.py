"""Capture at the moment of failure: unit-level on a real Xvfb and real subprocesses, and end to end
through `gpu-stress run` with recorded real kernel-log lines from the kernel-log stand-in."""
from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from stress.failure_capture import FailureCapture, trigger_of
from stress.hw import kernel_log
from stress.journal import Journal, read_journal
from tests.conftest import run_cli
from tests.xvfb import SKIP_REASON, XVFB, xvfb

SAMPLES = json.loads((Path(__file__).parent / "data" / "kernel_log_samples.json").read_text())["samples"]
FLIP = next(s for s in SAMPLES if s["expect"] == "nvidia-drm-flip-timeout" and s["fmt"] == "journal")
LOST_NOTIFICATION = next(s for s in SAMPLES if s["expect"] == "nvkms-lost-notification")


def test_what_triggers_a_capture() -> None:
    assert trigger_of("xid", {"xid": 79, "source": "nvml-event"})["kind"] == "xid"
    assert trigger_of("kmsg", {"line": FLIP["line"], "cls": "nvidia-drm-flip-timeout"})["class"] == "display-engine"
    assert trigger_of("kmsg", {"line": "x", "cls": "nvkms-lost-notification"}) is None      # a warning
    assert trigger_of("kmsg", {"line": "[drm] amdgpu kernel modesetting enabled."}) is None  # no class
    assert trigger_of("probe", {"kind": "screenshot", "phase": "after", "status": "timeout"})["probe"] == "screenshot"
    assert trigger_of("probe", {"kind": "screenshot", "status": "ok"}) is None
    assert trigger_of("probe", {"kind": "decode", "status": "error"}) is None     # a harness error, not the desktop


def fake_bug_report_tool(bindir: Path, body: str) -> None:
    """Stands in for NVIDIA's nvidia-bug-report.sh (ships with the driver, absent here)."""
    bindir.mkdir(exist_ok=True)
    exe = bindir / "nvidia-bug-report.sh"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


@pytest.mark.skipif(XVFB is None, reason=SKIP_REASON)
def test_one_capture_at_the_first_failure_on_a_real_display(tmp_path: Path, monkeypatch) -> None:
    bindir = tmp_path / "bin"
    # writes its log like the real script (--output-file FILE -> FILE.gz); must get no terminal
    fake_bug_report_tool(bindir, 'while [ "$1" ]; do [ "$1" = --output-file ] && out="$2"; shift; done\n'
                                 '[ -t 0 ] && exit 9\necho "nvidia-bug-report stand-in" | gzip > "$out.gz"')
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    jpath = tmp_path / "journal.jsonl"
    journal = Journal(jpath, fsync=False)
    with xvfb(320, 200) as x:
        monkeypatch.setenv("DISPLAY", x.display)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        cap = FailureCapture(tmp_path, journal.append, journal_path=jpath, bug_report=True, bug_report_timeout=20,
                             display_processes=lambda: ["Xvfb"])
        for ev, fields in [("kmsg", {"line": LOST_NOTIFICATION["line"], "cls": "nvkms-lost-notification"}),
                           ("kmsg", {"line": FLIP["line"], "cls": "nvidia-drm-flip-timeout"}),
                           ("xid", {"xid": 56})]:
            cap.observe(ev, journal.append(ev, **fields))
        assert cap.wait(60)
    journal.close()
    m = json.loads((tmp_path / "evidence" / "failure" / "manifest.json").read_text())
    assert m["trigger"]["cls"] == "nvidia-drm-flip-timeout"           # the first error, not the warning
    items = m["items"]
    recorded = (tmp_path / "evidence" / "failure" / "kernel-log-recorded.txt").read_text().splitlines()
    assert recorded == [LOST_NOTIFICATION["line"], FLIP["line"]]
    assert items["screenshot"]["ok"], items["screenshot"]
    from PIL import Image
    with Image.open(tmp_path / "evidence" / "failure" / "screenshot.png") as im:
        assert im.size == (320, 200)
    assert items["nvidia_bug_report"]["ok"] and items["nvidia_bug_report"]["file"] == "nvidia-bug-report.log.gz"
    comp = items["compositor_logs"]["processes"]["Xvfb"]
    assert comp["ok"] or comp["reason"]                               # a log, or why there is none
    k = items["kernel_log_tail"]
    assert k["ok"] or "dmesg" in k["reason"]
    caps = [e for e in read_journal(jpath).events if e["ev"] == "capture"]
    assert len(caps) == 1 and caps[0]["items"]["screenshot"]["ok"]   # the Xid after it did not capture again


def test_a_bug_report_that_hangs_is_stopped_and_said_so(tmp_path: Path, monkeypatch) -> None:
    fake_bug_report_tool(tmp_path / "bin", "exec sleep 60")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    jpath = tmp_path / "journal.jsonl"
    journal = Journal(jpath, fsync=False)
    cap = FailureCapture(tmp_path, journal.append, journal_path=jpath, bug_report=True, bug_report_timeout=1,
                         display_processes=lambda: [])
    t0 = time.monotonic()
    cap.observe("xid", journal.append("xid", xid=119))
    assert cap.wait(30) and time.monotonic() - t0 < 15
    journal.close()
    items = cap.manifest["items"]
    assert "did not finish within 1 s" in items["nvidia_bug_report"]["reason"]
    assert items["screenshot"] == {"ok": False, "reason": "no DISPLAY or WAYLAND_DISPLAY in this environment"}
    if shutil.which("nvidia-smi") is None:
        assert items["nvidia_smi_q"] == {"command": "nvidia-smi -q", "ok": False, "reason": "nvidia-smi not installed"}
    else:                                          # a machine with the driver: the real output is there
        assert items["nvidia_smi_q"]["ok"] and (tmp_path / "evidence" / "failure" / "nvidia-smi-q.txt").stat().st_size
    assert items["compositor_logs"]["reason"] == "no display server or compositor process found"


TINY = """
name: cap
model:
  base: builtin:tiny-sdxl
  refiner: null
steps: 4
cfg: 6.8
images: 2
resolutions: [64x64]
seeds: 1234
prompt:
  tokens: 30
negative_prompt: "blurry"
probes:
  enabled: false
monitors:
  interval: 0.2
session:
  image_timeout: 120s
"""


@pytest.mark.slow
def test_end_to_end_through_gpu_stress_run(tmp_path: Path, model_cache) -> None:
    """Recorded real lines arrive from the kernel-log stand-in while the run works: the capture is in the
    run directory and the journal (before the verdict), and the fingerprint names the public report."""
    log = tmp_path / "kernel.log"
    log.write_text(LOST_NOTIFICATION["line"] + "\n" + FLIP["line"] + "\n")
    scen = tmp_path / "cap.yaml"
    scen.write_text(TINY)
    res = run_cli("run", str(scen), "--out", str(tmp_path / "artifacts"), "--reports", str(tmp_path / "reports"),
                  "--no-history", timeout=300,
                  env={"STRESS_CACHE": str(model_cache), "DISPLAY": "", "WAYLAND_DISPLAY": "",
                       kernel_log.STAND_IN_ENV: f"sleep 1; cat '{log}'; exec sleep 600",
                       kernel_log.STAND_IN_FORMAT_ENV: "journal"})
    assert "Traceback" not in res.stderr, res.stderr
    (rd,) = (tmp_path / "artifacts").glob("*")
    events = read_journal(rd / "journal.jsonl").events
    kinds = [e["ev"] for e in events]
    assert kinds.count("capture") == 1 and kinds.index("capture") < kinds.index("verdict")
    cap = events[kinds.index("capture")]
    assert cap["trigger"]["cls"] == "nvidia-drm-flip-timeout" and cap["trigger"]["line"] == FLIP["line"]
    ev_dir = rd / "evidence" / "failure"
    assert json.loads((ev_dir / "manifest.json").read_text())["trigger"] == cap["trigger"]
    assert FLIP["line"] in (ev_dir / "kernel-log-recorded.txt").read_text()
    assert cap["items"]["nvidia_bug_report"]["reason"].startswith("not allowed (opt-in")
    fp = json.loads((rd / "evidence" / "fingerprint.json").read_text())
    assert fp["signature"] == "nvkms-lost-notification > nvidia-drm-flip-timeout"
    assert fp["best"]["link"] == "https://github.com/NVIDIA/open-gpu-kernel-modules/issues/815"
    boot = [e for e in events if e["ev"] == "evidence_boot"]
    assert len(boot) == 1 and boot[0]["boot_id"] and not boot[0]["resumed"]
    # ... and into the reports the run wrote: report.json's evidence, ticket.md and report.html
    (rep,) = (tmp_path / "reports").glob("*")
    report = json.loads((rep / "report.json").read_text())
    assert report["evidence"]["fingerprint"]["signature"] == fp["signature"]
    assert report["evidence"]["capture"]["trigger"]["cls"] == "nvidia-drm-flip-timeout"
    ticket = (rep / "ticket.md").read_text()
    assert "#### Captured at the first failure" in ticket and "open-gpu-kernel-modules/issues/815" in ticket
    assert "nvidia-drm-flip-timeout" in (rep / "report.html").read_text()
