"""The bundle never follows a link out of the run directory (issue 19): each case is left out with a note."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from stress.report import write_reports
from synth_journal import Synth, make_run
from tests.conftest import run_cli

SECRET = b"root:$6$SECRET-HASH-NOT-FOR-TICKETS:19000:0:99999:7:::\n"


def _bundle_texts(bundle: Path) -> dict[str, bytes]:
    out = {}
    with tarfile.open(bundle) as tar:
        for m in tar.getmembers():
            if m.isfile():
                out[m.name.split("/", 1)[1]] = tar.extractfile(m).read()
    return out


def _gunzip_all(texts: dict[str, bytes]) -> bytes:
    import gzip

    return b"".join(gzip.decompress(v) if k.endswith(".gz") else v for k, v in texts.items())


@pytest.fixture
def secret(tmp_path) -> Path:
    p = tmp_path / "outside" / "shadow"
    p.parent.mkdir()
    p.write_bytes(SECRET)
    return p


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run", Synth(images=2))


def _readme(texts: dict[str, bytes]) -> str:
    return texts["README.txt"].decode()


def test_log_linked_out_of_the_run_is_left_out_with_a_note(run, secret, tmp_path):
    (run / "logs" / "evil.log").symlink_to(secret)
    (run / "logs" / "passwd.log").symlink_to("/etc/passwd")
    res = write_reports(run, tmp_path / "out")
    texts = _bundle_texts(res["bundle"])
    assert "logs/evil.log" not in texts and "logs/passwd.log" not in texts and "logs/worker-0.log" in texts
    assert b"SECRET-HASH" not in _gunzip_all(texts) and b"root:x:0:0" not in _gunzip_all(texts)
    assert "logs/evil.log: left out of the bundle: a link out of the run directory" in _readme(texts)
    assert any("logs/evil.log" in w for w in res["warnings"])


def test_link_inside_the_run_directory_is_kept(run, tmp_path):
    (run / "logs" / "again.log").symlink_to("worker-0.log")
    texts = _bundle_texts(write_reports(run, tmp_path / "out")["bundle"])
    assert texts["logs/again.log"] == texts["logs/worker-0.log"]


def test_screenshot_linked_out_is_left_out_even_with_screenshots_included(run, secret, tmp_path):
    probes = run / "probes"
    probes.mkdir(exist_ok=True)
    (probes / "real.png").write_bytes(b"\x89PNG real screenshot")
    (probes / "x.png").symlink_to(secret)
    (probes / "sub").symlink_to(secret.parent, target_is_directory=True)
    res = write_reports(run, tmp_path / "out", include_screenshots=True)
    texts = _bundle_texts(res["bundle"])
    assert texts["probes/real.png"] == b"\x89PNG real screenshot"
    assert "probes/x.png" not in texts and not any(k.startswith("probes/sub") for k in texts)
    assert b"SECRET-HASH" not in _gunzip_all(texts)
    readme = _readme(texts)
    assert "probes/x.png: left out of the bundle: a link out of the run directory" in readme
    assert "probes/sub: left out of the bundle: a link to a folder" in readme


def test_journal_linked_out_is_not_bundled(run, secret, tmp_path):
    journal = run / "journal.jsonl"
    journal.unlink()
    journal.symlink_to(secret)
    res = write_reports(run, tmp_path / "out")
    texts = _bundle_texts(res["bundle"])
    assert b"SECRET-HASH" not in _gunzip_all(texts)
    assert "journal.jsonl: left out of the bundle: a link out of the run directory" in _readme(texts)


def test_report_command_refuses_a_journal_linked_out(run, secret, tmp_path):
    journal = run / "journal.jsonl"
    journal.unlink()
    journal.symlink_to(secret)
    proc = run_cli("report", str(run), "--out", str(tmp_path / "out"), "--no-history", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "journal.jsonl is a link out of the run directory" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_logs_folder_linked_out_is_left_out(run, secret, tmp_path):
    os.rename(run / "logs", tmp_path / "real-logs")
    (secret.parent / "worker-0.log").write_bytes(SECRET)
    (run / "logs").symlink_to(secret.parent, target_is_directory=True)
    res = write_reports(run, tmp_path / "out")
    texts = _bundle_texts(res["bundle"])
    assert not any(k.startswith("logs/") for k in texts)
    assert b"SECRET-HASH" not in _gunzip_all(texts)
    assert "logs/: left out of the bundle: a link out of the run directory" in _readme(texts)
