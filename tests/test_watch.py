"""`gpu-stress watch` against a real running `gpu-stress run` (subprocesses, the real tiny pipeline):
the run ending, and its supervisor being SIGKILLed."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stress.journal import read_journal
from stress.record import Follower
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SCENARIO = """
name: watched
model: {{base: builtin:tiny-sdxl, refiner: null}}
steps: {steps}
images: {images}
resolutions: [{size}x{size}]
seeds: 1234
prompt: "a lighthouse"
probes: {{enabled: false}}
monitors: {{interval: 0.2}}
session: {{image_timeout: 300s}}
"""


def _env(model_cache) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), STRESS_CACHE=str(model_cache))


def _start_run(tmp_path: Path, model_cache, images: int, steps: int, size: int = 64) -> tuple[subprocess.Popen, Path]:
    scen = tmp_path / "watched.yaml"
    scen.write_text(SCENARIO.format(images=images, steps=steps, size=size))
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "stress", "run", str(scen), "--out", str(tmp_path / "artifacts"),
                             "--no-report"], cwd=ROOT, env=_env(model_cache), stdout=log, stderr=log)
    deadline = time.time() + 60
    while time.time() < deadline:
        found = list((tmp_path / "artifacts").glob("*/journal.jsonl"))
        if found:
            return proc, found[0].parent
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise AssertionError("the run wrote no journal within 60 s")


def _start_watch(tmp_path: Path, model_cache, *args: str) -> subprocess.Popen:
    out = open(tmp_path / "watch.out", "w")
    return subprocess.Popen([sys.executable, "-m", "stress", "watch", *args, "--every", "0.3"], cwd=ROOT,
                            env=_env(model_cache), stdout=out, stderr=subprocess.STDOUT)


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout}s")


def test_watch_follows_a_run_to_its_end(tmp_path, model_cache):
    run, rd = _start_run(tmp_path, model_cache, images=3, steps=4)
    watch = _start_watch(tmp_path, model_cache, "--latest", "--artifacts", str(tmp_path / "artifacts"))
    try:
        # 11: inconclusive, since probes are off; the run itself finished
        assert run.wait(timeout=400) == 11, (tmp_path / "run.log").read_text()
        assert watch.wait(timeout=30) == 0
    finally:
        for p in (run, watch):
            if p.poll() is None:
                p.kill()
                p.wait()
    out = (tmp_path / "watch.out").read_text()
    assert f"watching {rd}" in out
    for i in range(3):
        assert f"image {i} 64x64 ok" in out, out
    assert "worker 0 ready on cpu" in out and "phase workload start" in out
    assert "run ended: finished, 3 ok, 0 failed" in out
    assert out.rstrip().splitlines()[-1].startswith("3/3 images"), out       # the final status line
    assert "Traceback" not in out
    events = read_journal(rd / "journal.jsonl").events
    ready = next(e for e in events if e["ev"] == "worker_ready")
    assert ready["omp_wait_policy"] == "PASSIVE" and ready["cpu_threads"] >= 1
    assert "cores in this process's affinity" in ready["cpu_threads_reason"]
    # steps reach the terminal, not the journal: `progress` events at most every 5 s
    wall = events[-1]["t"] - events[0]["t"]
    assert sum(e["ev"] == "progress" for e in events) <= wall / 5 + 2


def test_watch_exits_when_the_supervisor_is_sigkilled(tmp_path, model_cache):
    # 256x256: images of seconds even on an idle machine, so that a journalled step (every 5 s) is
    # still the image in flight when the watcher reads it
    run, rd = _start_run(tmp_path, model_cache, images=20, steps=30, size=256)
    watch = _start_watch(tmp_path, model_cache, str(rd))
    try:
        def stepping() -> bool:   # a journalled `progress` event with a step: the watcher can show it
            return any(e["ev"] == "progress" and e.get("step") for e in read_journal(rd / "journal.jsonl").events)
        _wait(stepping, 300, "no progress event with a step")
        _wait(lambda: " step " in (tmp_path / "watch.out").read_text(), 60, "watch showed no step")
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert watch.wait(timeout=30) == 12
    finally:
        for p in (run, watch):
            if p.poll() is None:
                p.kill()
                p.wait()
    out = (tmp_path / "watch.out").read_text()
    assert f"supervisor (pid {run.pid}) is gone and the journal has no run_end" in out, out
    assert f"gpu-stress run --resume {rd}" in out
    status = [ln for ln in out.splitlines() if re.match(r"\d+/20 images  image \d+ base step \d+/30  ", ln)]
    assert any("  load " in ln for ln in status), out
    assert "Traceback" not in out


def test_follower_keeps_a_line_being_written_for_the_next_poll(tmp_path):
    j = tmp_path / "journal.jsonl"
    first = json.dumps({"ev": "run_start", "t": 1.0, "pid": 42, "run_id": "r"})
    second = json.dumps({"ev": "image_start", "t": 2.0, "index": 0, "seed": 1, "width": 64, "height": 64})
    j.write_text(first + "\n" + second[:20])
    f = Follower(j)
    assert [e["ev"] for e in f.poll()] == ["run_start"]
    assert f.poll() == []
    with open(j, "a") as fh:
        fh.write(second[20:] + "\nnot json\n")
    assert [e["ev"] for e in f.poll()] == ["image_start"]
    assert f.bad_lines == 1 and f.record.in_flight == [0] and f.record.last_run_start["pid"] == 42


@pytest.mark.parametrize("args, line", [
    ([], "error: give either RUN_DIR or --latest"),
    (["/nonexistent-run-dir"], "error: /nonexistent-run-dir: no such run directory"),
    (["--latest", "--artifacts", "/nonexistent-artifacts"], "no run directory there"),
])
def test_watch_bad_input_is_one_line_and_exit_2(args, line):
    from tests.conftest import run_cli

    res = run_cli("watch", *args, timeout=60)
    assert res.returncode == 2 and line in res.stderr and "Traceback" not in res.stderr, res.stderr
