"""Classified kernel-log errors in the verdict, end to end: `gpu-stress run` on the tiny models with the
desktop probes on a private Xvfb, and recorded real kernel-log lines fed by the kernel-log stand-in
(STRESS_KERNEL_LOG_COMMAND) once the workload has started, into report.json and ticket.md. Two runs (a few
seconds of work each, most of it the worker's start): a flip timeout alone, and a PCIe AER error followed
by a flip timeout; the first run's record judged again without its classified lines is the clean log."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stress.hw import kernel_log
from tests.conftest import run_cli
from tests.xvfb import SKIP_REASON, XVFB, xvfb

pytestmark = [pytest.mark.slow, pytest.mark.skipif(XVFB is None, reason=SKIP_REASON)]

SAMPLES = json.loads((Path(__file__).parent / "data" / "kernel_log_samples.json").read_text())["samples"]
FLIP = next(s for s in SAMPLES if s["expect"] == "nvidia-drm-flip-timeout" and s["fmt"] == "journal")
AER = next(s for s in SAMPLES if s["expect"] == "pcie-aer-uncorrected" and s["fmt"] == "dmesg")
BENIGN = [s for s in SAMPLES if s["expect"] is None and s["fmt"] == "journal"]

SCENARIO = """
name: klog
model:
  base: builtin:tiny-sdxl
  refiner: null
steps: 2
images: 1
resolutions: [64x64]
seeds: 1234
prompt:
  tokens: 10
negative_prompt: "blurry"
probes:
  kinds: [display]          # the round trip: a bare Xvfb's screenshots are black, so baseline would fail
  phases: [baseline, after]
  repetitions: 2
  timeout: 10
  display_wait: 2
monitors:
  interval: 0.2
  capture_at_failure: false   # tested in test_failure_capture.py; here it would only add time
session:
  image_timeout: 120s
"""


def run_with_kernel_log(tmp_path: Path, model_cache: Path, lines: list[str], fmt: str) -> tuple[dict, str, int, Path]:
    """One run whose kernel log prints ``lines`` as soon as the workload phase has started."""
    log = tmp_path / "kernel.log"
    log.write_text("".join(line + "\n" for line in lines))
    scen = tmp_path / "klog.yaml"
    scen.write_text(SCENARIO)
    out = tmp_path / "artifacts"
    wait = (f"until grep -qs '\"phase\":\"workload\",\"state\":\"start\"' '{out}'/*/journal.jsonl; "
            "do sleep 0.05; done")
    with xvfb(320, 240) as x:
        res = run_cli("run", str(scen), "--out", str(out), "--reports", str(tmp_path / "reports"), "--no-history",
                      "--quiet", timeout=300,
                      env={"STRESS_CACHE": str(model_cache), "DISPLAY": x.display, "WAYLAND_DISPLAY": "",
                           kernel_log.STAND_IN_ENV: f"{wait}; cat '{log}'; exec sleep 600",
                           kernel_log.STAND_IN_FORMAT_ENV: fmt})
    assert "Traceback" not in res.stderr, res.stderr
    (rep,) = (tmp_path / "reports").glob("*")
    (rd,) = out.glob("*")
    return json.loads((rep / "report.json").read_text()), (rep / "ticket.md").read_text(), res.returncode, rd


def test_a_flip_event_timeout_during_the_run_is_the_regression(tmp_path: Path, model_cache) -> None:
    from stress.analysis import judge
    from stress.record import load
    from stress.scenario import load_scenario

    report, ticket, rc, rd = run_with_kernel_log(tmp_path, model_cache, [FLIP["line"]], "journal")
    v = report["verdict"]
    assert v["verdict"] == "reproduced" and rc == 10, v["reasons"]
    line = FLIP["line"].split(" kernel: ", 1)[1]
    reason = next(r for r in v["reasons"] if "nvidia-drm-flip-timeout" in r)
    assert reason.split(": ", 1)[0] in ("during", "after")
    assert reason.split(": ", 1)[1] == f'kernel log, display-engine (nvidia-drm-flip-timeout): "{line}"'
    assert "fedora-box" not in json.dumps(v)                     # the journal's host name is not in it
    assert reason in ticket
    (item,) = [i for i in v["details"]["kernel_log"] if i["id"] == "nvidia-drm-flip-timeout"]
    assert item["role"] == "regression" and item["class"] == "display-engine"
    assert v["details"]["incidence"]["evidence"] >= 1
    # the same real run with a clean kernel log: the verdict is the probes' alone, as before this rule
    rec = load(rd)
    assert [e["cls"] for e in rec.kmsg_classified] == ["nvidia-drm-flip-timeout"]
    rec.kmsg_classified = []
    clean = judge(rec, load_scenario(tmp_path / "klog.yaml").probes)
    assert clean["verdict"] in ("not-reproduced", "inconclusive"), clean["reasons"]
    assert not any("kernel log" in r for r in clean["reasons"]) and clean["details"]["kernel_log"] == []


def test_a_pcie_hardware_error_points_at_hardware_not_the_driver(tmp_path: Path, model_cache) -> None:
    report, ticket, rc, _ = run_with_kernel_log(tmp_path, model_cache,
                                                [AER["line"], FLIP["line"].split(" kernel: ")[1]], "dmesg")
    v = report["verdict"]
    assert v["verdict"] == "inconclusive" and rc == 11, v["reasons"]
    hw = next(r for r in v["reasons"] if "pcie-aer-uncorrected" in r)
    assert "kernel log, pcie-aer (pcie-aer-uncorrected): \"pcieport 0000:00:02.0: PCIe Bus Error: severity=Uncorrected " \
           "(Fatal)" in hw and "points at hardware" in hw and "not at a driver regression" in hw
    assert hw in ticket
    # the flip timeout after it is its consequence, not a driver regression
    assert any("nvidia-drm-flip-timeout" in n and "consequence" in n for n in v["details"]["notes"])
    assert v["details"]["monitor_evidence"] == []
