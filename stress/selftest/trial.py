"""One selftest trial: a real ``gpu-stress run`` of the selftest scenario against a display selftest
started, with one fault injected during its chosen probe phase (or none, for the clean control).

The run is a subprocess (``python -m stress run``) with the kernel-log and NVML stand-ins in its
environment. Its journal is followed through ``stress.record.Follower`` (the one fold): the
injection starts at the ``phase`` event that opens the fault's phase and stops at the one that closes
it. The verdict is the run's own (its ``verdict`` event): selftest judges nothing itself.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import stress
from stress.errors import StressError
from stress.selftest.display import start_display
from stress.selftest.faults import CLEAN, FAULTS
from stress.selftest.inject import Injector, Target
from stress.selftest.load import BackgroundLoad
from stress.selftest.results import detection_time, trial_result

RUN_TIMEOUT_S = 300.0
POLL_S = 0.1
# Probes per kind and phase. With 5 (the fewest that can reach p < 0.01 at all, see
# stress.analysis.needed_repetitions) the one-sided Mann-Whitney test allows one overlap of 25 pairs:
# a single baseline probe slowed by the host (a loaded machine) hides any slowdown. 8 is the fewest
# equal sample size that tolerates one such probe on either side (9 overlaps of 64 at p < 0.01; 6 and
# 7 tolerate 3 and 6, under one probe's n): chosen from the test's exact distribution, not from trials
# (docs/selftest.md; measured in docs/validation.md). tests/test_selftest.py checks the arithmetic.
REPETITIONS = 8

SCENARIO = """\
# gpu-stress selftest's scenario: the tiny SDXL model on the CPU, one small image, probes at baseline,
# after the workload and (when a chosen fault class is injected there) after its worker exited;
# {repetitions} repetitions: the fewest with which a slowdown stays significant at alpha=0.01 when one
# baseline probe was slower than every probe of the slowed phase. Written by `gpu-stress selftest`;
# faults are injected into this run from outside.
name: selftest
workload: sdxl
model:
  base: builtin:tiny-sdxl
  dtype: fp32
  device: cpu
sampler:
  name: dpmpp_2m_karras
steps: 2
cfg: 6.8
images: 1
resolutions: [64x64]
seeds: 1234
prompt:
  tokens: 20
  seed: 7
session:
  image_timeout: 2m
probes:
  phases: [{phases}]
  kinds: [{kinds}]
  repetitions: {repetitions}
  timeout: 4
  display_wait: 2
monitors:
  interval: 0.5
"""


def scenario_text(phases: tuple[str, ...], repetitions: int = REPETITIONS,
                  kinds: tuple[str, ...] = ("screenshot", "decode", "display")) -> str:
    """The scenario every trial runs (its probe phases; ``repetitions`` probes per kind and phase; the
    probe ``kinds`` the display takes: ``display-wayland`` instead of ``display`` on sway)."""
    return (SCENARIO.replace("{phases}", ", ".join(phases)).replace("{repetitions}", str(repetitions))
            .replace("{kinds}", ", ".join(kinds)))


def _env(display_env: dict[str, str], folder: Path, cache: Path | None) -> dict[str, str]:
    env = dict(display_env)
    root = str(Path(stress.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["STRESS_KERNEL_LOG_COMMAND"] = f"exec tail -n +1 -F {folder / 'kernel.log'}"
    env["STRESS_KERNEL_LOG_FORMAT"] = "dmesg"
    env["STRESS_NVML_MODULE"] = "stress.selftest.fake_nvml"
    env["STRESS_SELFTEST_NVML_CONTROL"] = str(folder / "nvml-control")
    if cache is not None:
        env["STRESS_CACHE"] = str(cache)
    return env


def _run_dir(runs: Path) -> Path | None:
    found = [d for d in runs.iterdir() if (d / "journal.jsonl").is_file()] if runs.is_dir() else []
    return found[0] if found else None


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)        # the run stops cleanly and keeps its record
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_trial(fault_name: str, index: int, folder: Path, *, cache: Path | None = None,
              phase: str | None = None, timeout: float = RUN_TIMEOUT_S, stop=None,
              phases: tuple[str, ...] = ("baseline", "after", "after-exit"), display_kind: str = "xvfb") -> dict:
    """Run one trial in ``folder`` (created) and return its result (stress.selftest.results.trial_result).
    ``stop`` (a threading.Event): when set, the run is stopped (SIGTERM: it keeps its record) and the
    trial returns at once. ``phases``: the probe phases of the scenario (every trial of one selftest,
    clean ones included, uses the same). ``display_kind``: ``xvfb`` or ``sway`` (stress.selftest.display)."""
    from stress.record import Follower

    folder.mkdir(parents=True, exist_ok=True)
    scenario = folder / "selftest.yaml"
    (folder / "kernel.log").write_text("", encoding="utf-8")
    (folder / "nvml-control").write_text("ok\n", encoding="utf-8")
    fault = FAULTS.get(fault_name)
    phase = phase or (fault.phase if fault else None)
    t0 = time.time()
    display = None
    load = None
    injector = None
    follower = None
    t_inject: float | None = None
    error = None
    proc = None
    try:
        display = start_display(display_kind)
        scenario.write_text(scenario_text(phases, kinds=display.probe_kinds), encoding="utf-8")
        target = Target(display, None, folder / "kernel.log", folder / "nvml-control")
        injector = Injector(fault, target) if fault else None
        if injector:
            injector.arm()
        if fault_name == CLEAN:
            load = BackgroundLoad(folder, display.env(), display.clients).start()
        runs = folder / "runs"
        argv = [sys.executable, "-m", "stress", "run", str(scenario), "--out", str(runs), "--no-report",
                "--no-history", "--quiet"]
        with open(folder / "run.log", "wb") as log:
            proc = subprocess.Popen(argv, env=_env(display.env(), folder, cache), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            done = proc.poll() is not None
            if follower is None:
                rd = _run_dir(runs)
                if rd is not None:
                    follower = Follower(rd / "journal.jsonl")
                    target.run_dir = rd
            for ev in follower.poll() if follower else []:
                if injector and ev.get("ev") == "phase" and ev.get("phase") == phase:
                    if ev.get("state") == "start" and not injector.started:
                        t_inject = time.time()
                        injector.start()
                    elif ev.get("state") == "end":
                        injector.stop()
            if done:
                break
            if stop is not None and stop.is_set():
                error = "interrupted"
                _end(proc)
                break
            if time.monotonic() > deadline:
                error = f"the run did not end within {timeout:g} s; stopped"
                _end(proc)
                break
            time.sleep(POLL_S)
        if follower is not None:
            follower.poll()
    except Exception as exc:  # noqa: BLE001 - a trial that could not run is a result (error), not a crash
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, StressError) else str(exc)
    finally:
        if injector:
            injector.stop()
        if proc is not None:
            _end(proc)
        if load:
            load.stop()
        if display is not None:
            display.close()
    events = follower.record.judged_events() if follower is not None else []
    verdict = follower.record.verdict if follower is not None else None
    return trial_result(
        fault_name, index, phase=phase, verdict=verdict, t_inject=t_inject,
        detect_s=detection_time(events or [], t_inject) if t_inject is not None else None,
        run_dir=str(follower.path.parent) if follower else None, wall_s=time.time() - t0,
        error=error or (None if verdict else "the run recorded no verdict (see run.log)"),
        note=injector.note if injector else "", returncode=proc.returncode if proc else None)

