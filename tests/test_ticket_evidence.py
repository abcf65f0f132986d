"""The evidence in the ticket: a run directory with driver events and a capture at the first failure,
through report.json's ``evidence`` (built from the run's record and redacted there) into ticket.md."""
from __future__ import annotations

import json
from pathlib import Path

from stress.environment import collect
from stress.journal import Journal
from stress.report.build import build_report
from stress.report.ticket import FIELDS, evidence_section, render_ticket


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
    j = Journal(rd / "journal.jsonl", fsync=False)
    j.append("capture", trigger={"kind": "xid", "xid": 62}, dir="evidence/failure", items={
        "kernel_log_tail": {"ok": True, "file": "kernel-log-tail.txt"},
        "screenshot": {"ok": False, "reason": "cannot open display desk-4090:0"}})
    j.close()
    report = build_report(rd).report
    assert report["evidence"]["fingerprint"]["steps"] and report["evidence"]["capture"]["trigger"]["xid"] == 62
    md = evidence_section(report)
    ticket = render_ticket(report)
    assert md.strip() in ticket and all(f"### {f}" in ticket for f in FIELDS)
    assert "is the sequence reported in https://github.com/NVIDIA/open-gpu-kernel-modules/issues/1045" in md
    assert "| `xid:119` | 1 | GSP RPC Timeout | RESET_GPU" in md
    # each action with where it was read: a numbered source, NVIDIA's catalog row for the code
    row = next(line for line in md.splitlines() if line.startswith("| `xid:119`"))
    ref = row.rsplit("[", 1)[1].split("]")[0]
    assert (f"- [{ref}] NVIDIA, Analyzing Xid Errors with the Xid Catalog: Table 1 Xids, code 119 (and Trigger "
            "Conditions), https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html") in md
    assert "Trigger: Xid 62." in md and "- kernel log tail: `kernel-log-tail.txt`" in md
    assert "desk-4090" not in md and "<host>" in md                # redacted
    assert "GPU-0b11d014" not in md
    assert "Missing here" in md and "`nvidia-smi -L`" in md          # no driver on this machine


def test_the_evidence_reaches_report_html(tmp_path: Path) -> None:
    from stress.report.charts import render_charts
    from stress.report.html import render_html

    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "environment.json").write_text(json.dumps(collect()))
    with Journal(rd / "journal.jsonl", fsync=False) as j:
        j.append("xid", xid=79, source="kernel-log", raw="NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus")
        j.append("capture", trigger={"kind": "xid", "xid": 79}, dir="evidence/failure",
                 items={"kernel_log_tail": {"ok": True, "file": "kernel-log-tail.txt"}})
    report = build_report(rd).report
    charts, _ = render_charts(report)
    page = render_html(report, charts)
    assert 'id="evidence"' in page and "<code>xid:79</code>" in page and "kernel-log-tail.txt" in page
    assert "RESTART_BM; if it recurs or is unexpected: CONTACT_SUPPORT" in page
    assert "source: NVIDIA, Analyzing Xid Errors with the Xid Catalog, Table 1 Xids, code 79" in page
    assert "this suite's note, not NVIDIA's: check power cables" in page


def test_the_evidence_files_go_into_the_bundle_redacted_and_never_through_a_link(tmp_path: Path) -> None:
    import os
    import tarfile

    from stress.report import write_reports

    rd = tmp_path / "run"
    (rd / "evidence" / "failure").mkdir(parents=True)
    env = collect()
    env["host"]["hostname"] = "desk-4090"
    (rd / "environment.json").write_text(json.dumps(env))
    with Journal(rd / "journal.jsonl", fsync=False) as j:
        j.append("run_start", run_id="run")
    (rd / "evidence" / "failure" / "kernel-log-tail.txt").write_text("desk-4090 kernel: NVRM: Xid 79\n")
    os.symlink("/etc/passwd", rd / "evidence" / "failure" / "evil.txt")
    res = write_reports(rd, tmp_path / "out")
    with tarfile.open(res["bundle"]) as tar:
        names = tar.getnames()
        tail = next(n for n in names if n.endswith("evidence/failure/kernel-log-tail.txt"))
        text = tar.extractfile(tail).read().decode()
    assert "Xid 79" in text and "desk-4090" not in text
    assert not any(n.endswith("evil.txt") for n in names)
    assert any("evil.txt" in w for w in res["warnings"])
