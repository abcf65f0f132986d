"""The commands in README.md and docs/ work as written: every `gpu-stress` line in a code block parses
with the real argument parser, none uses `python -m stress` (plain Debian has no `python`), and no
command's help shows a doubled `%%`."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from stress.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_CUT = re.compile(r"\s(?:\||>>?|2>&1|&&|;|#)\s?")


def _code_lines(path: Path):
    """(line number, line) in fenced code blocks; `\\`-continued lines joined."""
    inside, held, start = False, "", 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        if not held:
            start = n
        if line.rstrip().endswith("\\"):
            held += line.rstrip()[:-1] + " "
            continue
        yield start, (held + line).strip()
        held = ""


def _commands():
    for path in DOCS:
        for n, line in _code_lines(path):
            m = re.search(r"(?:^|\s)(?:\.venv/bin/)?gpu-stress\s+(\S.*)$", line)
            # usage synopses (`[--out DIR]`) and systemd ExecStart= lines (inside sh -c '...') are
            # not command lines to run as they stand
            if m and not line.startswith("#") and "[--" not in line and "ExecStart=" not in line:
                yield pytest.param(m.group(1), id=f"{path.name}:{n}")


def _argv(rest: str) -> list[str]:
    rest = _CUT.split(" " + rest, maxsplit=1)[0].strip()
    rest = re.sub(r"\$\([^)]*\)", "X", rest)          # $(date +%F) and the like
    return shlex.split(rest.replace("\\%", "%"))


@pytest.mark.parametrize("rest", list(_commands()))
def test_documented_command_parses(rest):
    argv = _argv(rest)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, f"gpu-stress {' '.join(argv)}: does not parse"   # --help / --version
        return
    assert getattr(args, "func", None) is not None, argv


def test_no_doc_runs_python_dash_m_stress():
    bad = [f"{p.name}:{n}: {line}" for p in DOCS for n, line in _code_lines(p)
           if re.match(r"^(?:\S+=\S+\s+)*python3? -m stress\b", line)]
    assert not bad, "use .venv/bin/gpu-stress (plain Debian has no `python`):\n" + "\n".join(bad)


def test_help_has_no_doubled_percent(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert "%%" not in p.format_help(), name
