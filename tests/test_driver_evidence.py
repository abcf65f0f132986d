"""Classified kernel-log errors in the verdict (stress.driver_evidence, called by stress.analysis.verdict),
on real recorded lines from public reports (tests/data/kernel_log_samples.json)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stress.analysis import verdict
from stress.driver_evidence import DISPLAY_PATH, GPU_HANG, HARDWARE, kernel_log_evidence, message_of
from stress.hw import kernel_log
from stress.probes.config import ProbesConfig

SAMPLES = json.loads((Path(__file__).parent / "data" / "kernel_log_samples.json").read_text())["samples"]
WORK = 100.0          # the workload starts here, ends at END
END = 200.0


def sample(pattern_id: str, fmt: str | None = None) -> str:
    return next(s["line"] for s in SAMPLES if s["expect"] == pattern_id and (fmt is None or s["fmt"] == fmt))


def kmsg(pattern_id: str, t: float, fmt: str | None = None) -> dict:
    return {"ev": "kmsg", "t": t, "line": sample(pattern_id, fmt), "cls": pattern_id}


def run(extra: list[dict], probes_fail: bool = False, screen: bool = True) -> dict:
    evs = [{"ev": "phase", "phase": "workload", "state": "start", "t": WORK},
           {"ev": "phase", "phase": "workload", "state": "end", "t": END}]
    for phase, t in (("baseline", 50.0), ("after", 210.0)):
        for rep in range(5):
            for kind in ("screenshot", "display") if screen else ("decode",):
                bad = probes_fail and phase == "after"
                evs.append({"ev": "probe", "phase": phase, "kind": kind, "rep": rep, "t": t + rep,
                            "status": "timeout" if bad else "ok", "latency_s": None if bad else 0.01 + rep * 1e-4,
                            "metrics": {"ref_s_per_mp": 0.01}})
    return verdict(sorted(evs + extra, key=lambda e: e["t"]),
                   ProbesConfig(kinds=["screenshot", "display"] if screen else ["decode"]))


def test_every_class_of_the_table_has_a_role() -> None:
    classes = {p.cls for p in kernel_log.PATTERNS}
    roles = set(DISPLAY_PATH) | set(GPU_HANG) | set(HARDWARE) | {"driver-assert", "page-fault"}
    assert classes <= roles, classes - roles          # a new class must be placed in the rule (docs/evidence.md)


def test_message_of_drops_time_and_host_and_is_bounded() -> None:
    journal = sample("nvidia-drm-flip-timeout", "journal")
    assert "fedora-box" in journal
    assert message_of(journal) == ("[drm:nv_drm_atomic_commit [nvidia_drm]] *ERROR* [nvidia-drm] [GPU ID 0x00000100] "
                                   "Flip event timeout on head 0")
    assert message_of("6,1234,5678901,-;NVRM: Xid (PCI:0000:01:00): 79") == "NVRM: Xid (PCI:0000:01:00): 79"
    assert message_of(sample("pcie-aer-uncorrected", "dmesg")).startswith("pcieport 0000:00:02.0: PCIe Bus Error")
    assert len(message_of("x" * 5000)) == 200


def test_a_flip_timeout_during_the_workload_reproduces_though_every_probe_passed() -> None:
    clean = run([])
    assert clean["verdict"] == "not-reproduced"
    v = run([kmsg("nvkms-lost-notification", 150), kmsg("nvidia-drm-flip-timeout", 151, "journal"),
             kmsg("nvidia-drm-flip-timeout", 152, "journal")])
    assert v["verdict"] == "reproduced" and v["exit_code"] == 10, v["reasons"]
    assert v["reasons"] == ['during: kernel log, display-engine (nvidia-drm-flip-timeout, 2 lines): '
                            '"[drm:nv_drm_atomic_commit [nvidia_drm]] *ERROR* [nvidia-drm] [GPU ID 0x00000100] '
                            'Flip event timeout on head 0"']
    assert any("nvkms-lost-notification" in n and "(a warning)" in n for n in v["details"]["notes"])
    roles = {i["id"]: i["role"] for i in v["details"]["kernel_log"]}
    assert roles == {"nvidia-drm-flip-timeout": "regression", "nvkms-lost-notification": "note"}
    assert v["details"]["monitor_evidence"] == v["reasons"]


@pytest.mark.parametrize("pattern_id", ["nvrm-gsp-rpc-timeout", "amdgpu-ring-timeout", "amdgpu-vram-lost",
                                        "nvkms-alloc-failed", "nvrm-bar1-va-exhausted", "i915-gpu-hang"])
def test_display_path_and_gpu_hang_errors_after_the_workload_reproduce(pattern_id: str) -> None:
    v = run([kmsg(pattern_id, 205)])
    assert v["verdict"] == "reproduced" and v["reasons"][0].startswith("after: kernel log, "), v["reasons"]
    assert f"({pattern_id})" in v["reasons"][0] and kernel_log.pattern(pattern_id).cls in v["reasons"][0]


def test_supporting_classes_and_lines_before_the_workload_do_not_reproduce() -> None:
    v = run([kmsg("nvrm-assert-failed", 150), kmsg("amdgpu-page-fault", 151)])
    assert v["verdict"] == "not-reproduced" and len(v["details"]["notes"]) == 2
    before = run([kmsg("nvidia-drm-flip-timeout", 60)])
    assert before["verdict"] == "not-reproduced"
    assert any(n.startswith("before the workload: kernel log, display-engine") for n in before["details"]["notes"])
    again = run([kmsg("nvidia-drm-flip-timeout", 60), kmsg("nvidia-drm-flip-timeout", 150)])
    assert again["verdict"] == "inconclusive"          # the machine was broken before the load
    assert any("already appeared before the workload; later ones prove nothing" in r for r in again["reasons"])


def test_hardware_points_at_hardware_and_what_follows_is_its_consequence() -> None:
    v = run([kmsg("pcie-aer-uncorrected", 150, "dmesg"), kmsg("nvidia-drm-flip-timeout", 151),
             {"ev": "xid", "t": 151.5, "gpu": 0, "xid": 56, "category": "display-engine",
              "description": "Display Engine error", "source": "kernel-log"},
             {"ev": "source", "t": 152, "src": "nvml", "gpu": 0, "status": "unavailable", "reason": "GPU lost"}])
    assert v["verdict"] == "inconclusive" and v["exit_code"] == 11, v["reasons"]
    (hw,) = v["details"]["hardware_evidence"]
    assert hw.startswith('during: kernel log, pcie-aer (pcie-aer-uncorrected): "pcieport 0000:00:02.0: PCIe Bus '
                         'Error: severity=Uncorrected (Fatal)') and "points at hardware" in hw and hw in v["reasons"]
    consequences = [n for n in v["details"]["notes"] if "counted as its consequence" in n]
    assert len(consequences) == 3                      # the flip timeout, the Xid 56, the lost GPU
    assert v["details"]["monitor_evidence"] == []


def test_xid_79_points_at_hardware_and_a_broken_desktop_lists_it_first() -> None:
    x79 = {"ev": "xid", "t": 150, "gpu": 0, "xid": 79, "category": "fallen-off-bus",
           "description": "GPU has fallen off the bus", "source": "kernel-log"}
    alone = run([x79])
    assert alone["verdict"] == "inconclusive"
    assert any(r.startswith("Xid 79 on GPU 0: GPU has fallen off the bus") and "points at hardware" in r
               for r in alone["reasons"])
    broken = run([x79], probes_fail=True)               # the desktop did break: reproduced, hardware first
    assert broken["verdict"] == "reproduced" and broken["reasons"][0].startswith("Xid 79 on GPU 0")
    assert any("screenshot timed out" in r for r in broken["reasons"][1:])
    corrected = run([kmsg("pcie-aer-corrected", 150, "journal")])
    assert corrected["verdict"] == "not-reproduced"     # a corrected error is a note
    assert kernel_log_evidence([{"ev": "phase", "phase": "workload", "state": "start", "t": 0},
                                kmsg("pcie-aer-corrected", 1, "journal")])["hardware"] == []


def test_without_a_screen_probe_kernel_log_evidence_alone_is_a_note() -> None:
    v = run([kmsg("nvidia-drm-flip-timeout", 150)], screen=False)
    assert v["verdict"] == "inconclusive"
    assert any(n.startswith("not counted (no screen probe was measured): during: kernel log") for n in v["details"]["notes"])
