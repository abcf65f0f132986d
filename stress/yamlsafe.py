"""Bounded, located YAML loading for scenario files.

A scenario file is small (the shipped ones are under 3 KB); anything that makes loading take more than
milliseconds or more than a few MB is refused with one located line instead:

- only regular files are opened (never a FIFO, a device or a directory), and at most
  :data:`MAX_FILE_BYTES` are read;
- the text must be UTF-8 without control characters (the line and column are named);
- nesting deeper than :data:`MAX_DEPTH` and documents of more than :data:`MAX_NODES` nodes *after alias
  expansion* are refused while composing, so an alias bomb (``&a [*b, *b, ...]`` nested) fails after
  :data:`MAX_NODES` steps, and an alias that refers to the node it is in (``&a [*a]``) is a cycle;
- only the YAML core tags are constructed (SafeConstructor): ``!!python/...`` and unknown tags are an
  error at their line; unhashable keys too;
- numbers must be finite (``.inf``, ``.nan`` and ``1e400`` are refused) and integers at most 30 digits.

Errors are :class:`stress.errors.Problem` lines, ``file:line: key.path: what (got X)``.

libyaml's parser is used when PyYAML has it (the composer, where the bounds are checked, is PyYAML's
Python one on top of it); otherwise the pure-Python parser (slower, same bounds).
"""
from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from stress.errors import Problem, ScenarioError

MAX_FILE_BYTES = 1024 * 1024      # 1 MiB: a scenario is a few KB
MAX_DEPTH = 32                    # nesting of mappings/lists; a scenario needs 4
MAX_NODES = 20_000                # nodes after alias expansion; a scenario has ~100
MAX_INT_DIGITS = 30
_FLOAT_TAG = "tag:yaml.org,2002:float"
_INT_TAG = "tag:yaml.org,2002:int"
# The characters PyYAML's reader refuses (yaml.reader.Reader.NON_PRINTABLE), checked first so that the
# message names the line and column.
_NON_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


class _Bounded(yaml.YAMLError):
    def __init__(self, mark: Any, problem: str):
        super().__init__(problem)
        self.problem_mark = mark
        self.problem = problem


class _BoundedComposer(Composer):
    """PyYAML's composer, counting nodes (aliases counted by the size of what they stand for) and depth."""

    def __init__(self) -> None:
        Composer.__init__(self)
        self._total = 0
        self._depth = 0
        self._size: dict[int, int] = {}

    def _count(self, n: int, mark: Any) -> None:
        self._total += n
        if self._total > MAX_NODES:
            raise _Bounded(mark, f"more than {MAX_NODES} values after expanding aliases (an alias bomb?); "
                                 "a scenario needs a few hundred")

    def compose_document(self) -> Node:
        self._size.clear()
        return Composer.compose_document(self)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            event = self.get_event()
            node = self.anchors.get(event.anchor)
            if node is None:
                raise _Bounded(event.start_mark, f"found undefined alias *{event.anchor}")
            size = self._size.get(id(node))
            if size is None:
                raise _Bounded(event.start_mark, f"alias *{event.anchor} refers to the node it is in (a cycle)")
            self._count(size, event.start_mark)
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Bounded(self.peek_event().start_mark, f"nested deeper than {MAX_DEPTH} levels")
        before = self._total
        self._count(1, self.peek_event().start_mark)
        node = Composer.compose_node(self, parent, index)
        self._size[id(node)] = self._total - before
        self._depth -= 1
        return node


try:
    from yaml._yaml import CParser as _Parser

    class _Loader(_BoundedComposer, _Parser, SafeConstructor, Resolver):  # type: ignore[misc]
        def __init__(self, text: str) -> None:
            _Parser.__init__(self, text)
            _BoundedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
except ImportError:  # PyYAML without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(Reader, Scanner, Parser, _BoundedComposer, SafeConstructor, Resolver):  # type: ignore[no-redef]
        def __init__(self, text: str) -> None:
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)
            _BoundedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


@dataclass
class Located:
    """Data plus, for each key path, the (file, line) it came from."""

    data: Any
    lines: dict[tuple, tuple[str, int]] = field(default_factory=dict)
    nodes: int = 0        # values after alias expansion


def display(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_bounded(path: Path, *, key: str = "", where: tuple[str, int | None] | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most MAX_FILE_BYTES. Never blocks on a FIFO and
    never reads a device. Problems are located at ``where`` (the ``extends:`` line) when given."""
    f, line = where or (str(path), None)

    def fail(what: str) -> ScenarioError:
        shown = "" if where is None else f"{path}: "
        return ScenarioError([Problem(f, line, key, shown + what)])

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"is {_kind(st.st_mode)}, expected a .yaml file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise fail("no such file") from None
    except ValueError:  # an embedded NUL byte
        raise fail("the file name contains a NUL byte") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)      # what was opened, not what was stat'ed (it may have been swapped)
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"is {_kind(st.st_mode)}, expected a .yaml file")
        if st.st_size > MAX_FILE_BYTES:
            raise fail(f"is {st.st_size} bytes; a scenario file may be at most {MAX_FILE_BYTES // 1024} KiB")
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, min(65536, MAX_FILE_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise fail(f"is over {MAX_FILE_BYTES // 1024} KiB; a scenario file may be at most "
                       f"{MAX_FILE_BYTES // 1024} KiB")
        return b"".join(chunks)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def decode(data: bytes, source: str) -> str:
    """UTF-8 text without control characters, or a located problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ScenarioError([Problem(source, line, "", f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                                     f"{exc.start}); save the file as UTF-8")]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    bad = _NON_PRINTABLE.search(text)
    if bad:
        i, c = bad.start(), ord(bad.group())
        line = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        raise ScenarioError([Problem(source, line, "", f"control character U+{c:04X} at column {col}; "
                                         "remove it (tabs and newlines are fine)")])
    return text


def _one_line(s: str) -> str:
    return " ".join(str(s).split())


def _yaml_problem(exc: yaml.YAMLError, source: str) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, _Bounded):
        return Problem(source, line, "", problem)
    tag = re.search(r"could not determine a constructor for the tag '(.*)'", problem, re.S)
    if tag:
        name = _one_line(tag.group(1)).replace("tag:yaml.org,2002:", "!!")[:80]
        return Problem(source, line, "", f"YAML tag '{name}' is not allowed in a scenario; remove it")
    context = getattr(exc, "context", None)
    if context and "while" not in context:
        problem = f"{context}: {problem}"
    return Problem(source, line, "", f"not valid YAML: {_one_line(problem)}")


def _loc_text(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def load_text(text: str, source: str) -> Located:
    """Compose (bounded), check scalars, construct. Raises ScenarioError."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise ScenarioError([_yaml_problem(exc, source)]) from None
        if node is None:
            raise ScenarioError([Problem(source, None, "", "the file is empty; a scenario needs at least 'name:'")])
        lines: dict[tuple, tuple[str, int]] = {}
        problems: list[Problem] = []

        def walk(n: Node, loc: tuple) -> None:
            lines.setdefault(loc, (source, n.start_mark.line + 1))
            if isinstance(n, MappingNode):
                for k, v in n.value:
                    key = k.value if isinstance(k, ScalarNode) else f"<{k.id} key>"
                    lines[loc + (key,)] = (source, k.start_mark.line + 1)
                    walk(v, loc + (key,))
            elif isinstance(n, SequenceNode):
                for i, v in enumerate(n.value):
                    lines[loc + (i,)] = (source, v.start_mark.line + 1)
                    walk(v, loc + (i,))
            elif isinstance(n, ScalarNode) and len(problems) < 20:
                if n.tag == _FLOAT_TAG:
                    try:
                        finite = math.isfinite(loader.construct_yaml_float(n))
                    except ValueError:
                        finite = False
                    if not finite:
                        problems.append(Problem(source, n.start_mark.line + 1, _loc_text(loc),
                                                f"must be a finite number (got {n.value[:40]})"))
                elif n.tag == _INT_TAG and len(n.value.lstrip("+-0").replace("_", "")) > MAX_INT_DIGITS:
                    problems.append(Problem(source, n.start_mark.line + 1, _loc_text(loc),
                                            f"number too large (got {len(n.value)} digits)"))

        walk(node, ())
        if problems:
            raise ScenarioError(problems)
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise ScenarioError([_yaml_problem(exc, source)]) from None
        except (ValueError, TypeError, RecursionError) as exc:  # a value the core constructors refuse
            raise ScenarioError([Problem(source, None, "", f"not valid YAML: {_one_line(exc)}")]) from None
        return Located(data, lines, loader._total)
    finally:
        loader.dispose()


def load_file(path: Path, *, key: str = "", where: tuple[str, int | None] | None = None) -> Located:
    source = str(display(path))
    return load_text(decode(read_bounded(path, key=key, where=where), source), source)
