"""Experiments: the environment and GPU settings a scenario asks for, and the proof they were in effect.

A scenario's ``env:`` names environment variables for the processes the suite starts (the worker,
the probe children); ``settings:`` names GPU settings applied by a command and read back through
NVML (stress.settings). ``matrix:`` sweeps either like any other key (``env.NAME: [...]``).

The supervisor launches each process with its variables, then reads ``/proc/<pid>/environ`` right
after the spawn (the environment the kernel gave the new program, before it could change anything)
and journals the comparison (``env_readback``). The judge (stress.validity) makes a run whose
variables were not all read back in effect ``invalid``. This module never imports torch.
"""
from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

TARGETS = ("worker", "probes")
DEFAULT_TARGETS = ("worker", "probes")
# POSIX portable names (letters, digits, underscore; not starting with a digit).
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_VALUE = 4096
# Variables the suite itself sets or relies on for its children: a scenario may not override them.
RESERVED = ("PYTHONPATH", "PYTHONUNBUFFERED", "DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR",
            "STRESS_NVML_MODULE", "STRESS_CACHE")


class EnvVar(BaseModel):
    """One variable: its value (``null``: removed from the environment) and the processes it is for."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    value: str | None = Field(..., description="the value (a string); null removes the variable")
    for_: list[Literal["worker", "probes"]] = Field(list(DEFAULT_TARGETS), alias="for", min_length=1, description=(
        "which processes get it: worker (the torch/diffusers process), probes (the compositor probe "
        "children); the suite starts no display server, so nested displays are not a target"))

    @field_validator("value", mode="before")
    @classmethod
    def _string(cls, v: Any) -> Any:
        return _check_value(v)

    @field_validator("for_", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


def _check_value(v: Any) -> Any:
    if v is None:
        return v
    if not isinstance(v, str):
        if isinstance(v, bool):
            raise ValueError(f"an environment value must be a string; YAML read a boolean: quote it ('{str(v).lower()}')")
        if isinstance(v, (int, float)):
            raise ValueError(f"an environment value must be a string; quote the number (\"{v}\")")
        raise ValueError("an environment value must be a string, or null to remove the variable")
    if "\x00" in v:
        raise ValueError("an environment value cannot contain a NUL byte")
    if len(v) > MAX_VALUE:
        raise ValueError(f"an environment value may be at most {MAX_VALUE} characters (got {len(v)})")
    return v


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError(f"{name!r} is not an environment variable name (letters, digits and _, not "
                         "starting with a digit)")
    if name in RESERVED or name.startswith("STRESS_"):
        raise ValueError(f"{name} is set by the suite for its own processes; a scenario cannot set it")
    return name


EnvName = Annotated[str, AfterValidator(check_name)]


def parse_env(v: Any) -> Any:
    """``env:`` as written -> ``{NAME: EnvVar}`` input: a plain string (or null) is for every target."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError("env maps variable names to values, e.g. {__NV_DISABLE_EXPLICIT_SYNC: \"1\"}")
    return {name: item if isinstance(item, dict) else {"value": item} for name, item in v.items()}


def for_target(env: dict[str, EnvVar], target: str) -> dict[str, str | None]:
    """NAME -> value (None: to be removed) for ``worker`` or ``probes``."""
    return {k: v.value for k, v in env.items() if target in v.for_}


def requirements(env: dict[str, EnvVar]) -> dict[str, dict[str, str | None]]:
    """What each target must be launched with (targets with nothing asked left out)."""
    return {t: for_target(env, t) for t in TARGETS if for_target(env, t)}


def apply(env: dict[str, str], wanted: dict[str, str | None], drop: tuple[str, ...] = ()) -> dict[str, str]:
    """``env`` with ``wanted`` applied (None removes); names in ``drop`` left out (the fault that
    simulates a launcher losing a setting)."""
    out = dict(env)
    for name, value in wanted.items():
        if name in drop:
            out.pop(name, None)
        elif value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[-1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def read_environ(pid: int, settle: float = 5.0) -> tuple[dict[str, str] | None, str | None]:
    """``/proc/<pid>/environ`` as a dict, or ``(None, reason)``: gone, not ours to read, or exited.

    A parent can resume from ``fork``/``exec`` while the kernel is still building the new program's
    stack (the file reads empty until then): an empty read of a live process is retried for up to
    ``settle`` seconds."""
    deadline = time.monotonic() + settle
    while True:
        try:
            with open(f"/proc/{int(pid)}/environ", "rb") as fh:
                raw = fh.read(4 << 20)
        except FileNotFoundError:
            return None, f"process {pid} is gone"
        except PermissionError:
            return None, f"/proc/{pid}/environ: permission denied"
        except ProcessLookupError:      # ESRCH: a zombie, whose memory (and environment) is gone
            return None, f"process {pid} exited before its environment could be read"
        except OSError as exc:
            return None, f"/proc/{pid}/environ: {exc.strerror or exc}"
        if raw:
            break
        if _zombie(pid) or time.monotonic() >= deadline:
            return None, f"process {pid} exited before its environment could be read"
        time.sleep(0.002)
    out: dict[str, str] = {}
    for item in raw.split(b"\x00"):
        name, sep, value = item.partition(b"=")
        if sep:
            out[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return out, None


def compare(wanted: dict[str, str | None], found: dict[str, str] | None, reason: str | None) -> dict:
    """The read-back of one process: ``status`` ok / mismatch / unreadable, ``found`` (only the
    variables asked for: never the rest of the environment), ``wrong`` (names not as asked)."""
    if found is None:
        return {"status": "unreadable", "expected": wanted, "found": {}, "wrong": sorted(wanted), "reason": reason}
    seen = {k: found.get(k) for k in wanted}
    wrong = sorted(k for k, v in wanted.items() if seen[k] != v)
    return {"status": "mismatch" if wrong else "ok", "expected": wanted, "found": seen, "wrong": wrong,
            "reason": None}


def read_back(journal, wanted: dict[str, str | None], target: str, pid: int, **where: Any) -> dict | None:
    """Read back one process's environment and journal it (``env_readback``); None when nothing was asked."""
    if not wanted:
        return None
    found, reason = read_environ(pid)
    return journal.append("env_readback", target=target, pid=pid, **where, **compare(wanted, found, reason))


def worker_env(env: dict[str, str], sc, images: list[int] | None) -> tuple[dict[str, str], dict[str, str | None]]:
    """The worker's environment with the scenario's ``env:`` for it applied (less what a ``drop-env``
    fault leaves out), and what it asked for (to read back)."""
    wanted = for_target(sc.env, "worker") if sc is not None else {}
    return apply(env, wanted, worker_drops(sc, images) if sc is not None else ()), wanted


def worker_drops(sc, images: tuple[int, ...] | list[int] | None) -> tuple[str, ...]:
    """Variables the ``drop-env`` faults remove from the worker started to run ``images`` (a job)."""
    return tuple(f.env for f in getattr(sc, "faults", []) if f.kind == "drop-env" and f.env
                 and f.image in (images or ()))


def set_matrix_value(data: dict, dotted: str, value: Any, setter) -> None:
    """``matrix: {env.NAME: [...]}``: a value replaces the variable's value and keeps its ``for:``."""
    parts = dotted.split(".")
    if len(parts) == 2 and parts[0] == "env" and isinstance(data.get("env"), dict) \
            and isinstance(data["env"].get(parts[1]), dict) and not isinstance(value, dict):
        data["env"][parts[1]] = dict(data["env"][parts[1]], value=value)
        return
    setter(data, dotted, value)


SettingName = Literal["persistence_mode", "power_limit_w", "application_clocks", "locked_clocks"]


class SettingSpec(BaseModel):
    """A GPU setting applied by a command (``nvidia-smi``) and read back through NVML (stress.settings)."""

    model_config = ConfigDict(extra="forbid")
    name: SettingName = Field(..., description=(
        "persistence_mode (0/1), power_limit_w (watts), application_clocks ([memory MHz, graphics MHz]), "
        "locked_clocks ([min MHz, max MHz] of the graphics clock)"))
    value: int | list[int] = Field(..., description="the value, in the setting's unit")
    gpu: int = Field(0, ge=0, le=63, description="NVML index of the GPU")
    restore: bool = Field(True, description="put the previous value back at the end of the run")

    @field_validator("value")
    @classmethod
    def _shape(cls, v: Any, info) -> Any:
        name = info.data.get("name")
        if name is None:            # the name itself is wrong: that is the error to report
            return v
        pair = name in ("application_clocks", "locked_clocks")
        if pair and not (isinstance(v, list) and len(v) == 2):
            raise ValueError(f"{name} takes two numbers in MHz, e.g. [1500, 1500]")
        if not pair and isinstance(v, list):
            raise ValueError(f"{name} takes one number")
        vals = v if isinstance(v, list) else [v]
        if name == "persistence_mode" and v not in (0, 1):
            raise ValueError("persistence_mode is 0 or 1")
        if any(x < 0 or x > 100_000 for x in vals):
            raise ValueError("out of range 0..100000")
        if name == "locked_clocks" and vals[0] > vals[1]:
            raise ValueError("locked_clocks is [min, max] with min <= max")
        return v


def announce(journal, sc) -> None:
    """The ``experiment`` event: what this run (a matrix cell) asked for, so that the judge can tell a
    read-back that is missing from one that was never wanted."""
    env = requirements(sc.env)
    if env or sc.settings or sc.matrix_values:
        journal.append("experiment", cell=sc.matrix_values, env=env,
                       settings=[s.model_dump(mode="json") for s in sc.settings])
