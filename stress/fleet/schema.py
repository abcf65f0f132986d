"""Fleet files: YAML -> validated :class:`Fleet`, every problem at once as ``file:line: key: what``.

A fleet file says which machines there are (with the GPU, driver and compositor each is expected to
have), which scenarios run on which machine, when (nightly at a time, or every N hours), how long a
soak lasts, where the shared history is and where the bundles go. It holds no secret: the history's
password and the workers' passwords come from environment variables or files named in it
(:func:`read_secret`), so the fleet file can live in a repository. docs/fleet.md describes it.
"""
from __future__ import annotations

import difflib
import fnmatch
import os
import re
import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from stress import yamlsafe
from stress.errors import Problem, ScenarioError
from stress.scenario import parse_duration

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
MAX_PROBLEMS = 20


class FleetError(ScenarioError):
    """One or more problems in a fleet file (exit 2, like a bad scenario)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _duration(v: Any) -> float:
    return parse_duration(v)


class Secret(_Strict):
    """Where a secret comes from: an environment variable and/or a file (the variable wins)."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "Secret":
        if not self.env and not self.file:
            raise ValueError("give 'env' (an environment variable) or 'file' (a file holding only the secret)")
        if self.env and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.env):
            raise ValueError(f"'env' must be an environment variable name (got {self.env!r})")
        return self


class HistoryConfig(_Strict):
    """The shared history: an SQLite path on the master, or a database URL without its password."""

    url: str
    password: Secret | None = None

    @field_validator("url")
    @classmethod
    def _no_password(cls, v: str) -> str:
        m = re.match(r"^[a-z][a-z0-9+]*://([^/@]*)@", v)
        if m and ":" in m.group(1):
            raise ValueError("the URL holds a password: keep it out of the fleet file and name where it is "
                             "with 'password: {env: VAR}' or 'password: {file: PATH}'")
        return v


class MasterConfig(_Strict):
    host: str = "localhost"                 # the name the workers connect to
    port: int = Field(9989, ge=1, le=65535)  # Buildbot's PB port
    listen: str = "0.0.0.0"                 # the interface the master listens on
    www: str | None = "127.0.0.1:8010"      # Buildbot's web UI and REST API (HOST:PORT), or null for none
    title: str = "gpu-stress fleet"

    @field_validator("www")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:8010, or null (got {v!r})")
        return v


class Schedule(_Strict):
    nightly: str | None = None          # "HH:MM", the master's local time
    every: str | None = None            # "6h": every N hours (Buildbot's Periodic)

    @model_validator(mode="after")
    def _one(self) -> "Schedule":
        if bool(self.nightly) == bool(self.every):
            raise ValueError("give exactly one of 'nightly: HH:MM' or 'every: 6h'")
        if self.nightly and not _HHMM.match(self.nightly):
            raise ValueError(f"nightly: must be HH:MM, e.g. '01:30' (got {self.nightly!r})")
        if self.every:
            try:
                s = parse_duration(self.every)
            except ValueError as exc:
                raise ValueError(f"every: {exc}") from None
            if s < 60:
                raise ValueError(f"every: at least a minute (got {self.every!r})")
        return self

    @property
    def hour_minute(self) -> tuple[int, int] | None:
        if not self.nightly:
            return None
        h, m = self.nightly.split(":")
        return int(h), int(m)

    @property
    def every_s(self) -> float | None:
        return parse_duration(self.every) if self.every else None


class SoakConfig(_Strict):
    duration: str | None = "7h"
    iterations: int | None = Field(None, ge=1)
    stop_on: Literal["reproduced", "never"] = "never"
    iteration_timeout: str | None = None
    min_free_disk: str = "5GiB"
    keep: int = Field(5, ge=0)
    timeout: str | None = None          # the whole build; default: duration + 2h
    unresponsive_after: str = "10m"     # no answer from the worker this long: host stopped responding
    ping_every: str | None = None       # default: a fifth of unresponsive_after

    @model_validator(mode="after")
    def _checks(self) -> "SoakConfig":
        if not self.duration and not self.iterations:
            raise ValueError("give 'duration' or 'iterations' (a soak needs an end)")
        for key in ("duration", "iteration_timeout", "timeout", "unresponsive_after", "ping_every"):
            v = getattr(self, key)
            if v is not None:
                try:
                    parse_duration(v)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        return self

    def seconds(self, key: str) -> float | None:
        v = getattr(self, key)
        return parse_duration(v) if v is not None else None


class Expect(_Strict):
    """What the machine should have (globs). Shown as worker properties; a run that differs is flagged."""

    gpu: str | None = None
    driver: str | None = None
    compositor: str | None = None
    kernel: str | None = None


class Machine(_Strict):
    name: str
    expect: Expect = Field(default_factory=Expect)
    scenarios: list[str] = Field(min_length=1)
    password: Secret | None = None      # default: file <master>/secrets/worker-<name>
    command: str | list[str] = "gpu-stress"
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"must be letters, digits, '.', '_' or '-' (at most 63; got {v!r})")
        return v

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


class Fleet(_Strict):
    fleet: str
    master: MasterConfig = Field(default_factory=MasterConfig)
    history: HistoryConfig
    bundles: str = "bundles"            # on the master, relative to the master directory
    schedule: Schedule
    soak: SoakConfig = Field(default_factory=SoakConfig)
    scenarios: dict[str, str] = Field(min_length=1)   # key -> scenario file (relative to the fleet file)
    machines: list[Machine] = Field(min_length=1)

    @field_validator("fleet")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"must be letters, digits, '.', '_' or '-' (got {v!r})")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "Fleet":
        seen: set[str] = set()
        for i, m in enumerate(self.machines):
            if m.name in seen:
                raise ValueError(f"machines.{i}.name: '{m.name}' is named twice")
            seen.add(m.name)
            for j, key in enumerate(m.scenarios):
                if key not in self.scenarios:
                    close = difflib.get_close_matches(key, list(self.scenarios), n=1)
                    raise ValueError(f"machines.{i}.scenarios.{j}: '{key}' is not in 'scenarios'"
                                     + (f"; did you mean '{close[0]}'?" if close else
                                        f" (known: {', '.join(self.scenarios)})"))
        return self

    # set by load_fleet: the fleet file's path (scenario files are relative to it)
    _source: str | None = PrivateAttr(None)

    @property
    def source(self) -> str | None:
        return self._source

    def machine(self, name: str) -> Machine:
        for m in self.machines:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def base(self) -> Path:
        """The fleet file's folder: relative paths in it (scenarios, history, bundles) start here."""
        return Path(self.source).parent if self.source else Path.cwd()

    def scenario_path(self, key: str) -> Path:
        return (self.base / self.scenarios[key]).resolve()


def _loc_text(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _owner(loc: tuple) -> type[BaseModel] | None:
    model: Any = Fleet
    for part in loc:
        if isinstance(part, int):
            continue
        f = getattr(model, "model_fields", {}).get(part)
        if f is None:
            return None
        cands = [f.annotation, *getattr(f.annotation, "__args__", ())]
        for c in list(cands):
            cands += list(getattr(c, "__args__", ()))
        model = next((c for c in cands if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _problems(exc: ValidationError, located: yamlsafe.Located, source: str) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors(include_url=False)[:MAX_PROBLEMS]:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p.endswith("]") or p in ("str", "list"))))
        msg = err["msg"].removeprefix("Value error, ")
        m = re.match(r"^([a-z_]+(?:\.[A-Za-z0-9_]+)*): (.*)$", msg, re.S)
        if m:  # a cross-field check names the key it is about
            loc = loc + tuple(int(p) if p.isdigit() else p for p in m.group(1).split("."))
            msg = m.group(2)
        if err["type"] == "extra_forbidden":
            owner = _owner(loc[:-1])
            names = list(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
            msg = f"unknown key '{loc[-1]}'" + (f"; did you mean '{close[0]}'?" if close
                                                else (f" (allowed: {', '.join(names)})" if names else ""))
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif ("input" in err and not isinstance(err["input"], (dict, list)) and "got" not in msg
              and err["type"] != "value_error"):  # our own checks say what they need (and never echo a password)
            msg = f"{msg} (got {err['input']!r:.60})"
        probe = loc
        while probe and probe not in located.lines:
            probe = probe[:-1]
        f, line = located.lines.get(probe, (source, None))
        p = Problem(f, line, _loc_text(loc), msg)
        if p not in out:
            out.append(p)
    return out


def load_fleet(path: str | Path, *, check_scenarios: bool = True) -> Fleet:
    """Load and validate a fleet file (bounded YAML, located errors). Raises :class:`FleetError`."""
    path = Path(path)
    source = str(yamlsafe.display(path))
    try:
        located = yamlsafe.load_file(path)
    except ScenarioError as exc:
        raise FleetError(exc.problems) from None
    if not isinstance(located.data, dict):
        raise FleetError([Problem(source, 1, "", "a fleet file is a mapping with 'fleet:', 'history:', "
                                                 "'schedule:', 'scenarios:' and 'machines:'")])
    try:
        fleet = Fleet.model_validate(located.data)
    except ValidationError as exc:
        raise FleetError(_problems(exc, located, source)) from None
    fleet._source = str(path.resolve())
    if check_scenarios:
        problems: list[Problem] = []
        from stress.scenario import load_scenarios

        for key in fleet.scenarios:
            f, line = located.lines.get(("scenarios", key), (source, None))
            sp = fleet.scenario_path(key)
            if not sp.is_file():
                problems.append(Problem(f, line, f"scenarios.{key}", f"no such scenario file ({sp})"))
                continue
            try:
                load_scenarios(sp)
            except ScenarioError as exc:
                problems.append(Problem(f, line, f"scenarios.{key}", f"{sp.name} is not a valid scenario: "
                                                                     f"{exc.problems[0]}"))
        if problems:
            raise FleetError(problems)
    return fleet


def scenario_names(fleet: Fleet) -> dict[str, list[str]]:
    """Fleet scenario key -> the scenario names its file gives (a matrix gives several)."""
    from stress.scenario import load_scenarios

    out: dict[str, list[str]] = {}
    for key in fleet.scenarios:
        try:
            out[key] = [s.name for s in load_scenarios(fleet.scenario_path(key), check_files=False)]
        except (ScenarioError, OSError):
            out[key] = [key]
    return out


def read_secret(secret: Secret | None, *, default_file: Path | None = None, what: str) -> str | None:
    """The secret's value: its environment variable if set, else its file (first line, stripped).

    A file must not be readable by others (mode 0600 or stricter)."""
    from stress.errors import StressError

    env = secret.env if secret else None
    if env and os.environ.get(env):
        return os.environ[env]
    file = Path(secret.file).expanduser() if secret and secret.file else default_file
    if file is None:
        if env:
            raise StressError(f"{what}: the environment variable {env} is not set")
        return None
    try:
        st = file.stat()
        if st.st_mode & 0o077:
            raise StressError(f"{what}: {file} is readable by others; chmod 600 {file}")
        text = file.read_text(encoding="utf-8").strip().splitlines()
    except FileNotFoundError:
        if env:
            raise StressError(f"{what}: neither the environment variable {env} nor {file} is set") from None
        raise StressError(f"{what}: {file} does not exist (gpu-stress fleet init writes it)") from None
    except OSError as exc:
        raise StressError(f"{what}: cannot read {file} ({exc.strerror})") from None
    if not text or not text[0]:
        raise StressError(f"{what}: {file} is empty")
    return text[0].strip()


def matches(pattern: str | None, value: str | None) -> bool:
    """An expectation glob against a fact (case-insensitive; substring unless the glob anchors it)."""
    if not pattern:
        return True
    if value is None:
        return False
    p, v = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(v, p) or (not any(c in p for c in "*?[") and p in v)
