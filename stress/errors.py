"""Errors the suite reports to a user, and the one table of exit codes.

Every module raises a :class:`StressError` (or a subclass) for a problem the user can fix; only
``stress.cli`` turns it into one ``error: ...`` line and an exit code. Anything else is a bug: the CLI
writes its traceback to a file and prints one line that says where.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Documented in docs/exit-codes.md; keep the two in step."""

    OK = 0                  # command succeeded; for `run`: verdict not-reproduced
    INTERNAL = 1            # a bug in stress itself (traceback saved to a file)
    BAD_INPUT = 2           # invalid scenario, bad arguments, missing file: nothing was run
    ENVIRONMENT = 3         # the machine lacks an essential (doctor); a run whose models cannot load exits 12
    REPRODUCED = 10         # run finished: the desktop regressed after the workload
    INCONCLUSIVE = 11       # run finished, but a verdict could not be reached (e.g. no display)
    WORKLOAD_ERROR = 12     # run finished with images that crashed, hung or ran out of memory
    SOAK_HARNESS = 13       # a soak stopped early on a harness problem (disk floor, state file)
    SELFTEST_MISSED = 14    # selftest finished, but a detection or false-alarm target was missed
    INTERRUPTED = 130       # Ctrl-C / SIGTERM: stopped cleanly, everything recorded so far is kept


# Most important first: when several runs (a matrix, a soak's iterations) end differently, the one
# exit code reported is the first of these that occurred. A code not listed (a bug, bad input, a
# missing set-up) outranks them all: it means something did not run.
SEVERITY = (ExitCode.INTERRUPTED, ExitCode.SOAK_HARNESS, ExitCode.REPRODUCED, ExitCode.WORKLOAD_ERROR,
            ExitCode.INCONCLUSIVE, ExitCode.OK)


def most_severe(codes) -> int:
    """The exit code to report for several results (``OK`` for none)."""
    got = [int(c) for c in codes if c is not None]
    known = [int(c) for c in SEVERITY]
    unknown = [c for c in got if c not in known]
    if unknown:
        return unknown[0]
    return next((c for c in known if c in got), int(ExitCode.OK))


class StressError(Exception):
    """A problem the user can act on. ``str()`` is the one line shown after ``error:``."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, exit_code: ExitCode | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    def lines(self) -> list[str]:
        return [str(self)]


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def printable(text: str) -> str:
    """``text`` safe for a terminal, on one line: control characters (NUL, ESC, newlines) and undecodable
    bytes (surrogate escapes from file names) are written as ``\\xNN``; other text is kept as it is."""
    out = text.translate(_CONTROL)
    if any("\udc80" <= ch <= "\udcff" for ch in out):
        out = "".join(f"\\x{ord(ch) - 0xDC00:02x}" if "\udc80" <= ch <= "\udcff" else ch for ch in out)
    return out.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an input file, located as precisely as we can."""

    file: str
    line: int | None
    path: str          # dotted key path, e.g. "model.base" or "resolutions[2]"
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return printable(text)


class ScenarioError(StressError):
    """One or more problems in a scenario file; all of them are reported at once."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class EnvironmentProblem(StressError):
    exit_code = ExitCode.ENVIRONMENT
