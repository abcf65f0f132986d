"""The evidence section of the ticket (stress.report.ticket.evidence_section), from a real run directory
written by the evidence parts, through the run's Redactor."""
from __future__ import annotations

import json
from pathlib import Path

from stress.environment import collect
from stress.evidence import write_fingerprint
from stress.journal import Journal
from stress.report.redact import Redactor
from stress.report.ticket import evidence_section


def test_section_renders_fingerprint_capture_and_missing_facts(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    rd.mkdir()
    env = collect()
    env["host"]["hostname"] = "desk-4090"                       # as on a reporter's machine
    (rd / "environment.json").write_text(json.dumps(env))
    j = Journal(rd / "journal.jsonl", fsync=False)
    for code in (62, 45, 119, 154):
        j.append("xid", xid=code, source="kernel-log", raw=f"NVRM: Xid (PCI:0000:01:00): {code}, pid=1, "
                                                          f"name=GPU-0b11d014-1685-04bd-26ed-5fc0bc1c44a0")
    j.close()
    write_fingerprint(rd)
    (rd / "evidence" / "failure").mkdir(parents=True)
    (rd / "evidence" / "failure" / "manifest.json").write_text(json.dumps({
        "trigger": {"kind": "xid", "xid": 62}, "items": {
            "kernel_log_tail": {"ok": True, "file": "kernel-log-tail.txt"},
            "screenshot": {"ok": False, "reason": "cannot open display desk-4090:0"}}}))
    md = evidence_section(rd, Redactor.for_run(environment=env))
    assert "is the sequence reported in https://github.com/NVIDIA/open-gpu-kernel-modules/issues/1045" in md
    assert "| `xid:119` | 1 | GSP RPC Timeout | RESET_GPU" in md
    assert "Trigger: Xid 62." in md and "- kernel log tail: `kernel-log-tail.txt`" in md
    assert "desk-4090" not in md and "<host>" in md                # redacted
    assert "GPU-0b11d014" not in md
    assert "Missing here" in md and "`nvidia-smi -L`" in md          # no driver on this machine
