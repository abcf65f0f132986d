"""Out of memory is recorded as ``oom`` (issue 19): a worker the kernel's OOM killer ends (a real memory
cgroup, its oom_kill counter and the kernel log's line for that pid) and a CPU allocation failure."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from stress.oom import OomWatch, allocator_failure, kernel_log_kill, last_own_line, oom_kill_evidence
from tests.memcg import in_cgroup_argv, memory_cgroup

HOG = "import sys; print('stress: allocating', flush=True); x = bytearray(400 * 1024 * 1024); print('survived')"


def test_a_process_killed_by_the_oom_killer_in_a_memory_cgroup_is_oom():
    with memory_cgroup(48 * 1024 * 1024) as procs:
        proc = subprocess.Popen(in_cgroup_argv(procs, [sys.executable, "-c", "import time; time.sleep(0.5); " + HOG]),
                                stdout=subprocess.PIPE, text=True)
        # the watch is taken as the runner takes it: right after the worker started, in its cgroup
        import time

        time.sleep(0.2)
        watch = OomWatch.start(proc.pid)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, out
        assert watch.counts, "the child's memory cgroup was not found"
        assert any("oom_kill 0 -> 1" in g for g in watch.grown()), watch.grown()
        evidence = oom_kill_evidence(proc.pid, proc.returncode, watch)
        assert evidence
        line = kernel_log_kill(proc.pid)
        if line is not None:        # /dev/kmsg readable (root): the kernel's own line is the evidence
            assert f"Killed process {proc.pid}" in line and evidence.startswith("kernel log: ")
        assert oom_kill_evidence(proc.pid, -signal.SIGSEGV, watch) is None     # a segfault is a crash
        assert "survived" not in out


def test_a_sigkill_without_an_oom_kill_is_not_oom():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    watch = OomWatch.start(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert oom_kill_evidence(proc.pid, proc.returncode, watch) is None


def test_the_oom_kill_line_is_found_among_journalled_kernel_lines():
    lines = ["[  12.0] usb 1-1: new device", "Memory cgroup out of memory: Killed process 4242 (python) total-vm:1kB"]
    assert kernel_log_kill(4242, lines, kmsg="/nonexistent").startswith("Memory cgroup out of memory")
    assert kernel_log_kill(424, lines, kmsg="/nonexistent") is None


def test_a_real_cpu_allocation_failure_is_recognised():
    code = ("import torch\ntry:\n    torch.empty(1 << 46, dtype=torch.uint8)\nexcept RuntimeError as e:\n"
            "    print(f'{type(e).__name__}: {e}')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "DefaultCPUAllocator" in proc.stdout or "allocate" in proc.stdout, proc.stdout
    assert allocator_failure(proc.stdout.strip())
    proc = subprocess.run([sys.executable, "-c", "try:\n    b'x' * (1 << 62)\nexcept MemoryError as e:\n"
                           "    print(f'{type(e).__name__}: {e}')"], capture_output=True, text=True, timeout=60)
    assert allocator_failure(proc.stdout.strip()), proc.stdout
    assert not allocator_failure("ValueError: steps must be positive")


def test_the_last_line_the_worker_wrote_is_not_a_library_warning():
    code = ("import sys, warnings\nprint('stress: image 3: base step 12', file=sys.stderr, flush=True)\n"
            "warnings.warn('`resume_download` is deprecated and will be removed', FutureWarning)\n"
            "print('  0%|          | 0/2 [00:00<?, ?it/s]', file=sys.stderr, end='\\r', flush=True)\n"
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and "FutureWarning" in proc.stderr
    assert last_own_line(proc.stderr) == "stress: image 3: base step 12"
    only_warning = proc.stderr.split("\n", 1)[1]
    assert last_own_line(only_warning) is None


OOM_SCENARIO = """
name: oom
model: {base: builtin:tiny-sdxl}
steps: 2
images: 3
resolutions: [512x512]
seeds: 3
prompt: {tokens: 20}
probes: {enabled: false}
monitors: {enabled: false}
session: {image_timeout: 300s}
"""


@pytest.mark.slow
def test_a_worker_oom_killed_in_its_memory_cgroup_is_recorded_as_oom(tmp_path, model_cache):
    """The real supervisor and worker: once the worker is ready the test moves it into a memory cgroup
    with 16 MB of room; the next image's allocations make the kernel's OOM killer end it. The image is
    ``oom`` (not ``crash (SIGKILL)``), a fresh worker (outside the cgroup) does the rest."""
    import json
    import os
    import time

    from tests.conftest import ROOT

    scen = tmp_path / "oom.yaml"
    scen.write_text(OOM_SCENARIO)
    with memory_cgroup(16 * 1024 * 1024) as procs:
        env = dict(os.environ, STRESS_CACHE=str(model_cache), PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "stress", "run", str(scen), "--out", str(tmp_path / "art"),
                                 "--reports", str(tmp_path / "rep")], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline, pid = time.monotonic() + 300, None
            while time.monotonic() < deadline and proc.poll() is None and pid is None:
                for j in (tmp_path / "art").glob("*/journal.jsonl"):
                    for line in j.read_text().splitlines():
                        if '"worker_ready"' in line:
                            pid = json.loads(line)["pid"]
                time.sleep(0.05)
            assert pid, proc.communicate(timeout=60)
            procs.write_text(str(pid))          # only the worker: the supervisor stays outside
            out, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert "Traceback" not in err, err[-3000:]
    [run] = list((tmp_path / "art").iterdir())
    data = json.loads((run / "run.json").read_text())
    outcomes = [i["outcome"] for i in data["images"]]
    assert outcomes[0] == "oom", (outcomes, [i.get("error") for i in data["images"]])
    error = data["images"][0]["error"]
    assert "OOM killer" in error and "SIGKILL" in error
    assert "Killed process" in error or "oom_kill" in error
    assert outcomes[1:] == ["ok", "ok"] and proc.returncode == 12
