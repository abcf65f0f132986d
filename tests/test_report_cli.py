"""``gpu-stress report`` as a user runs it: a real subprocess."""
from __future__ import annotations

import json
import tarfile

from conftest import run_cli
from stress.commands.report import default_out_root
from synth_journal import Synth, make_run, truncate_journal


def test_report_command_writes_everything(tmp_path):
    run = make_run(tmp_path / "artifacts", Synth(images=4))
    out = tmp_path / "reports" / "x"
    done = run_cli("report", str(run), "--out", str(out), timeout=180)
    assert done.returncode == 0, done.stderr
    for name in ("report.json", "report.html", "ticket.md", f"{run.name}.tar.gz"):
        assert (out / name).is_file(), name
    assert f"bundle:  {out / (run.name + '.tar.gz')}" in done.stdout
    assert "Traceback" not in done.stderr
    with tarfile.open(out / f"{run.name}.tar.gz") as tar:
        assert f"{run.name}/MANIFEST.sha256" in tar.getnames()


def test_report_command_on_a_power_loss_run(tmp_path):
    run = make_run(tmp_path, Synth(images=5, finish=False))
    truncate_journal(run, 0.8)
    done = run_cli("report", str(run), "--out", str(tmp_path / "out"), "--no-bundle", timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verdict"]["verdict"] == "incomplete"
    assert any("without run_end" in m for m in report["completeness"]["missing"])
    assert not list((tmp_path / "out").glob("*.tar.gz"))


def test_no_journal_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "missing"):
        done = run_cli("report", str(target), "--out", str(tmp_path / "o"), timeout=60)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(target) in lines[0]
        assert done.stdout == ""


def test_unwritable_out_dir_is_one_line(tmp_path):
    run = make_run(tmp_path, Synth(images=2))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = run_cli("report", str(run), "--out", str(blocker / "sub"), timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: ") and len(done.stderr.strip().splitlines()) == 1


def test_schema_flag_prints_json_schema(tmp_path):
    done = run_cli("report", "--schema", timeout=60)
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert schema["title"] == "stress report.json" and "verdict" in schema["properties"]


def test_default_out_root(tmp_path):
    assert default_out_root(tmp_path) == tmp_path / "reports"
    repo = tmp_path / "repo"
    (repo / "stress").mkdir(parents=True)
    (repo / "stress" / "__init__.py").write_text("")
    (repo / "pyproject.toml").write_text("")
    (repo / "sub" / "deeper").mkdir(parents=True)
    assert default_out_root(repo / "sub" / "deeper") == repo / "reports"
