"""Display-path telemetry: PCIe AER counters, BAR sizes / Resizable BAR, DRM connectors (a sysfs tree
laid out as the kernel does; this machine has no GPU) through the NVML stand-in's GPU sampler, and
the graphics/compute process lists with real processes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stress.hw import nvml, pci

try:
    import fake_nvml
except ImportError:  # tests/ imported as a package
    from tests import fake_nvml


def session_with(tmp_path: Path, monkeypatch, **kw) -> tuple[fake_nvml.FakeNvml, nvml.NvmlSession, Path]:
    root = Path(fake_nvml.make_sysfs(tmp_path / "sys", **kw))
    fake = fake_nvml.FakeNvml(sysfs_root=str(root))
    monkeypatch.setattr(nvml, "_load_pynvml", lambda: fake)
    return fake, nvml.NvmlSession.open(), root


def test_sysfs_readers(tmp_path: Path) -> None:
    root = Path(fake_nvml.make_sysfs(tmp_path, aer=(7, 2, 1)))
    assert pci.sysfs_bdf("00000000:01:00.0") == "0000:01:00.0" == pci.sysfs_bdf("0000:01:00")
    assert pci.aer_counters("0000:01:00.0", root) == {"correctable": 7, "nonfatal": 2, "fatal": 1}
    assert pci.bar_sizes("0000:01:00.0", root) == [16 << 20, 256 << 20, 0, 32 << 20, 0, 128]
    cons = pci.drm_connectors("0000:01:00.0", root)
    assert [(c["name"], c["status"]) for c in cons] == [("DP-1", "connected"), ("DP-2", "disconnected"),
                                                        ("HDMI-A-1", "connected")]
    assert pci.connected_count(cons) == 2
    for fn in (pci.aer_counters, pci.bar_sizes, pci.drm_connectors):
        assert fn("0000:02:00.0", root) is None          # another device: nothing there, no error


def test_aer_and_connectors_are_sampled_and_change_only(tmp_path: Path, monkeypatch) -> None:
    fake, s, root = session_with(tmp_path, monkeypatch, aer=(0, 0, 0))
    g = nvml.GpuSampler(s, 0, slow_every=1)
    first = g.sample(0)
    assert first["aer"] == [0, 0, 0] and first["dcon"] == [2, 2]
    assert "aer" not in g.sample(1) and "dcon" not in g.sample(1)      # unchanged: not written again
    fake_nvml.make_sysfs(root, aer=(3, 1, 0), connectors={"DP-1": "connected", "DP-2": "disconnected",
                                                          "HDMI-A-1": "disconnected"})
    third = g.sample(2)
    assert third["aer"] == [3, 1, 0] and third["dcon"] == [1, 1]       # a link error; a display went away
    assert "pcie_aer" not in g.unsupported and "drm_connectors" not in g.unsupported
    s.close()


def test_static_bar_sizes_and_resizable_bar(tmp_path: Path, monkeypatch) -> None:
    fake, s, _ = session_with(tmp_path, monkeypatch)
    st = s.static_info(0)
    assert st["pci_bar_sizes"][1] == 256 << 20 and st["bar1_total"] == 256 * fake_nvml.MiB
    assert st["rebar_active"] is False                                  # 256 MiB BAR1 on a 24 GiB GPU
    s.close()
    big = fake_nvml.default_script(0)
    big["nvmlDeviceGetBAR1MemoryInfo"] = fake_nvml.BAR1Memory(32 * fake_nvml.GiB, 31 * fake_nvml.GiB,
                                                              1 * fake_nvml.GiB)
    fake2 = fake_nvml.FakeNvml([big])
    monkeypatch.setattr(nvml, "_load_pynvml", lambda: fake2)
    s2 = nvml.NvmlSession.open()
    st2 = s2.static_info(0)
    assert st2["rebar_active"] is True and st2["pci_bar_sizes"] is None   # no sysfs tree: unknown, not 0
    s2.close()


def test_clock_event_reason_names() -> None:
    assert nvml.clock_event_reasons(0) == []
    assert nvml.clock_event_reasons(0x44) == ["SW power cap", "HW thermal slowdown"]
    assert nvml.clock_event_reasons(0x1000 | 0x8) == ["HW slowdown", "0x1000"]
    assert nvml.clock_event_reasons(None) is None


def test_graphics_and_compute_processes_with_their_memory(tmp_path: Path, monkeypatch) -> None:
    fake, s, _ = session_with(tmp_path, monkeypatch)
    compositor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fake.set(0, "nvmlDeviceGetGraphicsRunningProcesses",
                 [fake_nvml.ProcessInfo(compositor.pid, 410 * fake_nvml.MiB), fake_nvml.ProcessInfo(1, None)])
        fake.set(0, "nvmlDeviceGetComputeRunningProcesses", [fake_nvml.ProcessInfo(worker.pid, 9 * fake_nvml.GiB)])
        rec = nvml.GpuSampler(s, 0).sample(0)
        gp = {p[0]: p for p in rec["gp"]}
        assert gp[compositor.pid][2] == 410 * fake_nvml.MiB and gp[compositor.pid][1].startswith("python")
        assert gp[1][2] is None                       # the driver could not say: null, not 0
        assert rec["cp"] == [[worker.pid, rec["cp"][0][1], 9 * fake_nvml.GiB]]
    finally:
        for p in (compositor, worker):
            p.kill()
            p.wait()
        s.close()
