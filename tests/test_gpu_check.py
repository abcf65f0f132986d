"""benchmarks/gpu_check.py --dry-run: the GPU check's steps on the CPU with the tiny models."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_json_and_markdown(tmp_path):
    out = tmp_path / "gpu-validation.md"
    out.write_text("# existing page\n", encoding="utf-8")
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out),
                        "--skip", "overhead", "--sampler-seconds", "1", "--only", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "STRESS_CPU_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    data = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert data["dry_run"] is True
    assert data["steps"]["doctor"]["json"] is True
    assert data["steps"]["sampler"]["rc"] == 0 and data["steps"]["sampler"]["nvml"].startswith("scripted")
    assert data["steps"]["overhead"] == {"skipped": "--skip", "seconds": 0.0} or "skipped" in data["steps"]["overhead"]
    rows = data["steps"]["peaks"]["rows"]
    assert len(rows) == 2 and all("error" not in r for r in rows)
    for r in rows:   # the trace against real CPU allocations: never above, at most 128 KiB below
        assert r["measured"] - 128 * 1024 <= r["predicted"] <= r["measured"], r
    md = out.read_text(encoding="utf-8")
    assert md.startswith("# existing page") and "NOT a GPU figure" in md and rows[0]["name"] in md


def test_every_configuration_of_the_gpu_check_is_distinct():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    for dry in (True, False):
        rows = gpu_check.configurations(dry)
        assert len(rows) >= 8 and len({r["name"] for r in rows}) == len(rows)
    full = gpu_check.configurations(False)
    assert {r["dtype"] for r in full} == {"fp16", "bf16", "fp32"}
    assert sum(1 for r in full if r.get("img2img")) == 3
