"""``stress bench``: presets run through the real supervisor and worker (tiny model, CPU)."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli

SCENARIO = """name: b
model: {base: builtin:tiny-sdxl, device: cpu}
steps: 3
resolutions: [128x128]
prompt: {tokens: 30}
"""


def test_bench_rejects_unknown_presets(tmp_path):
    sc = tmp_path / "b.yaml"
    sc.write_text(SCENARIO, encoding="utf-8")
    r = run_cli("bench", str(sc), "--presets", "fp32,turbo", "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.startswith("error: unknown preset(s) turbo") and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bench_runs_each_preset_and_reports_throughput_and_memory(tmp_path, model_cache):
    sc = tmp_path / "b.yaml"
    sc.write_text(SCENARIO, encoding="utf-8")
    r = run_cli("bench", str(sc), "--presets", "fp32", "--batch-sizes", "2", "--repeat", "1", "--images", "2",
                "--out", str(tmp_path / "out"), "--json", "--quiet", env={"STRESS_CACHE": str(model_cache)})
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads(r.stdout)
    assert [x["preset"] for x in results] == ["fp32", "fp16+sdpa batch=2"]
    for x in results:
        run = x["runs"][0]
        assert run["status"] == "finished" and run["failed"] == 0
        assert x["images_per_min"]["median"] > 0 and x["s_per_step"]["median"] > 0
        assert x["peak_memory"]["median"] > 100 << 20 and run["memory_kind"] == "cpu peak RSS"
    assert results[1]["runs"][0]["ok"] == 4          # batch 2: at least two batches, the first is warm-up
    assert len(list((tmp_path / "out").iterdir())) == 2
