"""Command line entry point: ``python -m stress`` / ``gpu-stress``.

The one place that turns a :class:`~stress.errors.StressError` into ``error: ...`` lines and an exit
code. An unexpected exception is a bug: its traceback goes to a file, the screen gets one line.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from typing import Callable

from stress import __version__
from stress.errors import ExitCode, StressError, printable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-stress",
        description="Reproduce GPU driver and compositor regressions after sustained diffusion load.",
        epilog="Exit codes: see docs/exit-codes.md. Run '%(prog)s COMMAND --help' for a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import stress.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"stress.commands.{info.name}")
        mod.register(sub)
    return parser


def _save_traceback() -> str:
    fd, path = tempfile.mkstemp(prefix=f"stress-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        traceback.print_exc(file=fh)
    return path


def _terminate(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # A service manager's SIGTERM or a closed terminal's SIGHUP stops a command as Ctrl-C does:
    # cleanly, keeping what was recorded, exit 130.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _terminate)
    global _fast_exit
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return int(ExitCode.BAD_INPUT)
    _fast_exit = bool(getattr(args, "fast_exit", False))
    return guarded(lambda: args.func(args))


_fast_exit = False


def entry() -> None:
    """The console script and ``python -m stress``: :func:`main`, then exit with its code.

    A command marked ``fast_exit`` (``plan``: it loads torch, diffusers and transformers and builds
    full-size networks) then leaves with ``os._exit`` once its output is flushed, without the
    interpreter's teardown of those module graphs and objects: 1.4 s of a 12.7 s plan on this
    machine, measured (docs/benchmarks.md). Such a command leaves nothing for exit handlers: its
    forked children are reaped and its temporary files removed before it returns."""
    rc = main()
    if _fast_exit:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):   # a closed pipe (`gpu-stress plan | head`): nothing to keep
                pass
        os._exit(rc)
    sys.exit(rc)


def guarded(fn: Callable[[], int]) -> int:
    """Run ``fn`` the way every entry point must: a StressError is ``error:`` lines and its exit
    code, Ctrl-C is 130, anything else is a bug with its traceback saved to a file."""
    try:
        return int(fn())
    except StressError as exc:
        for line in exc.lines():
            print(f"error: {printable(line)}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `gpu-stress schema | head`
        return int(ExitCode.OK)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return _internal(exc)
        # Before a run could record anything (e.g. creating its directory on a full disk).
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {printable(where)}{exc.strerror}; free some space or choose another folder "
              "(--out / --reports)", file=sys.stderr)
        return int(ExitCode.ENVIRONMENT)
    except ModuleNotFoundError as exc:
        return _missing_dependency(exc)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, not the user's fault
        return _internal(exc)


# Import name -> what to install (torch is installed by `make setup`, pinned: see README.md).
_INSTALL = {"torch": "torch (make setup installs the pinned build; see README.md, TORCH_SPEC)",
            "PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn"}


def _missing_dependency(exc: ModuleNotFoundError) -> int:
    """A package the suite needs is not installed: a set-up problem (exit 3), not a bug."""
    top = (exc.name or "").split(".")[0]
    if not top or top == "stress":      # a module of our own is missing: that is a bug
        return _internal(exc)
    what = _INSTALL.get(top, top)
    print(f"error: the Python package '{top}' is not installed in {sys.prefix}; install {what} "
          "(or run 'make setup'), then 'gpu-stress doctor' to check the set-up", file=sys.stderr)
    return int(ExitCode.ENVIRONMENT)


def _internal(exc: BaseException) -> int:
    path = _save_traceback()
    print(f"internal error: {type(exc).__name__}: {exc} (traceback saved to {path}; "
          "please attach it to a bug report)", file=sys.stderr)
    return int(ExitCode.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
