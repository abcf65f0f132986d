"""A full disk (issue 19), on a real small tmpfs: the journal keeps a reserve so that the end of a run is
always recorded; it never raises for lack of space; `report --out elsewhere` works from a full or
read-only run directory and leaves no temp files."""
from __future__ import annotations

import errno
import os

import pytest

from stress.journal import Journal, read_journal, write_json_atomic
from synth_journal import Synth, make_run
from tests.conftest import run_cli
from tests.smallfs import fill, remount_read_only, small_fs


@pytest.fixture
def fs(tmp_path):
    with small_fs(tmp_path / "small", "4m") as mount:
        yield mount


def test_journal_on_a_full_disk_sheds_ticks_and_records_the_end(fs):
    j = Journal(fs / "run" / "journal.jsonl", reserve_bytes=1024 * 1024)
    assert j.reserve.stat().st_size == 1024 * 1024
    j.append("run_start", run_id="r")
    fill(fs, leave=0)
    with pytest.raises(OSError) as info:    # the disk really is full
        (fs / "probe").write_bytes(b"x" * 8192)
    assert info.value.errno == errno.ENOSPC
    for i in range(200):
        j.append("host", cpu=i, pad="x" * 200)      # sampler ticks: shed once the reserve is used
        j.append("image", index=i, outcome="error", error="OSError: [Errno 28] No space left on device")
    j.append("host", cpu=1, dsgone=[{"name": "Xorg", "pid": 77}])   # a display process went away: kept
    j.append("verdict", verdict="error")
    j.append("run_end", status="finished")
    assert j.low_space and j.shed > 0 and not j.unwritten
    j.close()
    assert not j.reserve.exists()
    events = read_journal(fs / "run" / "journal.jsonl")
    kinds = [e["ev"] for e in events.events]
    assert not events.torn_tail and not events.bad_lines
    assert kinds.count("image") == 200 and kinds[-3:] == ["verdict", "run_end", "journal_low_space"]
    assert kinds.index("journal_low_space") < kinds.index("verdict") and 0 < kinds.count("host") < 200
    assert events.events[-4] == dict(events.events[-4], ev="host", dsgone=[{"name": "Xorg", "pid": 77}])
    assert [e for e in events.events if e["ev"] == "journal_low_space"][-1]["shed_ticks"] == j.shed


def test_journal_never_raises_when_even_the_reserve_is_gone(fs):
    j = Journal(fs / "run" / "journal.jsonl", reserve_bytes=64 * 1024)
    filler2 = fs / "more.bin"
    fd = os.open(filler2, os.O_WRONLY | os.O_CREAT)
    fill(fs, leave=0)
    j.append("image", index=0, outcome="ok")     # releases the reserve...
    try:
        while True:                              # ...whose room another writer then takes
            os.write(fd, b"\0" * 4096)
    except OSError:
        os.close(fd)
    for i in range(50):
        j.append("image", index=i + 1, outcome="error", error="E" * 500)   # nothing fits: kept, never raised
    assert j.unwritten
    filler2.unlink()                                         # space again: the backlog goes out in order
    j.append("run_end", status="finished")
    j.close()
    events = read_journal(fs / "run" / "journal.jsonl").events
    indices = [e["index"] for e in events if e["ev"] == "image"]
    assert indices == list(range(51)) and events[-1]["ev"] == "run_end"
    assert any(e["ev"] == "journal_low_space" and e["reserve_released"] for e in events)


def test_write_json_atomic_leaves_no_temp_file_on_a_full_disk(fs):
    fill(fs, leave=0)
    with pytest.raises(OSError):
        write_json_atomic(fs / "run.json", {"x": "y" * 100_000})
    assert sorted(p.name for p in fs.iterdir()) == ["filler.bin"]


def test_report_elsewhere_from_a_full_then_read_only_run_directory(fs, tmp_path):
    run = make_run(fs, Synth(images=3))
    (run / "run.json").unlink()
    fill(fs, leave=0)
    out = tmp_path / "elsewhere"
    proc = run_cli("report", str(run), "--out", str(out), "--no-history", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "run.json not rewritten there (No space left on device)" in proc.stderr
    assert (out / "report.json").is_file() and (out / "run.json").is_file()
    assert not [p for p in run.rglob(".*.tmp")], "temp files left in the run directory"
    remount_read_only(fs)
    out2 = tmp_path / "elsewhere2"
    proc = run_cli("report", str(run), "--out", str(out2), "--no-history", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Read-only file system" in proc.stderr and (out2 / "report.json").is_file()


def test_report_into_a_full_out_folder_is_one_line_exit_2(fs, tmp_path):
    run = make_run(tmp_path / "runs", Synth(images=2))
    fill(fs, leave=0)
    proc = run_cli("report", str(run), "--out", str(fs / "out"), "--no-history", timeout=120)
    assert proc.returncode == 2, proc.stderr
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert "No space left on device" in line and "--out" in line and "Traceback" not in proc.stderr
    assert not [p for p in fs.rglob(".*.tmp")]


RUN_SCENARIO = """
name: full
model: {base: builtin:tiny-sdxl}
steps: 2
images: 8
resolutions: [64x64]
seeds: 7
prompt: {tokens: 40}
probes: {enabled: false}
monitors: {enabled: false}
session: {image_timeout: 120s}
"""


@pytest.mark.slow
def test_a_run_that_fills_its_disk_ends_with_its_record(tmp_path, model_cache):
    """The disk (a 6 MB tmpfs holding the run and its reports) is filled to the last byte once the worker
    is ready: images that cannot be saved are errors, the journal uses its reserve, the run ends with its
    verdict, run_end and run.json (or says why not); `report --out elsewhere` then writes the report."""
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    scen = tmp_path / "full.yaml"
    scen.write_text(RUN_SCENARIO)
    with small_fs(tmp_path / "small", "6m") as fs:
        env = dict(os.environ, STRESS_CACHE=str(model_cache), PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "stress", "run", str(scen), "--out", str(fs / "artifacts"),
                                 "--reports", str(fs / "reports")], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 300
            journal = None
            while time.monotonic() < deadline and proc.poll() is None:
                found = list((fs / "artifacts").glob("*/journal.jsonl"))
                if found and b'"worker_ready"' in found[0].read_bytes():
                    journal = found[0]
                    break
                time.sleep(0.1)
            assert journal is not None, proc.communicate(timeout=60)
            fill(fs, leave=0)
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert "Traceback" not in err and "internal error" not in err, err[-3000:]
        assert proc.returncode == 12, (out[-2000:], err[-3000:])
        run = journal.parent
        events = read_journal(journal).events
        kinds = [e["ev"] for e in events]
        assert "journal_low_space" in kinds and "verdict" in kinds and "run_end" in kinds, kinds[-10:]
        assert kinds.index("journal_low_space") < kinds.index("run_end")
        images = [e for e in events if e["ev"] == "image"]
        assert len(images) == 8
        failed = [i for i in images if i["outcome"] != "ok"]
        assert failed and all("No space left on device" in (i.get("error") or "") for i in failed), failed
        assert (run / "run.json").is_file() or "run.json not written" in err
        if not (fs / "reports" / run.name / "report.json").is_file():
            assert f"gpu-stress report {run}" in err, err[-2000:]
        assert not [p for p in run.rglob(".*.tmp")]
        out_dir = tmp_path / "reports-elsewhere"
        rep = run_cli("report", str(run), "--out", str(out_dir), "--no-history", timeout=300)
        assert rep.returncode == 0, rep.stderr
        assert (out_dir / "report.json").is_file() and (out_dir / f"{run.name}.tar.gz").is_file()
