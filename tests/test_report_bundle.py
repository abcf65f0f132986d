"""The bundle: manifest, size cap, journal thinning, nvidia-bug-report capture (real subprocesses)."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from stress.journal import RunDir
from stress.report import write_reports
from stress.report.bundle import BUNDLE_CAP_BYTES, capture_nvidia_bug_report, thin_journal
from stress.report.build import build_report
from synth_journal import HOST, SERIAL, UUID, Synth, make_run


def _extract(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    (inner,) = list(dest.iterdir())
    return inner


def test_manifest_checks_with_sha256sum(tmp_path):
    run = make_run(tmp_path / "a", Synth(images=4))
    res = write_reports(run, tmp_path / "out")
    inner = _extract(res["bundle"], tmp_path / "x")
    assert inner.name == run.name
    names = {p.relative_to(inner).as_posix() for p in inner.rglob("*") if p.is_file()}
    assert {"README.txt", "report.json", "report.html", "ticket.md", "journal.jsonl.gz", "scenario.resolved.json",
            "environment.json", "run.json", "outputs.sha256", "MANIFEST.sha256", "logs/worker-0.log"} <= names
    listed = {line.split("  ", 1)[1] for line in (inner / "MANIFEST.sha256").read_text().splitlines()}
    assert listed == names - {"MANIFEST.sha256"}
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "--check", "--strict", "MANIFEST.sha256"], cwd=inner,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    # the bundled journal is the run's journal, redacted: same events
    lines = gzip.decompress((inner / "journal.jsonl.gz").read_bytes()).decode().splitlines()
    assert len(lines) == len((run / "journal.jsonl").read_text().splitlines())
    # outputs.sha256 lists what the worker recorded for each output image
    for line in (inner / "outputs.sha256").read_text().splitlines():
        digest, name = line.split("  ")
        if (run / name).exists():
            import hashlib
            assert hashlib.sha256((run / name).read_bytes()).hexdigest() == digest


def test_large_outputs_stay_far_under_the_cap(tmp_path):
    run = make_run(tmp_path / "a", Synth(images=8, outputs=8, output_size=(1600, 1600), noisy_outputs=True))
    outputs = sum(p.stat().st_size for p in (run / "outputs").iterdir())
    assert outputs > 15_000_000           # incompressible pixels: the originals are big
    res = write_reports(run, tmp_path / "out")
    size = res["bundle"].stat().st_size
    assert size < BUNDLE_CAP_BYTES and size < 2_000_000
    assert not any("over" in w for w in res["warnings"])


def test_cap_drops_thumbnails_then_thins_the_journal(tmp_path):
    run = make_run(tmp_path / "a", Synth(images=24, outputs=24, seconds_per_image=30, output_size=(512, 512),
                                         noisy_outputs=True))
    full = write_reports(run, tmp_path / "full", include_thumbnails=True)
    inner = _extract(full["bundle"], tmp_path / "xf")
    thumbs = sum(p.stat().st_size for p in (inner / "thumbnails").iterdir())
    journal_gz = (inner / "journal.jsonl.gz").stat().st_size
    size = full["bundle"].stat().st_size
    # a cap that dropping the thumbnails alone cannot meet
    cap = size - thumbs - journal_gz // 2
    res = write_reports(run, tmp_path / "capped", bundle_cap_bytes=cap, include_thumbnails=True)
    assert res["bundle"].stat().st_size <= cap
    warnings = " | ".join(res["warnings"])
    assert "thumbnails left out" in warnings and "keeps 1 sampler tick in" in warnings
    small = _extract(res["bundle"], tmp_path / "xc")
    assert not (small / "thumbnails").exists()
    assert "thumbnails left out" in (small / "README.txt").read_text()
    # the thinned journal still reads as a run: same verdict and images, fewer samples, carried keys intact
    rd = RunDir(tmp_path / "thinned" / run.name)
    rd.root.mkdir(parents=True)
    rd.journal.write_bytes(gzip.decompress((small / "journal.jsonl.gz").read_bytes()))
    before, after = build_report(run).report, build_report(rd.root).report
    assert after["verdict"]["verdict"] == before["verdict"]["verdict"]
    assert len(after["images"]) == len(before["images"])
    assert after["completeness"]["event_counts"]["nvml"] < before["completeness"]["event_counts"]["nvml"] / 1.9
    m = {x["key"]: x for x in after["monitors"]["metrics"] if x["src"] == "nvml"}
    assert m["mem_total"]["n"] == after["completeness"]["event_counts"]["nvml"]
    assert m["procs[Xorg].mem"]["n"] == after["completeness"]["event_counts"]["nvml"]


def test_thin_journal_carries_change_only_keys():
    lines = [json.dumps({"ev": "nvml", "t": i, "gpu": 0, "mu": i, **({"prc": i} if i in (1, 5) else {})})
             for i in range(8)] + [json.dumps({"ev": "image", "t": 9, "index": 0})]
    out = thin_journal("\n".join(lines).encode(), 4).decode().splitlines()
    evs = [json.loads(x) for x in out]
    assert evs[0]["ev"] == "bundle_note"
    kept = [e for e in evs if e["ev"] == "nvml"]
    assert [e["mu"] for e in kept] == [0, 4]
    assert kept[1]["prc"] == 1 and "prc" not in kept[0]       # the change at tick 1 reaches tick 4
    assert evs[-1]["ev"] == "image"


@pytest.fixture()
def fake_bug_report(tmp_path, monkeypatch):
    """A stand-in nvidia-bug-report.sh on PATH: real process, real gzip output (this machine has no driver)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "nvidia-bug-report.sh"

    def install(body: str) -> Path:
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(0o755)
        return script

    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return install


def test_nvidia_bug_report_is_captured_redacted_and_attached(tmp_path, fake_bug_report):
    fake_bug_report(f"""
[ "$1" = "--safe-mode" ] || exit 9
[ "$2" = "--output-file" ] || exit 9
printf 'nvidia-bug-report.sh Version: 1\\nHostname: {HOST}\\nGPU UUID: {UUID}\\nSerial: {SERIAL}0\\n' | gzip > "$3.gz"
""")
    run = make_run(tmp_path / "a", Synth(images=3))
    res = write_reports(run, tmp_path / "out", nvidia_bug_report=True)
    standalone = tmp_path / "out" / "nvidia-bug-report.log.gz"
    text = gzip.decompress(standalone.read_bytes()).decode()
    assert "nvidia-bug-report.sh Version" in text
    assert HOST not in text and UUID not in text and SERIAL not in text
    inner = _extract(res["bundle"], tmp_path / "x")
    assert (inner / "nvidia-bug-report.log.gz").read_bytes() == standalone.read_bytes()
    assert "Attached: `nvidia-bug-report.log.gz`" in res["ticket_md"].read_text()
    report = json.loads(res["report_json"].read_text())
    assert any(a["name"] == "nvidia-bug-report.log.gz" and a["included"] for a in report["attachments"])


def test_nvidia_bug_report_timeout_kills_it(tmp_path, fake_bug_report):
    pidfile = tmp_path / "child.pid"
    fake_bug_report(f"sleep 60 &\necho $! > {pidfile}\nwait\n")
    t0 = time.monotonic()
    path, why = capture_nvidia_bug_report(tmp_path / "nbr", timeout=1.5)
    assert path is None and "did not finish within 2 s" in why
    assert time.monotonic() - t0 < 15
    child = int(pidfile.read_text())
    for _ in range(50):       # the whole process group was killed, the background sleep included
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the script's child process survived the timeout")


def test_nvidia_bug_report_missing_or_failing(tmp_path, fake_bug_report, monkeypatch):
    fake_bug_report("echo 'nvidia-bug-report.sh: must be run as root' >&2\nexit 1\n")
    path, why = capture_nvidia_bug_report(tmp_path / "nbr", timeout=20)
    assert path is None and "exited with status 1" in why and "must be run as root" in why
    monkeypatch.setenv("PATH", "/nonexistent")
    path, why = capture_nvidia_bug_report(tmp_path / "nbr2", timeout=20)
    assert path is None and "not found" in why


def test_gzip_segments_are_one_member_every_reader_takes(tmp_path):
    """Segments at different levels (stored for what is compressed already) make one ordinary gzip
    member: Python's gzip, tarfile in random-access and streaming mode, and the system's gzip and tar."""
    import io
    import random

    from stress.report.gzsegments import STORED, GzipSegments

    rnd = random.Random(7)
    noise = bytes(rnd.getrandbits(8) for _ in range(300_000))
    text = b"".join(b'{"ev":"nvml","t":%d,"u":%d}\n' % (i, i % 97) for i in range(20_000))
    raw = io.BytesIO()
    with GzipSegments(raw, mtime=1234) as gz:
        gz.write(text[:1000])
        gz.level(STORED)
        gz.write(noise)
        gz.level(6)
        gz.write(text)
        assert gz.tell() == 1000 + len(noise) + len(text)
    blob = raw.getvalue()
    assert gzip.decompress(blob) == text[:1000] + noise + text
    assert len(blob) < len(noise) + len(text) // 5          # the text was deflated, the noise stored
    assert len(blob) > len(noise)

    # A real bundle, whose journal copy (gzip data) is stored.
    run = make_run(tmp_path / "a", Synth(images=4))
    bundle = write_reports(run, tmp_path / "out")["bundle"]
    with tarfile.open(bundle, mode="r:gz") as tar:
        names = tar.getnames()
    with tarfile.open(bundle, mode="r|gz") as tar:           # streaming: one pass, no seeking back
        streamed = [m.name for m in tar]
    assert streamed == names and f"{run.name}/journal.jsonl.gz" in names
    for tool in (["gzip", "-t", str(bundle)], ["tar", "-tzf", str(bundle)]):
        if shutil.which(tool[0]):
            done = subprocess.run(tool, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
