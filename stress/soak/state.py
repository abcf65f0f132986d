"""The soak's state directory: its frozen configuration (soak.json), its files, its disk and boot facts."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from stress.paths import default_artifacts, default_reports
from stress.errors import ExitCode, StressError
from stress.journal import _slug, new_run_id, write_json_atomic
from stress.units import parse_size

STATE_FORMAT = 1
STATE_FILE = "soak.json"
JOURNAL_FILE = "soak.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = "lock"
ITERATIONS_DIR = "iterations"

# Run statuses after which a run has finished (its verdict stands); "interrupted" is not one.
FINISHED_STATUSES = ("finished", "time-limit", "stopped-on-failure", "load-failed")
# Soak end statuses after which the soak continues only if its limits are raised.
TERMINAL = ("completed", "stopped-reproduced")

# Exit codes of a run that reached a verdict (its child wrote everything it could).
VERDICT_CODES = (int(ExitCode.OK), int(ExitCode.REPRODUCED), int(ExitCode.INCONCLUSIVE), int(ExitCode.WORKLOAD_ERROR))


class SoakHarnessError(StressError):
    exit_code = ExitCode.SOAK_HARNESS



def free_bytes(path: str | Path) -> int:
    """Free space on the file system holding ``path``.

    ``STRESS_FAKE_FREE_BYTES`` overrides the reading for tests: a number of bytes, or ``@FILE`` to
    read the number from FILE at every call (so a test can make the disk "fill up" mid-run).
    """
    fake = os.environ.get("STRESS_FAKE_FREE_BYTES")
    if fake:
        try:
            return int((Path(fake[1:]).read_text() if fake.startswith("@") else fake).strip())
        except (OSError, ValueError):
            raise SoakHarnessError(f"STRESS_FAKE_FREE_BYTES={fake!r} is not a number or @FILE") from None
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def boot_id() -> str | None:
    """The kernel's id of this boot: it changes with every reboot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# ---------------------------------------------------------------------------------------------
# The state directory
# ---------------------------------------------------------------------------------------------

def default_state_dir(scenarios: list[dict], root: Path | None = None) -> Path:
    names = []
    for s in scenarios:
        base = s["name"].split("[", 1)[0]
        if base not in names:
            names.append(base)
    label = names[0] + (f"+{len(names) - 1}" if len(names) > 1 else "")
    return (root or default_artifacts()) / f"soak-{_slug(label)}"


def scenario_entries(files: list[Path]) -> list[dict]:
    """Load every scenario file (matrix expanded) into the frozen entries of ``soak.json``."""
    from stress.scenario import load_scenarios

    out = []
    for f in files:
        for k, sc in enumerate(load_scenarios(f)):
            resolved = sc.model_dump(mode="json")
            out.append({"name": sc.name, "source": str(Path(f).resolve()), "index": k,
                        "sha256": hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest(),
                        "resolved": resolved})
    return out


# Options the command line may change when a soak is continued (recorded as a `config` event).
MUTABLE = ("iterations", "duration_s", "stop_on", "keep", "min_free_bytes", "junit", "history", "reports",
           "interrupted", "max_failures", "iteration_timeout_s", "report_options")


def read_config(state_dir: Path) -> dict:
    path = state_dir / STATE_FILE
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StressError(f"{state_dir}: not a soak state directory (no {STATE_FILE})") from None
    except (OSError, ValueError) as exc:
        raise SoakHarnessError(f"{path}: the soak's state cannot be read ({exc}); "
                               "start a new soak with another --state") from None
    if not isinstance(cfg, dict) or cfg.get("format") != STATE_FORMAT or not cfg.get("scenarios"):
        raise SoakHarnessError(f"{path}: not a soak state file this gpu-stress understands "
                               f"(format {cfg.get('format') if isinstance(cfg, dict) else '?'})")
    return cfg


def _history(options: dict[str, Any]) -> str:
    """The soak's history: --history, else $STRESS_HISTORY_URL, else <reports>/history.db."""
    from stress.history import history_location

    return history_location(options.get("history"),
                            default=Path(options.get("reports") or default_reports()) / "history.db")


def prepare_state(state_dir: Path | None, files: list[Path] | None, options: dict[str, Any]) -> tuple[Path, dict, dict]:
    """Create a soak's state directory, or check that a rerun names the same soak and apply the
    options it changes. Returns (state_dir, config, changes)."""
    entries = scenario_entries(files) if files else None
    if state_dir is None:
        if entries is None:
            raise StressError("give scenario files, or --resume STATE_DIR")
        state_dir = default_state_dir(entries)
    state_dir = Path(state_dir)
    changes: dict[str, list] = {}
    if (state_dir / STATE_FILE).exists():
        cfg = read_config(state_dir)
        if entries is not None:
            have = [(e["source"], e["name"]) for e in cfg["scenarios"]]
            want = [(e["source"], e["name"]) for e in entries]
            if have != want:
                raise StressError(f"{state_dir} holds a soak of {', '.join(n for _, n in have)}; this command names "
                                  f"{', '.join(n for _, n in want)}: use another --state, or --resume {state_dir}")
            edited = [e["name"] for e, old in zip(entries, cfg["scenarios"]) if e["sha256"] != old["sha256"]]
            if edited:
                changes["scenario_edited"] = [edited, "the soak keeps running the version it started with"]
        for key in MUTABLE:
            if options.get(key) is not None and options[key] != cfg.get(key):
                changes[key] = [cfg.get(key), options[key]]
                cfg[key] = options[key]
        if "duration_s" in changes:
            cfg["deadline"] = cfg["created_at"] + cfg["duration_s"] if cfg["duration_s"] else None
        if changes:
            write_json_atomic(state_dir / STATE_FILE, cfg)
        return state_dir, cfg, changes
    if entries is None:
        raise StressError(f"{state_dir}: no soak there to resume (no {STATE_FILE})")
    if not options.get("iterations") and not options.get("duration_s"):
        raise StressError("say how long to soak: --iterations N and/or --duration 8h")
    now = time.time()
    cfg = {
        "format": STATE_FORMAT,
        "soak_id": new_run_id("soak-" + entries[0]["name"].split("[", 1)[0], now),
        "created_at": now,
        "scenarios": entries,
        "reports": str(Path(options.get("reports") or default_reports()).resolve()),
        "iterations": options.get("iterations"),
        "duration_s": options.get("duration_s"),
        "deadline": now + options["duration_s"] if options.get("duration_s") else None,
        "stop_on": options.get("stop_on") or "reproduced",
        "keep": 5 if options.get("keep") is None else options["keep"],
        "min_free_bytes": parse_size("5GiB") if options.get("min_free_bytes") is None else options["min_free_bytes"],
        "junit": options.get("junit"),
        "history": _history(options),
        "interrupted": options.get("interrupted") or "rerun",
        "max_failures": options.get("max_failures") or 3,
        "iteration_timeout_s": options.get("iteration_timeout_s"),
        "report_options": options.get("report_options") or {},
    }
    for key in ("junit",):
        if cfg[key]:
            cfg[key] = str(Path(cfg[key]).resolve())
    state_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state_dir / STATE_FILE, cfg)
    return state_dir, cfg, changes


