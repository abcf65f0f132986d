"""Records that survive a hard freeze: the kernel log of the boot a run died in, and pstore entries.

A run records the kernel's boot id (``/proc/sys/kernel/random/boot_id``) in an ``evidence_boot``
journal event when it starts or resumes. After a reboot, ``gpu-stress report RUN_DIR`` and
``gpu-stress run --resume RUN_DIR`` call :func:`collect`: when the boot id now differs from the last
one the run recorded, the machine rebooted since, so it saves into ``<run>/evidence/previous-boot/``

- ``kernel.log``: ``journalctl -k -b <recorded boot id> --no-pager -o short-precise`` (that exact boot;
  ``-b -1`` when the journal does not know the id), needing a persistent journal
  (``/var/log/journal``); the NVIDIA / DRM / GPU lines of it also in ``kernel-gpu.log``;
- ``pstore/``: the files in ``/sys/fs/pstore`` (kernel oops/panic records the firmware kept over the
  reboot: dmesg-efi-*, dmesg-ramoops-*), copied without following links, each cut at 16 MiB;
- ``manifest.json``: what was found, and for what was not, why and the command that would get it.

Done once per reboot (the manifest names the boot it was collected for). Every path and command is a
parameter, so tests run it on their own files.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from stress.hw.kernel_log import FILTER

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PSTORE = Path("/sys/fs/pstore")
_MAX_FILE = 16 << 20
_TIMEOUT = 60.0


def current_boot_id(path: Path = BOOT_ID) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def last_recorded_boot(journal_path: Path) -> str | None:
    """The boot id of the last ``evidence_boot`` event of a journal (a run may span several boots)."""
    from stress.record import fold

    try:
        ev = fold(journal_path).evidence_boot
    except OSError:
        return None
    return str(ev["boot_id"]) if ev and ev.get("boot_id") else None


def _journal(argv: list[str]) -> tuple[str | None, str | None]:
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=_TIMEOUT)
    except FileNotFoundError:
        return None, f"{argv[0]} not installed"
    except subprocess.TimeoutExpired:
        return None, f"no answer within {_TIMEOUT:.0f} s"
    except OSError as exc:
        return None, f"could not start: {exc.strerror or exc}"
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not out.strip() or out.strip().startswith("-- No entries --"):
        return None, (err.splitlines()[0] if err else ("no entries" if proc.returncode == 0
                                                         else f"exit {proc.returncode}"))[:300]
    return out, None


def _copy_pstore(src: Path, dest: Path) -> dict:
    if not src.is_dir():
        return {"ok": False, "reason": f"{src} does not exist (pstore not mounted or not supported)",
                "fix": "mount -t pstore pstore /sys/fs/pstore (systemd does this on most distributions)"}
    try:
        entries = sorted(src.iterdir())
    except OSError as exc:
        return {"ok": False, "reason": f"{src}: {exc.strerror}", "fix": "read it as root"}
    files = []
    for p in entries:
        try:
            st = p.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):       # never follow a link out of pstore
            continue
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with open(p, "rb") as fh:
                data = fh.read(_MAX_FILE + 1)
        except OSError as exc:
            files.append({"name": p.name, "ok": False, "reason": exc.strerror})
            continue
        (dest / p.name).write_bytes(data[:_MAX_FILE])
        files.append({"name": p.name, "ok": True, "bytes": min(len(data), _MAX_FILE),
                      "cut": len(data) > _MAX_FILE or None})
    if not files:
        return {"ok": False, "reason": f"{src} is empty (no oops or panic was kept over the reboot)"}
    return {"ok": any(f["ok"] for f in files), "dir": "pstore", "files": files}


def collect(run_dir: Path, *, boot_id_path: Path = BOOT_ID, pstore: Path = PSTORE,
            journalctl: str = "journalctl", force: bool = False) -> dict | None:
    """Collect the previous boot's records into ``run_dir/evidence/previous-boot``; None when the
    machine has not rebooted since the run last recorded its boot (nothing to collect)."""
    run_dir = Path(run_dir)
    then = last_recorded_boot(run_dir / "journal.jsonl")
    now = current_boot_id(boot_id_path)
    if not force and (then is None or now is None or then == now):
        return None
    dest = run_dir / "evidence" / "previous-boot"
    manifest_path = dest / "manifest.json"
    if manifest_path.is_file() and not force:
        try:
            old = json.loads(manifest_path.read_text())
            if old.get("boot_id") == then:
                return old
        except ValueError:
            pass
    dest.mkdir(parents=True, exist_ok=True)
    items: dict[str, Any] = {}
    tried = []
    text = None
    for sel in ([then.replace("-", "")] if then else []) + ["-1"]:
        argv = [journalctl, "-k", "-b", sel, "--no-pager", "-o", "short-precise"]
        text, why = _journal(argv)
        tried.append({"command": " ".join(argv), "reason": why})
        if text is not None:
            break
    if text is not None:
        (dest / "kernel.log").write_text(text, encoding="utf-8")
        gpu = [ln for ln in text.splitlines() if FILTER.search(ln)]
        (dest / "kernel-gpu.log").write_text("\n".join(gpu) + ("\n" if gpu else ""), encoding="utf-8")
        items["kernel_log"] = {"ok": True, "file": "kernel.log", "command": tried[-1]["command"],
                               "lines": text.count("\n"), "gpu_lines": len(gpu), "gpu_file": "kernel-gpu.log"}
    else:
        items["kernel_log"] = {"ok": False, "reason": "; ".join(f"{t['command']}: {t['reason']}" for t in tried),
                               "fix": "keep the journal over reboots: sudo mkdir -p /var/log/journal && "
                                      "sudo systemctl restart systemd-journald (then it is there next time)"}
    items["pstore"] = _copy_pstore(pstore, dest / "pstore")
    manifest = {"boot_id": then, "current_boot_id": now, "collected_t": round(time.time(), 3),
                "dir": "evidence/previous-boot", "items": items}
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, manifest_path)
    return manifest


def readiness(journal_dir: Path = Path("/var/log/journal"), pstore: Path = PSTORE) -> dict:
    """Will this machine keep what a freeze leaves? ``persistent_journal`` and ``pstore`` (each True or
    False) and a ``fix`` for what is missing (for ``gpu-stress doctor``)."""
    persistent = journal_dir.is_dir()
    mounted = pstore.is_dir() and _is_mount(pstore)
    fixes = []
    if not persistent:
        fixes.append("sudo mkdir -p /var/log/journal && sudo systemctl restart systemd-journald "
                     "(the kernel log of a boot that froze is kept for the next one)")
    if not mounted:
        fixes.append("sudo mount -t pstore pstore /sys/fs/pstore (oops/panic records kept over a reboot)")
    return {"persistent_journal": persistent, "pstore": mounted, "fix": " | ".join(fixes) or None}


def _is_mount(path: Path) -> bool:
    try:
        with open("/proc/self/mounts") as fh:
            return any(line.split()[1] == str(path) for line in fh if len(line.split()) > 1)
    except OSError:
        return os.path.ismount(path)


__all__ = ["readiness", "collect", "current_boot_id", "last_recorded_boot", "BOOT_ID", "PSTORE"]
