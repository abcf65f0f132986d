"""`stress doctor`, run as a user runs it: a real subprocess, on this machine as it is."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from stress.commands.doctor import screenshot_backend

try:
    from conftest import ROOT, run_cli
except ImportError:  # tests/ imported as a package
    from tests.conftest import ROOT, run_cli

TESTS = Path(__file__).resolve().parent


def test_doctor_json_on_this_machine(tmp_path: Path) -> None:
    # -X importtime lists every module the doctor process imports: torch must not be among them.
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("STRESS_NVML_MODULE", None)
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "stress", "doctor", "--json",
                        "--artifacts", str(tmp_path / "artifacts")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    report = json.loads(r.stdout)
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "diffusers" not in imported
    checks = {c["key"]: c for c in report["checks"]}
    assert set(checks) >= {"python", "torch", "worker-deps", "nvml", "xid-events", "kernel-log", "display",
                           "screenshot", "disk", "artifacts"}
    assert r.returncode == report["exit_code"] == (0 if report["ok"] else 3)
    # Every check that is not fine says why, and every missing essential or source says how to fix it.
    for c in checks.values():
        assert c["status"] in ("ok", "warn", "missing", "fail") and c["summary"]
        if c["status"] == "fail":
            assert c["essential"] and c["fix"]
    assert checks["torch"]["status"] in ("ok", "warn")                 # torch is importable here
    assert checks["torch"]["details"]["torch"]
    assert checks["artifacts"]["status"] == "ok" and (tmp_path / "artifacts").is_dir()
    assert list((tmp_path / "artifacts").iterdir()) == []              # the write test leaves nothing
    from stress.hw.nvml import gpu_inventory

    inv = gpu_inventory()
    assert (checks["nvml"]["status"] == "ok") == inv["available"]
    if not inv["available"]:                   # this machine: no driver. The reason and the fix are given.
        assert inv["reason"] in checks["nvml"]["summary"] and checks["nvml"]["fix"]
        assert report["records"]["nvml"] is False
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        assert checks["display"]["status"] == "missing" and "inconclusive" in checks["display"]["summary"]
        assert checks["screenshot"]["status"] == "missing" and report["records"]["screenshots"] is None
    if checks["kernel-log"]["status"] == "missing":
        assert checks["kernel-log"]["fix"]
    else:
        assert report["records"]["kernel_log"] in ("journalctl", "kmsg", "dmesg")


def test_doctor_with_a_scripted_gpu_and_an_unwritable_artifacts_folder(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "artifacts"
    not_a_dir.write_text("a file where the folder should be")
    r = run_cli("doctor", "--quick", "--artifacts", str(not_a_dir),
                env={"STRESS_NVML_MODULE": "fake_nvml", "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"}, timeout=300)
    assert r.returncode == 3, r.stdout + r.stderr
    out = r.stdout
    assert "Essentials missing: Artifacts folder writable" in out
    assert "driver 550.54.14, CUDA driver 12.4" in out and "NVIDIA GeForce RTX 4090" in out
    assert "critical Xid events supported on every GPU" in out
    assert "Traceback" not in r.stderr
    assert "skipped torch / CUDA" in " ".join(out.split())


def test_screenshot_backend_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    grim = tmp_path / "grim"
    grim.write_text("#!/bin/sh\nexit 0\n")
    grim.chmod(grim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert screenshot_backend({"type": "wayland", "compositor": "sway"})["backend"] == "grim"
    assert screenshot_backend({"type": "x11", "display": None})["backend"] == "mss"
    assert screenshot_backend({"type": "none"})["backend"] is None
    monkeypatch.setenv("PATH", "/nonexistent")
    b = screenshot_backend({"type": "wayland", "compositor": "sway"})
    assert b["backend"] == "xdg-desktop-portal" and "apt-get install grim" in b["fix"]
    gnome = screenshot_backend({"type": "wayland", "compositor": "gnome-shell"})
    assert gnome["backend"] == "xdg-desktop-portal" and not gnome["ok"] and "gdbus" in gnome["reason"]
