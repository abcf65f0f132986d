"""The sampler loop and Monitors end to end: scripted NVML (no GPU here), real psutil, a real kernel-log
pipe, a real journal on disk."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stress import samplers
from stress.hw import kernel_log, nvml
from stress.hw.config import MonitorsConfig
from stress.journal import Journal, read_journal
from stress.samplers import Monitors, RateLimiter, TickLoop

try:
    import fake_nvml
except ImportError:  # tests/ imported as a package
    from tests import fake_nvml

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """Time that moves only when the loop waits or a tick 'works'."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_loop(interval: float, work: dict[int, float], ticks: int) -> tuple[TickLoop, list[tuple[int, float]]]:
    clock = FakeClock()
    seen: list[tuple[int, float]] = []
    loop: TickLoop

    def fn(i: int) -> None:
        seen.append((i, clock.now))
        clock.now += work.get(len(seen) - 1, 0.3 * interval)   # every tick does some work

    def wait(dt: float) -> bool:
        clock.now += dt
        return len(seen) >= ticks

    loop = TickLoop(interval, fn, clock=clock, wait=wait)
    loop.run()
    return loop, seen


def test_tick_times_do_not_drift() -> None:
    loop, seen = run_loop(0.5, {}, 50)
    start = seen[0][1]
    # Each tick starts exactly on its deadline although each one worked 0.15 s: sleep(interval)
    # after the work would be 0.15 s x 49 = 7.35 s late by the last tick.
    assert [round(t - start, 9) for _, t in seen] == [round(k * 0.5, 9) for k in range(50)]
    assert [i for i, _ in seen] == list(range(50))
    assert loop.skipped == 0 and loop.ticks == 50


def test_slow_tick_skips_ahead_and_counts() -> None:
    # Tick 3 takes 3.5 intervals: deadlines 4 and 5 are skipped, tick 6 runs late by half an interval,
    # then the schedule is back on its grid.
    loop, seen = run_loop(1.0, {3: 3.5}, 8)
    start = seen[0][1]
    assert [(i, t - start) for i, t in seen] == [(0, 0), (1, 1), (2, 2), (3, 3), (6, 6.5), (7, 7), (8, 8), (9, 9)]
    assert loop.skipped == 2 and loop.ticks == 8
    assert loop.max_late_s == pytest.approx(0.5)


def test_late_by_less_than_one_interval_skips_nothing() -> None:
    loop, seen = run_loop(1.0, {2: 1.8}, 6)
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4, 5] and loop.skipped == 0


def test_real_time_loop_keeps_its_schedule() -> None:
    starts: list[float] = []

    def fn(i: int) -> None:
        starts.append(time.monotonic())
        t = time.perf_counter()
        while time.perf_counter() - t < 0.01:      # 10 ms of real work per tick
            pass

    loop = TickLoop(0.05, fn)
    loop.start()
    time.sleep(1.0)
    loop.request_stop()
    assert loop.join(1.0)
    first = loop.started_at
    # On a schedule: tick k starts near first + k*interval (no accumulated 10 ms per tick).
    offsets = [(s - first) - k * 0.05 for k, s in enumerate(starts)]
    assert len(starts) >= 15
    assert max(offsets[-5:]) < 0.05 + loop.skipped * 0.05
    assert loop.cpu_s > 0


def test_rate_limiter_counts_what_it_turns_away() -> None:
    clock = FakeClock()
    rl = RateLimiter(rate=2, burst=3, clock=clock)
    assert [rl.allow() for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    clock.now += 1.0                                  # two tokens back
    assert rl.allow() == (True, 2)                    # reports the two it dropped
    assert rl.allow() == (True, 0)
    assert rl.allow() == (False, 0)
    assert rl.take_pending() == 1 and rl.suppressed == 3


# ---- Monitors ----
KMSG = [
    "3,100,5000000,-;NVRM: GPU at PCI:0000:01:00: GPU-0b11d014-1685-04bd-26ed-5fc0bc1c44a0",
    "3,101,5000100,-;NVRM: Xid (PCI:0000:01:00): 119, pid=2211, name=gnome-shell, Timeout after 6s of waiting "
    "for RPC response from GPU0 GSP! Expected function 76 (GSP_RM_CONTROL).",
    "6,102,5000200,-;usb 1-1: USB disconnect, device number 2",
    "4,103,5000300,-;nvidia-modeset: ERROR: GPU:0: Idling display engine timed out: 0x0000c67e:0:0:1128",
]


@pytest.fixture
def kmsg_file(tmp_path: Path) -> Path:
    p = tmp_path / "kmsg.txt"
    p.write_text("\n".join(KMSG) + "\n")
    return p


def pipe_source(monkeypatch: pytest.MonkeyPatch, path: Path, fmt: str = "kmsg") -> None:
    """The kernel log comes from a real subprocess pipe (cat, then stays open like journalctl -f)."""
    src = kernel_log.KernelLogSource("test-pipe", fmt, argv=["sh", "-c", f"cat '{path}'; exec sleep 60"])
    attempt = kernel_log.Attempt("test-pipe", True)
    monkeypatch.setattr(samplers.kernel_log, "probe", lambda preferred="auto": (src, [attempt]))


def wait_for(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def events(path: Path) -> list[dict]:
    return read_journal(path).events


def test_monitors_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kmsg_file: Path) -> None:
    fake = fake_nvml.FakeNvml()
    monkeypatch.setattr(nvml, "_load_pynvml", lambda: fake)
    pipe_source(monkeypatch, kmsg_file)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    fake.set(0, "nvmlDeviceGetComputeRunningProcesses", [fake_nvml.ProcessInfo(worker.pid, 3 * fake_nvml.GiB)])
    jpath = tmp_path / "journal.jsonl"
    journal = Journal(jpath)
    try:
        mon = Monitors(MonitorsConfig(interval=0.05, slow_interval=0.2), journal, lambda: [worker.pid])
        mon.start()
        assert wait_for(lambda: sum(e["ev"] == "nvml" for e in events(jpath)) >= 8)
        fake.push_xid(0, 79)
        assert wait_for(lambda: any(e["ev"] == "xid" and e["source"] == "nvml-event" for e in events(jpath)))
        fake.lose(0)
        assert wait_for(lambda: any(e["ev"] == "source" and e.get("reason") == "gpu lost" and e["src"] == "nvml"
                                    for e in events(jpath)))
        time.sleep(0.2)                                 # host sampling goes on without the GPU
        t0 = time.monotonic()
        summary = mon.stop()
        assert time.monotonic() - t0 < 2.0
    finally:
        worker.kill()
        worker.wait()
        journal.close()
    evs = events(jpath)

    static = [e for e in evs if e["ev"] == "gpu_static"]
    assert len(static) == 1 and static[0]["driver"] == "550.54.14" and static[0]["cuda_driver"] == "12.4"
    assert static[0]["memory_total"] == 24 * fake_nvml.GiB and static[0]["bus_id"] == "00000000:01:00.0"

    src = [e for e in evs if e["ev"] == "source"]
    by = {(e["src"], e["status"]) for e in src}
    assert {("nvml", "available"), ("nvml-events", "available"), ("host", "available"),
            ("kernel-log", "available"), ("nvml", "unsupported-fields"), ("nvml", "unavailable"),
            ("nvml-events", "unavailable")} <= by
    unsup = [e for e in src if e["status"] == "unsupported-fields"]
    assert len(unsup) == 1 and set(unsup[0]["fields"]) == {"remapped_rows", "retired_pages", "pcie_aer",
                                                           "drm_connectors"}

    samples = [e for e in evs if e["ev"] == "nvml"]
    assert all(e["gpu"] == 0 for e in samples)
    (pid, name, mem), = samples[0]["cp"]
    assert pid == worker.pid and name.startswith("python") and mem == 3 * fake_nvml.GiB
    assert all("cp" not in e for e in samples[1:])                  # unchanged: not repeated
    lost_at = next(i for i, e in enumerate(evs) if e["ev"] == "source" and e["src"] == "nvml"
                   and e.get("reason") == "gpu lost")
    assert not any(e["ev"] == "nvml" for e in evs[lost_at:])     # sampling of the lost GPU stopped
    hosts = [e for e in evs if e["ev"] == "host"]
    assert any(e["t"] > evs[lost_at]["t"] for e in hosts)         # ... the rest did not
    assert hosts[0]["wk"][0]["p"] == worker.pid and hosts[0]["wk"][0]["n"] == 1

    xids = [e for e in evs if e["ev"] == "xid"]
    from_kernel = [e for e in xids if e["source"] == "kernel-log"]
    from_nvml = [e for e in xids if e["source"] == "nvml-event"]
    assert [(e["gpu"], e["xid"], e["category"]) for e in from_nvml] == [(0, 79, "fallen-off-bus")]
    assert [(e["gpu"], e["xid"], e["category"], e["description"], e["pid"], e["name"]) for e in from_kernel] == \
        [(0, 119, "gsp", "GSP RPC Timeout", 2211, "gnome-shell")]        # gpu found from the bus id
    assert from_kernel[0]["raw"] == KMSG[1]
    kmsgs = [e["line"] for e in evs if e["ev"] == "kmsg"]
    assert kmsgs == [KMSG[0], KMSG[1], KMSG[3]]                        # the usb line is not kept
    # lines of the classification table carry its id; the Xid line is the Xid table's
    assert [e.get("cls") for e in evs if e["ev"] == "kmsg"] == [None, None, "nvkms-idle-timeout"]

    assert summary["ticks"] >= 8 and summary["gpus"] == [0] and summary["gpus_lost"] == [0]
    assert summary["xid"] == 2 and summary["kmsg"] == 3 and summary["kernel_log_via"] == "test-pipe"
    assert summary["threads_stopped"] and summary["overhead_cpu_s"] > 0
    assert summary["events"]["nvml"] == len(samples)
    assert summary["sources"] == {"nvml": "unavailable", "nvml-events": "unavailable", "host": "available",
                                  "kernel-log": "available"}


def test_nothing_available_is_recorded_once_and_the_run_goes_on(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "_load_pynvml",
                        lambda: fake_nvml.FakeNvml(init_error=fake_nvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    denied = kernel_log.Attempt("kmsg", False, "permission denied on /dev/kmsg (kernel.dmesg_restrict=1, "
                                               "CAP_SYSLOG missing)", "sudo sysctl kernel.dmesg_restrict=0")
    monkeypatch.setattr(samplers.kernel_log, "probe", lambda preferred="auto": (None, [denied]))
    jpath = tmp_path / "j.jsonl"
    with Journal(jpath) as journal, Monitors(MonitorsConfig(interval=0.05), journal) as mon:
        time.sleep(0.3)
    summary = mon.stop()          # a second stop returns the same summary
    evs = events(jpath)
    src = {e["src"]: e for e in evs if e["ev"] == "source"}
    assert src["nvml"]["status"] == "unavailable" and "libnvidia-ml.so.1" in src["nvml"]["reason"]
    assert src["nvml-events"]["status"] == "unavailable"
    assert src["kernel-log"]["status"] == "unavailable" and "dmesg_restrict=1" in src["kernel-log"]["reason"]
    assert src["kernel-log"]["tried"][0]["fix"].startswith("sudo sysctl")
    assert sum(e["ev"] == "source" for e in evs) == 4                  # once each, not per tick
    assert sum(e["ev"] == "host" for e in evs) >= 3
    assert summary["sources"] == {"nvml": "unavailable", "nvml-events": "unavailable", "host": "available",
                                  "kernel-log": "unavailable"}


def test_disabled_monitors_write_nothing(tmp_path: Path) -> None:
    jpath = tmp_path / "j.jsonl"
    with Journal(jpath) as journal:
        with Monitors(MonitorsConfig(enabled=False), journal) as mon:
            time.sleep(0.05)
    assert not jpath.read_text() and mon.stop()["ticks"] == 0


def test_kernel_log_flood_is_rate_limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flood = tmp_path / "flood.txt"
    line = "4,{n},{n}000,-;nvidia-modeset: ERROR: GPU:0: Idling display engine timed out: 0x0000c67e:0:0:1128"
    flood.write_text("\n".join(line.format(n=n) for n in range(3000)) + "\n")
    pipe_source(monkeypatch, flood)
    jpath = tmp_path / "j.jsonl"
    cfg = MonitorsConfig(interval=0.5, nvml=False, host=False, kmsg_rate=5)
    with Journal(jpath, fsync=False) as journal:
        mon = Monitors(cfg, journal)
        mon.start()
        assert wait_for(lambda: mon._follower.stats.matched == 3000, 10)
        summary = mon.stop()
    kmsg = [e for e in events(jpath) if e["ev"] == "kmsg"]
    recorded = [e for e in kmsg if not e["line"].startswith("[stress]")]
    assert 200 <= len(recorded) < 260                                   # the burst, plus 5/s
    assert len(recorded) + sum(e.get("suppressed", 0) for e in kmsg) == 3000   # every drop is counted
    assert kmsg[-1]["line"].startswith("[stress]") and summary["kmsg_suppressed"] == 3000 - len(recorded)


def test_journal_stays_compact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes per tick at steady state: what docs/monitors.md's growth figure is made of."""
    fake = fake_nvml.FakeNvml()
    monkeypatch.setattr(nvml, "_load_pynvml", lambda: fake)
    monkeypatch.setattr(samplers.kernel_log, "probe", lambda preferred="auto": (None, []))
    jpath = tmp_path / "j.jsonl"
    with Journal(jpath, fsync=False) as journal:
        with Monitors(MonitorsConfig(interval=0.05), journal, lambda: [os.getpid()]):
            assert wait_for(lambda: sum(1 for _ in open(jpath)) > 40)
    lines = jpath.read_text().splitlines()
    steady = [ln for ln in lines[len(lines) // 2:] if json.loads(ln)["ev"] in ("nvml", "host")]
    per_event = sum(len(ln) + 1 for ln in steady) / len(steady)
    assert per_event < 300, per_event


def test_supervisor_modules_never_import_torch() -> None:
    code = ("import sys; import stress.samplers, stress.hw.nvml, stress.hw.host, stress.hw.kernel_log, "
            "stress.hw.xid, stress.commands.doctor; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
            "sys.exit(f'imported: {bad}' if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_stop_is_quick_even_mid_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kmsg_file: Path) -> None:
    monkeypatch.setattr(nvml, "_load_pynvml", lambda: fake_nvml.FakeNvml())
    pipe_source(monkeypatch, kmsg_file)
    with Journal(tmp_path / "j.jsonl", fsync=False) as journal:
        mon = Monitors(MonitorsConfig(interval=5.0), journal)
        mon.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        summary = mon.stop()
        took = time.monotonic() - t0
    assert took < 2.0 and summary["threads_stopped"]
    assert threading.active_count() < 50
    assert not [t for t in threading.enumerate() if t.name.startswith("stress-")]


def test_a_failing_tick_does_not_end_the_loop() -> None:
    clock = FakeClock()
    seen: list[int] = []

    def fn(i: int) -> None:
        seen.append(i)
        if i == 2:
            raise KeyError("bug")

    loop = TickLoop(1.0, fn, clock=clock, wait=lambda dt: (setattr(clock, "now", clock.now + dt), len(seen) >= 5)[1])
    loop.run()
    assert seen == [0, 1, 2, 3, 4] and loop.errors == 1 and loop.last_error == "KeyError: 'bug'"
