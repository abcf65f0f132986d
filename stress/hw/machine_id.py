"""A stable, redactable identity for the machine: a salted hash of the systemd machine id.

``/etc/machine-id`` is unique per installation and stable across reboots, but it is a secret of
sorts (systemd asks applications not to expose it: machine-id(5)), so it is never stored. What the
environment snapshot and the history keep is ``m-`` and 16 hex digits of HMAC-SHA256(salt,
machine-id): stable for one machine and one salt, useless to look the machine up elsewhere, and
different for another salt. The salt is ``gpu-stress`` unless ``STRESS_MACHINE_ID_SALT`` is set (a
lab that wants ids nobody outside it can correlate sets its own, the same on every machine).
Reports mask it like the host name (``stress.report.redact``: ``<machine-id>``).
"""
from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
SALT_ENV = "STRESS_MACHINE_ID_SALT"
DEFAULT_SALT = "gpu-stress"
PREFIX = "m-"


def hashed(raw: str, salt: str | None = None) -> str:
    """``m-`` + 16 hex digits of HMAC-SHA256(salt, raw)."""
    key = (salt if salt is not None else (os.environ.get(SALT_ENV) or DEFAULT_SALT)).encode("utf-8")
    return PREFIX + hmac.new(key, raw.strip().encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def machine_id(paths: tuple[Path, ...] = MACHINE_ID_FILES, salt: str | None = None) -> str | None:
    """This machine's hashed id, or None where no machine-id file is readable (some containers)."""
    for path in paths:
        try:
            raw = path.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if raw and raw.strip("0"):    # an all-zero id is systemd's placeholder for "not set up yet"
            return hashed(raw, salt)
    return None
