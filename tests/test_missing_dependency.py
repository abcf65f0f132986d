"""A missing package is a set-up problem with a hint, not "internal error" (issue 19).

torch is made unimportable the way a missing one is: a `torch` package earlier on the path whose import
raises ModuleNotFoundError(name='torch'), exactly what Python raises when it is not installed."""
from __future__ import annotations

from pathlib import Path

from stress.journal import read_journal
from tests.conftest import ROOT, run_cli


def _no_torch(tmp_path: Path) -> dict:
    pkg = tmp_path / "shadow" / "torch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'torch\'", name="torch")\n')
    return {"PYTHONPATH": f"{ROOT}:{tmp_path / 'shadow'}"}


def test_plan_without_torch_is_exit_3_with_a_hint(tmp_path):
    proc = run_cli("plan", str(ROOT / "scenarios" / "demo.yaml"), env=_no_torch(tmp_path), timeout=120)
    assert proc.returncode == 3, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: the Python package 'torch' is not installed")
    assert "make setup" in line and "gpu-stress doctor" in line and "internal error" not in proc.stderr


def test_run_without_torch_is_a_recorded_load_failure_with_a_hint(tmp_path):
    scen = tmp_path / "s.yaml"
    scen.write_text("name: nt\nsteps: 2\nresolutions: [64x64]\nprobes: {enabled: false}\nmonitors: {enabled: false}\n")
    proc = run_cli("run", str(scen), "--out", str(tmp_path / "art"), "--reports", str(tmp_path / "rep"),
                   env=_no_torch(tmp_path), timeout=300)
    assert proc.returncode == 12, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert "No module named 'torch' (install it: make setup; then gpu-stress doctor)" in proc.stdout
    [run] = list((tmp_path / "art").iterdir())
    kinds = [e["ev"] for e in read_journal(run / "journal.jsonl").events]
    assert "load_failed" in kinds and kinds[-1] == "run_end"
