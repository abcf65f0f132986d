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


# ---------------------------------------------------------------------------------------------
# Run for real: the commands a newcomer types first, each in a subprocess as the console script runs
# it (stress.cli:main), in a scratch folder holding the shipped scenarios, with a fresh HOME and no
# display, bounded in time. Documented lines that are cheap as written run as written; the README's
# synopses (`validate FILE...`, `history`, `watch --latest`, `X --help`) run filled in.

_SPAN = re.compile(r"`(?:\.venv/bin/)?gpu-stress ([^`]+)`")
# placeholders, synopses, shell expansions, and URLs (a server the reader has, not this machine)
_PLACEHOLDER = re.compile(r"<|\.\.\.|\$|\b[A-Z][A-Z_:]{2,}\b|\[|://")
# subcommand -> (exit status, what stdout or stderr shows), in a scratch folder where nothing has run yet
_AS_WRITTEN = {
    "schema": (0, '"$defs"'),
    "report --schema": (0, '"$defs"'),
    "validate": (0, "ok: "),
    "history": (2, "no history database there yet"),
    "watch": (2, "no run directory there"),
}


def _spans():
    for path in DOCS:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in _SPAN.finditer(line):
                yield path, n, m.group(1)


def _as_written():
    """Documented command lines (code blocks and inline spans) that are cheap to run as they stand."""
    seen = set()
    found = [(p, n, m.group(1), False) for p in DOCS for n, line in _code_lines(p)
             if (m := re.search(r"(?:^|\s)(?:\.venv/bin/)?gpu-stress\s+(\S.*)$", line)) and not line.startswith("#")]
    for path, n, rest, in_prose in [*found, *((p, n, r, True) for p, n, r in _spans())]:
        rest = _CUT.split(" " + rest, maxsplit=1)[0].strip()
        key = next((k for k in sorted(_AS_WRITTEN, key=len, reverse=True) if rest == k or rest.startswith(k + " ")),
                   None)
        # a bare name in prose (`gpu-stress watch`) names the command; schema and history are whole lines
        bare_reference = in_prose and rest == key and key not in ("schema", "history")
        if key and not bare_reference and not _PLACEHOLDER.search(rest.replace("$HOME", "home")) and rest not in seen:
            seen.add(rest)
            yield pytest.param(rest, key, id=f"{path.name}:{n}")


def _run(argv: list[str], cwd: Path, timeout: float = 120):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "NO_COLOR", "STRESS_HISTORY_URL")}
    env.update(HOME=str(cwd), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", "import sys; from stress.cli import main; sys.exit(main())",
                           *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def scratch(tmp_path) -> Path:
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")
    return tmp_path


def test_some_documented_commands_run_as_written():
    assert {k for _, k in (p.values for p in _as_written())} >= {"schema", "report --schema", "history", "watch"}


@pytest.mark.parametrize("rest, key", list(_as_written()))
def test_documented_command_runs_as_written(rest, key, scratch):
    argv = shlex.split(rest.replace("$HOME", str(scratch)))
    res = _run(argv, scratch)
    code, shows = _AS_WRITTEN[key]
    assert res.returncode == code and shows in res.stdout + res.stderr, (argv, res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    if code:
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr     # one clear line
    if key.endswith("schema"):
        import json

        json.loads(res.stdout)


def test_readme_synopses_run_filled_in(scratch):
    """What a newcomer does after `make demo` following README's command table, before any run."""
    from stress.history import open_db

    shipped = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scenarios").glob("*.yaml"))
    res = _run(["validate", *shipped], scratch)
    ok = {line.split(": ")[1] for line in res.stdout.splitlines() if line.startswith("ok: ")}   # a matrix: one per cell
    assert res.returncode == 0 and ok == set(shipped), (res.stdout, res.stderr)
    empty = scratch / "reports" / "history.db"
    empty.parent.mkdir()
    with open_db(empty):
        pass
    res = _run(["history"], scratch)               # the default database, created, no run in it yet
    assert res.returncode == 0 and res.stdout.startswith("no runs recorded in"), (res.stdout, res.stderr)
    res = _run(["history", "--json"], scratch)
    assert res.returncode == 0 and res.stdout.lstrip().startswith("{") and '"runs": []' in res.stdout
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    res = _run(["--help"], scratch)
    assert res.returncode == 0 and all(name in res.stdout for name in sub.choices)
    for name in ("run", "plan", "history", "compare", "watch", "soak"):
        res = _run([name, "--help"], scratch, timeout=60)
        assert res.returncode == 0 and res.stdout.startswith(f"usage: gpu-stress {name}"), (name, res.stderr)
