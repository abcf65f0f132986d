"""The supervised run, end to end, in real subprocesses on the real tiny diffusers pipeline.

Covers the run directory, locked seeds reproducing byte for byte, faults recorded as results
(crash, hang, OOM, exception), stop-on-failure, Ctrl-C, and resuming a run whose supervisor was
SIGKILLed halfway.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stress.journal import read_journal
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

BASE = """
name: {name}
model:
  base: builtin:tiny-sdxl
  refiner: {refiner}
steps: {steps}
cfg: 6.8
images: {images}
resolutions: [64x64, 64x96]
seeds: 1234
prompt:
  tokens: 200
negative_prompt: "blurry"
probes:
  enabled: false
monitors:
  interval: 0.2
session:
  image_timeout: {timeout}
{extra}
"""


def scenario(tmp_path: Path, name: str = "t", *, images: int = 2, steps: int = 4, refiner: str = "null",
             timeout: str = "120s", extra: str = "") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(BASE.format(name=name, images=images, steps=steps, refiner=refiner, timeout=timeout, extra=extra))
    return p


def run(tmp_path: Path, scen: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    res = run_cli("run", str(scen), "--out", str(tmp_path / "artifacts"), "--reports", str(tmp_path / "reports"),
                  *args, env=env)
    dirs = sorted((tmp_path / "artifacts").glob("*"), key=lambda p: p.stat().st_mtime)
    return res, (dirs[-1] if dirs else tmp_path / "none")


def load_run(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


@pytest.fixture
def cache_env(model_cache) -> dict:
    return {"STRESS_CACHE": str(model_cache)}


def test_run_directory_and_records(tmp_path, cache_env):
    # CPU outputs are byte-identical for the same thread count: pinned, since the worker otherwise
    # follows the machine's load (stress.workload.threads)
    cache_env = dict(cache_env, STRESS_CPU_THREADS="1")
    res, rd = run(tmp_path, scenario(tmp_path, refiner="builtin:tiny-sdxl-refiner"), env=cache_env)
    assert "Traceback" not in res.stderr, res.stderr
    for name in ("journal.jsonl", "run.json", "environment.json", "scenario.resolved.json"):
        assert (rd / name).is_file(), name
    data = load_run(rd)
    assert data["status"] == "finished" and data["outcomes"] == {"ok": 2} and not data["missing"]
    assert [(i["width"], i["height"]) for i in data["images"]] == [(64, 64), (64, 96)]
    for img in data["images"]:
        assert img["seed"] == 1234 and img["cfg"] == 6.8 and img["prompt_tokens"] == 200
        assert img["refiner_steps"] > 0 and img["steps"] > 0
        assert img["scheduler"]["use_karras_sigmas"] is True
        assert set(img["timings"]) >= {"text_encode", "base", "refiner", "vae_decode", "save"}
        out = rd / img["path"]
        assert out.is_file() and out.suffix == ".jpg"
        import hashlib
        assert hashlib.sha256(out.read_bytes()).hexdigest() == img["sha256"]
    kinds = [e["ev"] for e in read_journal(rd / "journal.jsonl").events]
    for k in ("run_start", "environment", "plan", "worker_start", "worker_ready", "image_start", "stage",
              "alloc", "image", "worker_exit", "verdict", "run_end"):
        assert k in kinds, k
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    # the worker's own timeline made it into the journal: host samples from the supervisor's monitors
    assert "host" in kinds or "source" in kinds
    # the report is written at the end of the run
    assert (tmp_path / "reports" / rd.name / "report.json").is_file()

    # Locked seeds reproduce: the same scenario again gives byte-identical outputs, here even with a
    # fresh worker for every image and the models reloaded in between.
    again = scenario(tmp_path, name="again", refiner="builtin:tiny-sdxl-refiner")
    again.write_text(again.read_text().replace("image_timeout: 120s", "image_timeout: 120s\n  restart_worker_every: 1"))
    res2, rd2 = run(tmp_path, again, env=cache_env)
    data2 = load_run(rd2)
    assert [w["reason"] for w in data2["workers"]] == ["start", "restart-every"]
    assert [i["sha256"] for i in data2["images"]] == [i["sha256"] for i in data["images"]]


def test_faults_are_results_and_the_run_goes_on(tmp_path, cache_env):
    extra = """faults:
  - {image: 0, kind: oom}
  - {image: 1, kind: crash}
  - {image: 2, kind: hang}
  - {image: 3, kind: error}
"""
    res, rd = run(tmp_path, scenario(tmp_path, images=5, steps=2, timeout="25s", extra=extra), env=cache_env)
    assert res.returncode == 12, res.stderr   # WORKLOAD_ERROR
    data = load_run(rd)
    outcomes = [i["outcome"] for i in data["images"]]
    assert outcomes == ["oom", "crash", "timeout", "error", "ok"]
    crash = data["images"][1]
    assert "SIGSEGV" in crash["error"]
    assert "watchdog" in data["images"][2]["error"]
    # OOM and exception keep the worker; crash and hang replace it: 3 workers in all.
    assert [w["reason"] for w in data["workers"]] == ["start", "after-crash", "after-timeout"]
    assert [w.get("exit_reason") for w in data["workers"]] == ["crash", "killed-timeout", "requested"]
    assert data["verdict"]["verdict"] == "error"
    assert "Traceback" not in res.stdout


def test_stop_on_failure(tmp_path, cache_env):
    extra = "faults: [{image: 0, kind: error}]\n"
    scen = scenario(tmp_path, images=3, steps=2, extra=extra)
    scen.write_text(scen.read_text().replace("image_timeout: 120s", "image_timeout: 120s\n  on_failure: stop"))
    res, rd = run(tmp_path, scen, env=cache_env)
    data = load_run(rd)
    assert data["status"] == "stopped-on-failure" and len(data["images"]) == 1
    assert any("2 of 3 planned images have no record" in m for m in data["missing"])


def _wait_for_event(journal: Path, kind: str, count: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if journal.exists() and sum(1 for e in read_journal(journal).events if e["ev"] == kind) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {count} {kind} events within {timeout}s")


def _start(tmp_path: Path, scen: Path, env: dict) -> subprocess.Popen:
    full = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return subprocess.Popen([sys.executable, "-m", "stress", "run", str(scen), "--out", str(tmp_path / "artifacts"),
                             "--no-report"], cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_resume_after_the_supervisor_is_killed(tmp_path, cache_env):
    scen = scenario(tmp_path, images=4, steps=6)
    proc = _start(tmp_path, scen, cache_env)
    rd = None
    try:
        deadline = time.time() + 120
        while rd is None and time.time() < deadline:
            found = list((tmp_path / "artifacts").glob("*/journal.jsonl"))
            rd = found[0].parent if found else None
            time.sleep(0.1)
        assert rd is not None
        _wait_for_event(rd / "journal.jsonl", "image", 2, 180)
    finally:
        proc.send_signal(signal.SIGKILL)   # no cleanup: as a power loss would leave it
        proc.wait()
    # The orphaned worker is in its own session; PR_SET_PDEATHSIG kills it with the supervisor.
    before = {e["index"] for e in read_journal(rd / "journal.jsonl").events if e["ev"] == "image"}
    assert len(before) >= 2 and not (rd / "run.json").exists()
    res = run_cli("run", "--resume", str(rd), "--no-report", env=cache_env)
    assert "Traceback" not in res.stderr, res.stderr
    events = read_journal(rd / "journal.jsonl").events
    done = [e["index"] for e in events if e["ev"] == "image"]
    assert sorted(done) == [0, 1, 2, 3] and len(done) == 4     # nothing lost, nothing redone
    assert any(e["ev"] == "resume" for e in events)
    data = load_run(rd)
    assert data["status"] == "finished" and data["outcomes"] == {"ok": 4}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_cleanly_with_a_complete_record(tmp_path, cache_env, sig):
    scen = scenario(tmp_path, images=20, steps=6)
    proc = _start(tmp_path, scen, cache_env)
    try:
        deadline = time.time() + 120
        rd = None
        while rd is None and time.time() < deadline:
            found = list((tmp_path / "artifacts").glob("*/journal.jsonl"))
            rd = found[0].parent if found else None
            time.sleep(0.1)
        _wait_for_event(rd / "journal.jsonl", "image", 1, 180)
        proc.send_signal(sig)
        time.sleep(0.05)                 # while it is stopping (the worker, the monitors, the record)
        proc.send_signal(sig)            # impatient: a second signal must not lose the record
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    data = load_run(rd)
    assert data["status"] == "interrupted" and 1 <= len(data["images"]) < 20
    assert data["workers"][-1]["exit_reason"] == "interrupted"


def test_unloadable_checkpoint_is_one_line_and_exit_12(tmp_path, cache_env):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    scen = scenario(tmp_path, images=1)
    scen.write_text(scen.read_text().replace("base: builtin:tiny-sdxl", f"base: {bad}"))
    res, rd = run(tmp_path, scen, env=cache_env)
    assert res.returncode == 12 and "Traceback" not in res.stdout + res.stderr
    data = load_run(rd)
    assert data["status"] == "load-failed"
    assert "could not start" in data["verdict"]["reasons"][0]


def test_preflight_skips_images_predicted_not_to_fit(tmp_path, cache_env):
    scen = scenario(tmp_path, images=2, steps=2)
    scen.write_text(scen.read_text().replace("resolutions: [64x64, 64x96]", "resolutions: [64x64, 2048x2048]")
                    .replace("image_timeout: 120s", "image_timeout: 120s\n  on_predicted_oom: skip\n  gpu_memory: 1GiB"))
    res, rd = run(tmp_path, scen, "--no-report", env=cache_env)
    data = load_run(rd)
    assert [i["outcome"] for i in data["images"]] == ["ok", "skipped"]
    assert data["images"][1]["error"].startswith("predicted OOM: needs")
    pre = [e for e in read_journal(rd / "journal.jsonl").events if e["ev"] == "preflight"]
    assert pre[0]["status"] == "ok" and {(r["width"], r["fits"]) for r in pre[0]["resolutions"]} == {(64, True), (2048, False)}
    assert data["verdict"]["verdict"] != "error"          # a skip is a decision, not a failure


def test_models_reloaded_every_k_images(tmp_path, cache_env):
    scen = scenario(tmp_path, images=3, steps=2)
    scen.write_text(scen.read_text().replace("image_timeout: 120s", "image_timeout: 120s\n  reload_models_every: 1"))
    res, rd = run(tmp_path, scen, "--no-report", env=cache_env)
    events = read_journal(rd / "journal.jsonl").events
    reloads = [e for e in events if e["ev"] == "models_reloaded"]
    assert len(reloads) == 2 and all(e["ok"] for e in reloads)
    assert load_run(rd)["outcomes"] == {"ok": 3}


def test_resume_refuses_a_finished_run(tmp_path):
    rd = tmp_path / "artifacts" / "r1"
    rd.mkdir(parents=True)
    (rd / "scenario.resolved.json").write_text(json.dumps({"name": "x"}))
    (rd / "journal.jsonl").write_text('{"ev":"run_start","t":1,"pid":1}\n{"ev":"run_end","t":2,"status":"finished"}\n')
    res = run_cli("run", "--resume", str(rd))
    assert res.returncode == 2 and "already finished" in res.stderr and "Traceback" not in res.stderr
