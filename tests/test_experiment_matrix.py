"""A 2x2 matrix over environment variables, end to end on the tiny models in real subprocesses: each
worker's and probe child's environment read back from /proc, a run whose worker was launched without
one of its variables (the drop-env fault) judged invalid in run.json, report.json, ticket.md, the
HTML report and the history, and ``compare --cells`` over the runs and over the history rows."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stress.journal import read_journal
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

MATRIX = """
name: wa
model:
  base: builtin:tiny-sdxl
steps: 1
cfg: 1.0
images: 1
resolutions: [64x64]
prompt: "a lighthouse"
probes:
  kinds: [decode]
  repetitions: 1
  phases: [baseline, after]
  repeat_borderline: 0    # one decode sample per run and phase: a repeat round (a loaded CI machine) adds one
monitors:
  enabled: false
env:
  __NV_DISABLE_EXPLICIT_SYNC: "1"
  PYTORCH_CUDA_ALLOC_CONF: {value: "expandable_segments:True", for: worker}
matrix:
  env.__NV_DISABLE_EXPLICIT_SYNC: ["0", "1"]
  env.PYTORCH_CUDA_ALLOC_CONF: ["expandable_segments:True", "backend:native"]
"""

# The cell [__NV_DISABLE_EXPLICIT_SYNC=1, PYTORCH_CUDA_ALLOC_CONF=backend:native] once more, its worker
# launched without PYTORCH_CUDA_ALLOC_CONF (what a launcher that drops a setting does).
DROPPED = """
extends: wa.yaml
matrix:
  env.__NV_DISABLE_EXPLICIT_SYNC: ["1"]
  env.PYTORCH_CUDA_ALLOC_CONF: ["backend:native"]
faults:
  - {image: 0, kind: drop-env, env: PYTORCH_CUDA_ALLOC_CONF}
settings:
  - {name: persistence_mode, value: 0}
"""
DROPPED_CELL = "__NV_DISABLE_EXPLICIT_SYNC=1,PYTORCH_CUDA_ALLOC_CONF=backend:native"


def _journal(rd: Path) -> list[dict]:
    return read_journal(rd / "journal.jsonl").events


def test_env_matrix_end_to_end_with_a_dropped_setting(tmp_path, model_cache):
    (tmp_path / "wa.yaml").write_text(MATRIX)
    (tmp_path / "dropped.yaml").write_text(DROPPED)
    art, reps, db = tmp_path / "artifacts", tmp_path / "reports", tmp_path / "history.db"
    env = {"STRESS_CACHE": str(model_cache), "STRESS_CPU_THREADS": "1"}
    res = run_cli("run", str(tmp_path / "wa.yaml"), "--out", str(art), "--no-report", "--history", str(db),
                  "--quiet", env=env)
    assert res.returncode in (0, 11), res.stderr[-3000:]      # not-reproduced (or inconclusive on a busy CPU)
    cells = sorted(art.iterdir())
    assert len(cells) == 4
    for rd in cells:
        evs = _journal(rd)
        exp = next(e for e in evs if e["ev"] == "experiment")
        cell = exp["cell"]
        workers = [e for e in evs if e["ev"] == "env_readback" and e["target"] == "worker"]
        started = [e for e in evs if e["ev"] == "worker_start"]
        assert [w["pid"] for w in workers] == [s["pid"] for s in started] and workers
        for w in workers:       # what the kernel gave the worker, as the cell asked
            assert w["status"] == "ok", w
            assert w["found"] == {"__NV_DISABLE_EXPLICIT_SYNC": cell["env.__NV_DISABLE_EXPLICIT_SYNC"],
                                  "PYTORCH_CUDA_ALLOC_CONF": cell["env.PYTORCH_CUDA_ALLOC_CONF"]}
        probes = [e for e in evs if e["ev"] == "env_readback" and e["target"] == "probes"]
        assert {p["phase"] for p in probes} == {"baseline", "after"}
        for p in probes:        # the probe children get only what is meant for them
            assert p["status"] == "ok" and set(p["found"]) == {"__NV_DISABLE_EXPLICIT_SYNC"}
        verdict = json.loads((rd / "run.json").read_text())["verdict"]
        assert verdict["verdict"] != "invalid" and verdict["details"]["validity"]["valid"], verdict

    # the NVML stand-in's GPU has persistence mode off: the setting is read back in effect, nothing run
    nvml = {"STRESS_NVML_MODULE": "fake_nvml", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
            "STRESS_NVIDIA_SMI": "/bin/false"}
    res = run_cli("run", str(tmp_path / "dropped.yaml"), "--out", str(art), "--reports", str(reps),
                  "--history", str(db), "--quiet", env=dict(env, **nvml))
    assert res.returncode == 11, res.stderr[-3000:]
    assert "verdict: invalid" in res.stdout
    bad = next(p for p in art.iterdir() if p not in cells)
    rb = next(e for e in _journal(bad) if e["ev"] == "env_readback" and e["target"] == "worker")
    assert rb["status"] == "mismatch" and rb["wrong"] == ["PYTORCH_CUDA_ALLOC_CONF"]
    assert rb["found"]["PYTORCH_CUDA_ALLOC_CONF"] is None
    why = (f"invalid: PYTORCH_CUDA_ALLOC_CONF was not in effect in worker 0 (pid {rb['pid']}): asked for "
           "'backend:native', found unset")
    run_json = json.loads((bad / "run.json").read_text())
    assert run_json["verdict"]["verdict"] == "invalid" and run_json["verdict"]["reasons"][0] == why
    assert run_json["verdict"]["details"]["observed_verdict"] in ("not-reproduced", "inconclusive")
    report_dir = reps / bad.name
    report = json.loads((report_dir / "report.json").read_text())
    (setting,) = report["experiment"]["settings"]
    assert (setting["status"], setting["before"], setting["command"]) == ("ok", 0, None)
    assert [rb["status"] for rb in report["experiment"]["env_readbacks"]] == ["ok", "mismatch", "ok"]
    assert report["verdict"]["verdict"] == "invalid" and why in report["verdict"]["reasons"]
    assert why in (report_dir / "ticket.md").read_text()
    html = (report_dir / "report.html").read_text()
    assert "invalid" in html and "PYTORCH_CUDA_ALLOC_CONF was not in effect" in html

    # The comparison across cells: from the run directories, and from the history rows.
    for source in ([str(art)], ["matrix=wa", "--db", str(db)]):
        out_html = tmp_path / "cells.html"
        res = run_cli("compare", "--cells", *source, "--html", str(out_html), "--json")
        assert res.returncode == 0, res.stderr
        result = json.loads(res.stdout)
        by = {c["cell"]: c for c in result["cells"]}
        assert len(by) == 4 and result["reference"] == "__NV_DISABLE_EXPLICIT_SYNC=0,PYTORCH_CUDA_ALLOC_CONF=" \
                                                      "expandable_segments:True"
        assert by[DROPPED_CELL]["runs"] == 2 and by[DROPPED_CELL]["invalid"] == 1
        assert sum(by[DROPPED_CELL]["verdicts"].values()) == 2 and by[DROPPED_CELL]["verdicts"]["invalid"] == 1
        for c in by.values():   # one valid run per cell pooled, its probes in each latency metric
            assert c["latency"]["after:decode"]["n"] == 1
        page = out_html.read_text()
        assert page.count("<svg") == len(result["metrics"]) == 3      # incidence, baseline:decode, after:decode
    res = run_cli("compare", "--cells", str(art))
    assert res.returncode == 0 and "1 INVALID (not pooled)" in res.stdout
    assert "differ significantly from the reference" in res.stdout
