"""The facts of NVIDIA's functional-bug template: filled from a /proc and /sys tree laid out as the
driver does (no NVIDIA driver here), with stand-ins for nvidia-smi and systemctl on PATH, and each
missing value named with the command that gets it."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from stress.environment import (
    SUSPEND_SERVICES,
    collect,
    missing_facts,
    nvidia_template_facts,
)

PARAMS = """ResmanDebugLevel: 4294967295
RmLogonRC: 1
ModifyDeviceFiles: 1
EnableMSI: 1
PreserveVideoMemoryAllocations: 1
EnableS0ixPowerManagement: 0
TemporaryFilePath: "/var/tmp"
EnableGpuFirmware: 18
EnableResizableBar: 0
RegistryDwords: ""
"""


def tree(tmp_path: Path) -> tuple[Path, Path]:
    proc, sysr = tmp_path / "proc", tmp_path / "sys"
    (proc / "driver" / "nvidia").mkdir(parents=True)
    (proc / "cmdline").write_text("BOOT_IMAGE=/vmlinuz-6.19.14 root=UUID=x ro nvidia-drm.modeset=1 nvidia-drm.fbdev=1\n")
    (proc / "driver" / "nvidia" / "params").write_text(PARAMS)
    drm = sysr / "module" / "nvidia_drm" / "parameters"
    drm.mkdir(parents=True)
    (drm / "modeset").write_text("Y\n")
    (drm / "fbdev").write_text("Y\n")
    nv = sysr / "module" / "nvidia" / "parameters"
    nv.mkdir(parents=True)
    (nv / "NVreg_PreserveVideoMemoryAllocations").write_text("1\n")
    (nv / "NVreg_EnableGpuFirmware").write_text("18\n")
    return proc, sysr


def tools(tmp_path: Path, monkeypatch) -> None:
    """nvidia-smi and systemctl as an NVIDIA machine with the suspend services would answer."""
    b = tmp_path / "bin"
    b.mkdir()
    (b / "nvidia-smi").write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 2\n"
                                  "echo 'GPU 0: NVIDIA GeForce RTX 4070 (UUID: GPU-fe73de91-af7e-a140-980d-2da2c9ab3861)'\n")
    (b / "systemctl").write_text("#!/bin/sh\ncase \"$1 $2\" in\n"
                                 "  'is-enabled nvidia-suspend.service'|'is-enabled nvidia-resume.service') echo enabled ;;\n"
                                 "  'is-active nvidia-persistenced.service') echo active ;;\n"
                                 "  is-enabled*) echo 'Failed to get unit file state for '\"$2\"': No such file or directory' >&2; exit 1 ;;\n"
                                 "  is-active*) echo inactive; exit 3 ;;\n"
                                 "esac\n")
    (b / "xrandr").write_text("#!/bin/sh\necho 'Screen 0: minimum 8 x 8, current 2560 x 1440'\n"
                              "echo 'DP-0 connected primary 2560x1440+0+0 (normal) 597mm x 336mm'\n"
                              "echo '   2560x1440     59.95 +  143.97*'\n")
    for f in b.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{b}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DISPLAY", ":99")


def test_every_value_filled_on_a_configured_machine(tmp_path: Path, monkeypatch) -> None:
    proc, sysr = tree(tmp_path)
    tools(tmp_path, monkeypatch)
    f = nvidia_template_facts(proc, sysr)
    assert "nvidia-drm.modeset=1" in f["kernel_cmdline"]["value"]
    assert f["nvidia_params"]["value"]["EnableResizableBar"] == "0"
    assert f["nvidia_params"]["value"]["TemporaryFilePath"] == "/var/tmp"
    assert f["preserve_video_memory_allocations"] == {"value": "1"}
    assert f["nvidia_drm_modeset"] == {"value": "Y"} and f["nvidia_drm_fbdev"] == {"value": "Y"}
    assert f["module_parameters"]["nvidia"]["value"] == {"NVreg_EnableGpuFirmware": "18",
                                                         "NVreg_PreserveVideoMemoryAllocations": "1"}
    s = f["suspend_services"]
    assert s["nvidia-suspend.service"]["value"] == {"enabled": "enabled", "active": "inactive"}
    assert s["nvidia-persistenced.service"]["value"] == {"enabled": None, "active": "active"}
    assert f["nvidia_smi_L"]["value"] == ["GPU 0: NVIDIA GeForce RTX 4070 (UUID: GPU-fe73de91-af7e-a140-980d-2da2c9ab3861)"]
    assert f["displays"]["value"] == [{"name": "DP-0", "width": 2560, "height": 1440, "refresh_hz": 143.97}]
    # only the modules that are not loaded in this tree are missing
    assert {m["fact"] for m in missing_facts(f)} == {"module_parameters.nvidia_modeset", "module_parameters.nvidia_uvm"}


def test_without_the_driver_each_missing_value_names_its_command(tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))             # no nvidia-smi, no systemctl
    f = nvidia_template_facts(empty, empty)
    missing = {m["fact"]: m for m in missing_facts(f)}
    assert missing["nvidia_smi_L"] == {"fact": "nvidia_smi_L", "why": "nvidia-smi not installed", "command": "nvidia-smi -L"}
    assert missing["nvidia_params"]["command"] == "cat /proc/driver/nvidia/params"
    assert "not loaded" in missing["nvidia_params"]["why"]
    assert missing["nvidia_drm_modeset"]["command"] == "cat /sys/module/nvidia_drm/parameters/modeset"
    assert missing["kernel_cmdline"]["command"] == "cat /proc/cmdline"
    for svc in SUSPEND_SERVICES:
        assert missing[f"suspend_services.{svc}"] == {"fact": f"suspend_services.{svc}", "why": "systemctl not installed",
                                                      "command": f"systemctl status {svc}"}
    assert all(m["why"] and m["command"] for m in missing.values())


def test_the_run_environment_carries_them() -> None:
    env = collect()
    f = env["nvidia_template"]
    assert set(f) >= {"kernel_cmdline", "nvidia_params", "preserve_video_memory_allocations", "module_parameters",
                      "nvidia_drm_modeset", "nvidia_drm_fbdev", "suspend_services", "nvidia_smi_L"}
    assert f["kernel_cmdline"]["value"] == Path("/proc/cmdline").read_text().strip()


XRANDR_TWO_MONITORS = """Screen 0: minimum 8 x 8, current 4480 x 1440, maximum 32767 x 32767
DP-0 connected primary 2560x1440+0+0 (normal left inverted right x axis y axis) 597mm x 336mm
   2560x1440     59.95 +  143.97*
   1920x1080     60.00    59.94
HDMI-0 connected 1920x1080+2560+0 (normal left inverted right x axis y axis) 527mm x 296mm
   1920x1080     60.00*+  50.00
DP-1 disconnected (normal left inverted right x axis y axis)
"""


def test_displays_and_refresh_rates_from_xrandr() -> None:
    from stress.environment import parse_xrandr

    assert parse_xrandr(XRANDR_TWO_MONITORS) == [
        {"name": "DP-0", "width": 2560, "height": 1440, "refresh_hz": 143.97},
        {"name": "HDMI-0", "width": 1920, "height": 1080, "refresh_hz": 60.0}]


def test_displays_of_a_real_x_server(monkeypatch) -> None:
    """On a real Xvfb: its one output and size, and no refresh rate (Xvfb reports 0.00)."""
    import shutil

    import pytest

    from stress.environment import nvidia_template_facts
    from tests.xvfb import xvfb

    if not shutil.which("xrandr"):
        pytest.skip("xrandr is not installed (x11-xserver-utils)")
    with xvfb(800, 600) as server:
        monkeypatch.setenv("DISPLAY", server.display)
        d = nvidia_template_facts()["displays"]["value"]
    assert d == [{"name": "screen", "width": 800, "height": 600, "refresh_hz": None}]
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("SWAYSOCK", raising=False)
    missing = nvidia_template_facts()["displays"]
    assert missing["value"] is None and "xrandr --query" in missing["command"]
