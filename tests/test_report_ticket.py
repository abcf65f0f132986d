"""ticket.md: every field NVIDIA's bug template asks for, filled from the run."""
from __future__ import annotations

import copy
import re

import pytest

from stress.report.build import build_report
from stress.report.ticket import FIELDS, incidence, render_ticket
from synth_journal import Synth, make_run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("ticket"), Synth(images=6))
    r = build_report(run).report
    r["attachments"] = [{"name": f"{r['run_id']}.tar.gz", "what": "the bundle", "included": True}]
    return r


def _sections(md: str) -> dict[str, str]:
    parts = re.split(r"^### (.+)$", md, flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts), 2)}


def test_every_template_field_is_filled(report):
    md = render_ticket(report)
    sections = _sections(md)
    assert list(sections) == list(FIELDS)
    for name, body in sections.items():
        assert body, name
    assert sections["NVIDIA driver version"].startswith("580.95.05 (CUDA 13.0)")
    assert sections["Operating system and version"] == "Ubuntu 24.04.1 LTS"
    assert "6.8.0-49-generic" in sections["Kernel release"] and "<host>" in sections["Kernel release"]
    assert "- [x] I am running on a stable kernel release." in sections["Kernel release"]
    assert "Xorg (x11 session)" in sections["Display server / desktop environment"]
    assert "gnome-shell" in sections["Display server / desktop environment"]


def test_gpu_line_is_nvidia_smi_l_format_with_uuid_masked(report):
    gpu = _sections(render_ticket(report))["Hardware: GPU"]
    lines = [x for x in gpu.splitlines() if not x.startswith("```")]
    assert lines == ["GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-<uuid>)"]
    assert re.fullmatch(r"GPU \d+: .+ \(UUID: GPU-<uuid>\)", lines[0])


def test_steps_name_the_exact_command_and_scenario(report):
    steps = _sections(render_ticket(report))["To reproduce"]
    assert "`gpu-stress run ~/gpu-stress/scenarios/sdnext-regression.yaml`" in steps
    assert "dpmpp_2m_karras" in steps and "38 steps" in steps and "CFG 6.8" in steps
    assert "1152x1536, 848x1152, 1024x1024" in steps and "2400 tokens" in steps
    assert "scenario.resolved.json" in steps


def test_description_lists_the_evidence(report):
    desc = _sections(render_ticket(report))["Describe the bug"]
    assert "**reproduced**" in desc
    assert "Xid 56 (Display Engine error)" in desc
    assert "gnome-shell restarted" in desc and "1800 → 2900" in desc
    assert "Xorg RSS" in desc and "+400 MiB" in desc


def test_attachments_and_bug_report_status(report):
    s = _sections(render_ticket(report))
    assert f"`{report['run_id']}.tar.gz`" in s["More info"]
    assert "sudo nvidia-bug-report.sh" in s["nvidia-bug-report.log.gz"]
    r = copy.deepcopy(report)
    r["attachments"].append({"name": "nvidia-bug-report.log.gz", "what": "captured", "included": True})
    assert _sections(render_ticket(r))["nvidia-bug-report.log.gz"].startswith("Attached: `nvidia-bug-report.log.gz`")


def test_incidence_is_the_judges_and_only_when_reproduced():
    """The ticket renders the incidence the judge gave (stress.analysis.incidence); it never recounts."""
    inc = {"word": "Sometimes", "affected": 2, "visits": 5, "evidence": 0, "why": "2 of 5 desktop probe visits"}
    assert incidence({"verdict": {"verdict": "reproduced", "details": {"incidence": inc}}}) == \
        ("Sometimes", "2 of 5 desktop probe visits")
    word, why = incidence({"verdict": {"verdict": "not-reproduced", "details": {"incidence": None}}})
    assert word == "Not observed" and "not-reproduced" in why
    assert incidence({})[0] == "Not observed"


def test_no_gpu_and_rc_kernel(report):
    r = copy.deepcopy(report)
    r["machine"]["gpus"] = []
    r["machine"]["kernel_stable"] = False
    s = _sections(render_ticket(r))
    assert "no NVIDIA GPU recorded" in s["Hardware: GPU"]
    assert "release-candidate kernel" in s["Kernel release"]
