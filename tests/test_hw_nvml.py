"""The NVML layer against the scripted stand-in of pynvml (tests/fake_nvml.py): this machine has no GPU.

The real pynvml path is exercised by `stress doctor` and a run on a machine with an NVIDIA driver
(docs/monitors.md, "Checking on real hardware").
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from stress.hw import nvml, nvml_events

try:
    import fake_nvml
except ImportError:  # tests/ imported as a package
    from tests import fake_nvml


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> fake_nvml.FakeNvml:
    f = fake_nvml.FakeNvml()
    monkeypatch.setattr(nvml, "_load_pynvml", lambda: f)
    return f


def use(monkeypatch: pytest.MonkeyPatch, f: fake_nvml.FakeNvml) -> fake_nvml.FakeNvml:
    monkeypatch.setattr(nvml, "_load_pynvml", lambda: f)
    return f


def test_real_path_is_the_default() -> None:
    # Without the override, the real nvidia-ml-py module is what gets loaded.
    import pynvml

    assert nvml._load_pynvml() is pynvml


def test_inventory_with_a_gpu(fake: fake_nvml.FakeNvml) -> None:
    inv = nvml.gpu_inventory()
    assert inv["available"] is True and inv["reason"] is None
    assert inv["driver"] == "550.54.14" and inv["cuda_driver"] == "12.4"
    g = inv["gpus"][0]
    assert g["index"] == 0 and g["name"] == "NVIDIA GeForce RTX 4090"
    assert g["uuid"].startswith("GPU-") and g["bus_id"] == "00000000:01:00.0"
    assert g["memory_total"] == 24 * fake_nvml.GiB
    assert g["serial"] is None          # NOT_SUPPORTED on GeForce: a value, not an exception
    assert g["xid_events"] is True
    assert fake.initialized == 0        # inventory shuts NVML down again


@pytest.mark.parametrize("code,words", [
    (fake_nvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1"),
    (fake_nvml.NVML_ERROR_DRIVER_NOT_LOADED, "kernel driver is not loaded"),
    (fake_nvml.NVML_ERROR_NO_PERMISSION, "permission"),
    (fake_nvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "versions differ"),
])
def test_inventory_without_driver_never_raises(monkeypatch: pytest.MonkeyPatch, code: int, words: str) -> None:
    use(monkeypatch, fake_nvml.FakeNvml(init_error=code))
    inv = nvml.gpu_inventory()
    assert inv["available"] is False and words in inv["reason"] and inv["gpus"] == []


def test_inventory_without_pynvml_or_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing():
        raise ImportError("No module named 'pynvml'")
    monkeypatch.setattr(nvml, "_load_pynvml", missing)
    assert "not importable" in nvml.gpu_inventory()["reason"]
    use(monkeypatch, fake_nvml.FakeNvml(gpus=[]))
    assert nvml.gpu_inventory()["reason"] == "no NVIDIA GPU found"


def test_sample_is_compact_and_change_only_keys_are_dropped(fake: fake_nvml.FakeNvml) -> None:
    s = nvml.NvmlSession.open()
    g = nvml.GpuSampler(s, 0, slow_every=1000)
    first = g.sample(0)
    assert first["gpu"] == 0
    for k in ("mu", "mf", "mr", "mt", "b1u", "b1t", "ug", "um", "cg", "cm", "thr", "tc", "pw", "ps", "pg", "pwd",
              "pl", "prc", "da", "dm", "gp", "cp"):
        assert k in first, k
    assert first["pw"] == 350.0 and first["pl"] == 450.0      # mW -> W
    second = g.sample(1)
    assert "mu" in second and "tc" in second                  # per-tick values always
    assert not set(second) & {"mr", "mt", "b1t", "pg", "pwd", "da", "dm", "gp", "cp"}   # unchanged: dropped
    assert "pl" not in second and "prc" not in second          # slow fields: not this tick
    assert second["mu"] > first["mu"]
    s.close()


def test_change_only_key_reappears_when_it_changes(fake: fake_nvml.FakeNvml) -> None:
    fake.set(0, "nvmlDeviceGetCurrPcieLinkGeneration", fake_nvml.Seq([4, 4, 1, 1]))
    s = nvml.NvmlSession.open()
    g = nvml.GpuSampler(s, 0)
    got = [g.sample(t).get("pg") for t in range(4)]
    assert got == [4, None, 1, None]


def test_unsupported_fields_reported_once_and_not_asked_again(fake: fake_nvml.FakeNvml) -> None:
    s = nvml.NvmlSession.open()
    g = nvml.GpuSampler(s, 0, slow_every=1)
    g.sample(0)
    new = g.take_new_unsupported()
    assert {k: new[k] for k in ("remapped_rows", "retired_pages")} == {"remapped_rows": "not supported",
                                                                      "retired_pages": "not supported"}
    # the stand-in brings no sysfs tree by default: the PCI/DRM fields say why they are missing
    assert set(new) == {"remapped_rows", "retired_pages", "pcie_aer", "drm_connectors"}
    assert new["pcie_aer"].startswith("no PCIe AER counters in sysfs for 0000:01:00.0")
    for t in range(1, 10):
        rec = g.sample(t)
        assert "rr" not in rec and "rp" not in rec and "tc" in rec
    assert g.take_new_unsupported() == {}
    assert fake.calls[("nvmlDeviceGetRemappedRows", 0)] == 1


def test_one_failing_field_does_not_stop_the_others(fake: fake_nvml.FakeNvml) -> None:
    fake.set(0, "nvmlDeviceGetTemperature", fake_nvml.NVMLError_Unknown)
    fake.set(0, "nvmlDeviceGetPowerUsage", fake_nvml.NVMLError_NoPermission)
    s = nvml.NvmlSession.open()
    g = nvml.GpuSampler(s, 0)
    for t in range(6):
        rec = g.sample(t)
        assert "tc" not in rec and "pw" not in rec and "mu" in rec and "cg" in rec
    new = g.take_new_unsupported()
    assert new["power"] == "no permission"
    assert new["temperature"].startswith("failing: Unknown Error (5 times")
    assert fake.calls[("nvmlDeviceGetTemperature", 0)] == 5   # given up on after five failures


def test_transient_failure_recovers(fake: fake_nvml.FakeNvml) -> None:
    timeout = fake_nvml.NVMLError_Timeout
    fake.set(0, "nvmlDeviceGetTemperature", fake_nvml.Seq([timeout, timeout, 71]))
    s = nvml.NvmlSession.open()
    g = nvml.GpuSampler(s, 0)
    assert [g.sample(t).get("tc") for t in range(4)] == [None, None, 71, 71]
    assert "temperature" not in g.unsupported


def test_fallbacks_for_older_drivers(fake: fake_nvml.FakeNvml) -> None:
    fake.set(0, "memory_v2", fake_nvml.NVMLError_FunctionNotFound)
    fake.set(0, "nvmlDeviceGetCurrentClocksEventReasons", fake_nvml.NVMLError_FunctionNotFound)
    fake.set(0, "nvmlDeviceGetCurrentClocksThrottleReasons", 0x20)
    s = nvml.NvmlSession.open()
    g = nvml.GpuSampler(s, 0)
    rec = g.sample(0)
    assert rec["mu"] > 0 and rec["mt"] == 24 * fake_nvml.GiB and "mr" not in rec   # v1: no "reserved"
    assert rec["thr"] == 0x20
    assert "memory" not in g.unsupported and "clock_event_reasons" not in g.unsupported


def test_slow_fields_are_read_every_n_ticks(fake: fake_nvml.FakeNvml) -> None:
    s = nvml.NvmlSession.open()
    g = nvml.GpuSampler(s, 0, slow_every=4)
    for t in range(12):
        g.sample(t)
    assert fake.calls[("nvmlDeviceGetPcieReplayCounter", 0)] == 3        # ticks 0, 4, 8
    assert fake.calls[("nvmlDeviceGetTemperature", 0)] == 12


def test_gpu_lost_mid_run_stops_sampling_without_raising(fake: fake_nvml.FakeNvml) -> None:
    s = nvml.NvmlSession.open()
    g = nvml.GpuSampler(s, 0)
    assert g.sample(0) is not None
    fake.lose(0)
    assert g.sample(1) is None and g.lost == "gpu lost"
    calls = sum(fake.calls.values())
    assert g.sample(2) is None
    assert sum(fake.calls.values()) == calls          # no further NVML calls on a lost GPU


def test_gpu_processes_are_named_through_psutil(fake: fake_nvml.FakeNvml) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fake.set(0, "nvmlDeviceGetGraphicsRunningProcesses",
                 [fake_nvml.ProcessInfo(child.pid, 512 * fake_nvml.MiB), fake_nvml.ProcessInfo(999999, None)])
        s = nvml.NvmlSession.open()
        rec = nvml.GpuSampler(s, 0).sample(0)
        names = {pid: (name, mem) for pid, name, mem in rec["gp"]}
        assert names[child.pid][0].startswith("python") and names[child.pid][1] == 512 * fake_nvml.MiB
        assert names[999999] == ("?", None)
    finally:
        child.kill()
        child.wait()


def test_xid_events_delivered_and_gpu_loss_reported(fake: fake_nvml.FakeNvml) -> None:
    s = nvml.NvmlSession.open()
    got, status = [], []
    done = threading.Event()

    def on_status(st: str, reason: str, **kw: object) -> None:
        status.append((st, reason))
        done.set()

    w = nvml_events.XidEventWatcher(s, lambda gpu, x, raw: got.append((gpu, x, raw)), on_status, wait_ms=100)
    assert w.register() and w.registered == [0]
    w.start()
    fake.push_xid(0, 79)
    fake.push_xid(0, 119)
    deadline = time.monotonic() + 3
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(g, x) for g, x, _ in got] == [(0, 79), (0, 119)]
    assert "eventData=79" in got[0][2]
    fake.lose(0)
    assert done.wait(3) and status == [("unavailable", "gpu lost")]
    assert w.stop(2.0)
    assert fake.event_sets[0].freed


def test_xid_watcher_stops_promptly(fake: fake_nvml.FakeNvml) -> None:
    s = nvml.NvmlSession.open()
    w = nvml_events.XidEventWatcher(s, lambda *a: None, lambda *a, **k: None, wait_ms=500)
    assert w.register()
    w.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    assert w.stop(2.0)
    assert time.monotonic() - t0 < 1.0


def test_xid_events_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    script = fake_nvml.default_script(0)
    script["nvmlDeviceGetSupportedEventTypes"] = fake_nvml.nvmlEventTypePState
    use(monkeypatch, fake_nvml.FakeNvml([script]))
    s = nvml.NvmlSession.open()
    w = nvml_events.XidEventWatcher(s, lambda *a: None, lambda *a, **k: None)
    assert w.register() is False
    assert w.not_registered == {0: "Xid events not supported by this GPU/driver"}


def test_session_limited_to_some_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, fake_nvml.FakeNvml([fake_nvml.default_script(i) for i in range(3)]))
    s = nvml.NvmlSession.open([2, 7])
    assert list(s.handles) == [2]
    s.close()
    with pytest.raises(nvml.NvmlUnavailable, match="none of the GPUs"):
        nvml.NvmlSession.open([5])


_REAL = None


def _real_inventory() -> dict:
    global _REAL
    if _REAL is None:
        _REAL = nvml.gpu_inventory()   # the real pynvml: no monkeypatching here
    return _REAL


def test_real_nvml_when_a_driver_is_present() -> None:
    """Runs only where an NVIDIA driver is loaded; on this project's CI machine (no GPU) it says why."""
    inv = _real_inventory()
    if not inv["available"]:
        pytest.skip(f"real NVML not available here: {inv['reason']}")
    assert inv["driver"] and inv["gpus"] and inv["gpus"][0]["memory_total"] > 0
    s = nvml.NvmlSession.open()
    try:
        g = nvml.GpuSampler(s, 0)
        first, second = g.sample(0), g.sample(1)
        assert first is not None and second is not None, g.lost
        assert first["mt"] == inv["gpus"][0]["memory_total"] and first["mu"] >= 0 and "mf" in second
        assert all(isinstance(v, str) for v in g.take_new_unsupported().values())
        w = nvml_events.XidEventWatcher(s, lambda *a: None, lambda *a, **k: None, wait_ms=200)
        if w.register():
            w.start()
            time.sleep(0.3)
            assert w.stop(2.0)
    finally:
        s.close()
