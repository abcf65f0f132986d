"""Redaction of everything a report or a bundle carries off the machine.

Reports are attached to public driver tickets, so by default nothing in them may identify the person or
the machine, or give away what they were generating:

- the user name, host name and home directory, wherever they appear (free text, paths, command lines,
  process names, journal lines), plus any other ``/home/<name>`` path;
- GPU UUIDs (``GPU-...``/``MIG-...``) and serial numbers, masked;
- prompts, replaced by ``<prompt sha256:0123456789ab tokens:N>`` unless the user asks to include them;
- secrets that tend to ride along in environment dumps (``*TOKEN*``, ``*SECRET*``, Hugging Face tokens).

The same rules work on structured data (:meth:`Redactor.obj`) and on raw JSON text
(:meth:`Redactor.json_text`), which is how journal lines are copied into a bundle without parsing
hundreds of thousands of events a second time.
"""
from __future__ import annotations

import getpass
import bisect
import hashlib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Iterable

USER_MASK = "<user>"
HOST_MASK = "<host>"
MACHINE_ID_MASK = "<machine-id>"
SERIAL_MASK = "<serial>"
SECRET_MASK = "<redacted>"
UUID_MASK = "GPU-<uuid>"

# Account names too generic to replace in free text: replacing "root" would garble kernel lines
# ("root filesystem") while protecting nobody. They are still masked in dedicated fields (user:, host:).
_GENERIC_NAMES = frozenset({"root", "user", "admin", "nobody", "ubuntu", "debian", "fedora", "arch",
                            "localhost", "linux", "desktop", "pc", "home", "test"})
_MIN_FREE_TEXT = 3          # shorter names are only masked in dedicated fields
_MIN_PROMPT_FREE_TEXT = 12  # shorter prompts ("cat") would hit ordinary words elsewhere

_UUID_RE = re.compile(r"\b(?:GPU|MIG)-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                      r"(?:/\d+/\d+)?")
# Other people's home directories (a shared machine, a copied path) are masked too.
_HOME_RE = re.compile(r"(?<![\w.-])(/(?:home|Users)/)(?!<user>)[^/\s\"'\\:;,)\]}<>]+")
_HF_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
_SECRET_KEY_RE = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|AUTH|COOKIE", re.I)
_PROMPT_KEYS = frozenset({"prompt", "negative_prompt", "prompt_text", "prompts", "prompt_2", "negative_prompt_2",
                          "parameters"})
_SERIAL_KEYS = frozenset({"serial", "board_serial", "serial_number", "board_serial_number"})
_UUID_KEYS = frozenset({"uuid", "gpu_uuid"})
_USER_KEYS = frozenset({"user", "username", "user_name", "login", "logname", "USER", "LOGNAME", "USERNAME"})
_HOST_KEYS = frozenset({"hostname", "host_name", "nodename", "HOSTNAME", "fqdn"})
_MACHINE_ID_KEYS = frozenset({"machine_id"})     # stress.hw.machine_id: stable per machine, so identifying
_HOME_KEYS = frozenset({"home", "HOME"})

# Raw JSON text: the value of a sensitive key, as the journal writes it ("key":"value"). One pattern per
# key, each starting with its literal key, so a 30 MB journal is searched quickly (and only when the
# key occurs at all).
def _json_key_res(keys: tuple[str, ...], value: str) -> list[tuple[str, re.Pattern]]:
    return [(f'"{k}"', re.compile(r'"(' + k + r')"(\s*:\s*)' + value)) for k in keys]


_JSON_STR = r'"((?:[^"\\]|\\.)*)"'
_JSON_PROMPT_RES = _json_key_res(("prompt", "negative_prompt", "prompt_text", "prompt_2", "negative_prompt_2",
                                  "parameters"), _JSON_STR)
_JSON_SERIAL_RES = _json_key_res(("serial", "board_serial", "serial_number", "board_serial_number"),
                                 r'("(?:[^"\\]|\\.)*"|-?\d+)')
_JSON_USER_RES = _json_key_res(("user", "username", "user_name", "login", "logname", "USER", "LOGNAME",
                                "USERNAME", "hostname", "nodename", "machine_id"), _JSON_STR)
# The keyed rules of Redactor.obj, for JSON text that is not parsed (the journal copy).
_JSON_UUID_RES = _json_key_res(("uuid", "gpu_uuid"), _JSON_STR)
_JSON_HOME_RES = _json_key_res(("home", "HOME"), _JSON_STR)
_JSON_SECRET_RE = re.compile(r'"([A-Za-z0-9_.-]*(?:TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|AUTH|COOKIE)[A-Za-z0-9_.-]*)"'
                             r'(\s*:\s*)' + _JSON_STR, re.I)


_NUMERIC_TYPES = frozenset({int, float, type(None)})   # a numeric series' item types (checked in one C loop)
_SECRET_WORDS = ("token", "secret", "passw", "credential", "apikey", "api_key", "auth", "cookie")


def _line_starts(s: str) -> list[int]:
    return [0, *(m.end() for m in re.finditer("\n", s))]


def _lines_holding(s: str, needles: Iterable[str], starts: list[int]) -> set[int]:
    """Indexes of the lines of ``s`` (``starts``: their offsets) that contain any of ``needles``."""
    out: set[int] = set()
    for needle in needles:
        if not needle:
            continue
        pos = s.find(needle)
        while pos >= 0:
            i = bisect.bisect_right(starts, pos) - 1
            out.add(i)
            nxt = starts[i + 1] if i + 1 < len(starts) else len(s)   # on to the next line
            pos = s.find(needle, max(nxt, pos + 1))
    return out


_COVER_PREFIX = 40   # a needle longer than this is looked for by its first 40 characters


def covering_needles(needles: Iterable[str]) -> list[str]:
    """Fewer, lower-cased needles whose lines, found in the lower-cased text, include every line that
    holds one of ``needles``: each needle lower-cased (the caller's text must lower-case to the same
    length, so that offsets line up), cut to its first 40 characters, and dropped when another needle
    is a substring of it. Finding a superset of the lines is exact here, because every rule that edits
    a line first tests that one of the needles is in it: a line selected only by a shorter needle
    comes back unchanged. 53 scans of the benchmark's 30 MB journal copy became 29 (the prompts'
    common beginnings, upper- and lower-case keys, keys sharing an ending, /home/<user> under /home/)."""
    cut = {n.lower()[:_COVER_PREFIX] for n in needles if n}
    by_len = sorted(cut, key=len)
    kept: list[str] = []
    for n in by_len:
        if not any(k in n for k in kept):
            kept.append(n)
    return kept


def count_tokens(text: str) -> int:
    """Estimate of CLIP tokens: words and punctuation marks (CLIP's BPE splits rare words further)."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def prompt_digest(text: str, tokens: int | None = None) -> dict:
    """What a report keeps of a prompt: its sha256 and its length in tokens."""
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "tokens": tokens if isinstance(tokens, int) else count_tokens(text),
            "tokens_estimated": not isinstance(tokens, int),
            "chars": len(text)}


def prompt_placeholder(text: str) -> str:
    d = prompt_digest(text)
    return f"<prompt sha256:{d['sha256'][:12]} tokens:{d['tokens']}>"


class Redactor:
    """Masks identifying strings. Build one per run with :meth:`for_run`; ``enabled=False`` passes through."""

    def __init__(self, *, users: Iterable[str] = (), hosts: Iterable[str] = (), homes: Iterable[str] = (),
                 serials: Iterable[str] = (), prompts: Iterable[str] = (), include_prompts: bool = False,
                 enabled: bool = True, machine_ids: Iterable[str] = ()):
        self.enabled = enabled
        self.include_prompts = include_prompts
        self.users = {u for u in users if isinstance(u, str) and u.strip()}
        self.hosts: set[str] = set()
        for h in hosts:
            if isinstance(h, str) and h.strip():
                self.hosts.add(h)
                self.hosts.add(h.split(".")[0])       # the short name appears in prompts and logs
        self.homes = {h.rstrip("/") for h in homes if isinstance(h, str) and len(h.rstrip("/")) > 1}
        self.serials = {str(s) for s in serials if s not in (None, "") and len(str(s)) >= 4
                        and str(s).lower() not in ("n/a", "none", "unknown", "[n/a]")}
        self.machine_ids = {m for m in machine_ids if isinstance(m, str) and len(m) >= 8}
        self.prompts: dict[str, str] = {}
        for p in prompts:
            self.add_prompt(p)
        self._compile()

    # ---- construction ----
    @classmethod
    def for_run(cls, *, environment: dict | None = None, extra_serials: Iterable[str] = (),
                prompts: Iterable[str] = (), include_prompts: bool = False, this_machine: bool = True,
                enabled: bool = True) -> "Redactor":
        """Names from the run's environment.json plus, by default, the machine writing the report."""
        users, hosts, homes = set(), set(), set()
        env = environment if isinstance(environment, dict) else {}
        host = env.get("host") if isinstance(env.get("host"), dict) else {}
        users.add(host.get("user"))
        hosts.add(host.get("hostname"))
        machine_ids = {host.get("machine_id")}
        homes.add(host.get("home"))
        for k in ("HOME",):
            homes.add((env.get("env_vars") or {}).get(k) if isinstance(env.get("env_vars"), dict) else None)
        if this_machine:
            for fn in (getpass.getuser, lambda: os.environ.get("USER"), lambda: os.environ.get("LOGNAME")):
                try:
                    users.add(fn())
                except Exception:  # noqa: BLE001 - no passwd entry in a container: nothing to mask
                    pass
            from stress.hw.machine_id import machine_id

            machine_ids.add(machine_id())
            try:
                hosts.add(socket.gethostname())
                hosts.add(socket.getfqdn())
            except OSError:
                pass
            try:
                homes.add(str(Path.home()))
            except (RuntimeError, KeyError):
                pass
        serials = set(extra_serials)
        serials.update(_find_key_values(env, _SERIAL_KEYS))
        r = cls(users=[u for u in users if u], hosts=[h for h in hosts if h], homes=[h for h in homes if h],
                serials=serials, prompts=prompts, include_prompts=include_prompts, enabled=enabled,
                machine_ids=[m for m in machine_ids if m])
        return r

    def add_prompt(self, text: Any) -> None:
        if isinstance(text, str) and text.strip() and text not in self.prompts:
            self.prompts[text] = prompt_placeholder(text)
            self._compiled = False

    def _compile(self) -> None:
        subs: list[tuple[re.Pattern, str, str]] = []   # (pattern, replacement, presence probe)
        # Longest first, so /home/alice/x is taken as a home path before "alice" is taken as a name.
        for home in sorted(self.homes, key=len, reverse=True):
            subs.append((re.compile(re.escape(home) + r"(?![\w.-])"), "~", home))
        for name in sorted(self.users, key=len, reverse=True):
            if len(name) >= _MIN_FREE_TEXT and name.lower() not in _GENERIC_NAMES:
                subs.append((re.compile(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])"), USER_MASK, name))
        for name in sorted(self.hosts, key=len, reverse=True):
            if len(name) >= _MIN_FREE_TEXT and name.lower() not in _GENERIC_NAMES:
                subs.append((re.compile(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])"), HOST_MASK, name))
        for s in sorted(self.serials, key=len, reverse=True):
            subs.append((re.compile(r"(?<![\w-])" + re.escape(s) + r"(?![\w-])"), SERIAL_MASK, s))
        for m in sorted(self.machine_ids, key=len, reverse=True):
            subs.append((re.compile(r"(?<![\w-])" + re.escape(m) + r"(?![\w-])"), MACHINE_ID_MASK, m))
        self._subs = subs
        # Prompts: the raw text and its JSON-escaped forms (how it appears inside a journal line).
        psubs: list[tuple[str, str]] = []
        if not self.include_prompts:
            for text, ph in self.prompts.items():
                if len(text) < _MIN_PROMPT_FREE_TEXT:
                    continue
                forms = {text, json.dumps(text, ensure_ascii=False)[1:-1], json.dumps(text)[1:-1]}
                for f in forms:
                    psubs.append((f, ph))
            psubs.sort(key=lambda x: len(x[0]), reverse=True)
        self._psubs = psubs
        self._compiled = True

    # ---- strings ----
    def text(self, s: str) -> str:
        """Mask every identifying substring of ``s``."""
        if not self.enabled or not s:
            return s
        if not self._compiled:
            self._compile()
        for literal, ph in self._psubs:
            if literal in s:
                s = s.replace(literal, ph)
        for pat, repl, probe in self._subs:
            if probe in s:              # a cheap substring test keeps big texts fast
                s = pat.sub(repl, s)
        if "/home/" in s or "/Users/" in s:
            s = _HOME_RE.sub(r"\1" + USER_MASK, s)
        if "GPU-" in s or "MIG-" in s:
            s = _UUID_RE.sub(UUID_MASK, s)
        if "hf_" in s:
            s = _HF_TOKEN_RE.sub(SECRET_MASK, s)
        return s

    def prompt(self, value: Any) -> Any:
        """A prompt field's replacement (the text itself when prompts are included)."""
        if not self.enabled or self.include_prompts:
            return value
        if isinstance(value, str):
            return prompt_placeholder(value) if value else value
        if isinstance(value, list):
            return [self.prompt(v) for v in value]
        return value

    # ---- structured data ----
    def obj(self, o: Any, _key: str | None = None) -> Any:
        """A copy of ``o`` with every string masked and sensitive keys replaced."""
        if not self.enabled:
            return o
        if isinstance(o, str):
            if _key is not None:
                if _key in _PROMPT_KEYS:
                    return self.prompt(o)
                if _key in _SERIAL_KEYS:
                    return SERIAL_MASK if o else o
                if _key in _UUID_KEYS:
                    return UUID_MASK if o else o
                if _key in _USER_KEYS:
                    return USER_MASK if o else o
                if _key in _HOST_KEYS:
                    return HOST_MASK if o else o
                if _key in _MACHINE_ID_KEYS:
                    return MACHINE_ID_MASK if o else o
                if _key in _HOME_KEYS:
                    return "~" if o else o
                if _SECRET_KEY_RE.search(_key):
                    return SECRET_MASK if o else o
            return self.text(o)
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                nk = self.text(k) if isinstance(k, str) else k
                if isinstance(k, str) and k in _SERIAL_KEYS and v not in (None, ""):
                    out[nk] = SERIAL_MASK
                elif isinstance(k, str) and k in _PROMPT_KEYS and isinstance(v, list):
                    out[nk] = self.prompt(v)
                else:
                    out[nk] = self.obj(v, k if isinstance(k, str) else None)
            return out
        if isinstance(o, (list, tuple)):
            # Long numeric series (the timeline) pass through without a per-item call.
            if o and isinstance(o[0], (int, float)) and (set(map(type, o)) <= _NUMERIC_TYPES or all(
                    isinstance(x, (int, float)) or x is None for x in o)):
                return list(o)
            return [self.obj(v, _key) for v in o]
        return o

    # ---- raw JSON text (journal lines) ----
    def json_text(self, s: str) -> str:
        """Redact JSON-lines text without parsing it: keyed values first, then the free-text rules.
        Only the lines that hold a key or a literal to mask are touched (found with ``str.find`` over the
        whole text, which is fast): a 30 MB journal is not run through a dozen regexes."""
        if not self.enabled or not s:
            return s
        low = s.lower()
        key_probes = [probe for probe, _ in (*_JSON_PROMPT_RES, *_JSON_SERIAL_RES, *_JSON_USER_RES,
                                             *_JSON_UUID_RES, *_JSON_HOME_RES)]
        if self.include_prompts:
            key_probes = key_probes[len(_JSON_PROMPT_RES):]
        if len(low) != len(s):     # lower() changed lengths (rare non-ASCII): offsets do not line up
            return "\n".join(self._json_line(line) for line in s.split("\n"))
        lines = s.split("\n")
        starts = _line_starts(s)
        # A key probe '"k"' is looked for as 'k"', so "prompt" and "negative_prompt" are one scan.
        needles = [*(p[1:] for p in key_probes), *_SECRET_WORDS, *self._probes()]
        todo = _lines_holding(low, covering_needles(needles), starts)
        for i in sorted(todo):
            lines[i] = self.text(self._json_line(lines[i]))
        return "\n".join(lines)

    def _json_line(self, s: str) -> str:
        if not self.include_prompts:
            for probe, pat in _JSON_PROMPT_RES:
                if probe in s:
                    s = pat.sub(self._json_prompt_sub, s)
        for probe, pat in _JSON_SERIAL_RES:
            if probe in s:
                s = pat.sub(lambda m: f'"{m.group(1)}"{m.group(2)}"{SERIAL_MASK}"'
                            if m.group(3) not in ('""', "null") else m.group(0), s)
        for probe, pat in _JSON_USER_RES:
            if probe in s:
                s = pat.sub(self._json_user_sub, s)
        for rules, mask in ((_JSON_UUID_RES, UUID_MASK), (_JSON_HOME_RES, "~")):
            for probe, pat in rules:
                if probe in s:
                    s = pat.sub(lambda m, mask=mask: f'"{m.group(1)}"{m.group(2)}"{mask}"' if m.group(3) else m.group(0), s)
        if any(w in s.lower() for w in _SECRET_WORDS):
            s = _JSON_SECRET_RE.sub(lambda m: f'"{m.group(1)}"{m.group(2)}"{SECRET_MASK}"' if m.group(3) else m.group(0), s)
        return s

    def _probes(self) -> list[str]:
        if not self._compiled:
            self._compile()
        return [lit for lit, _ in self._psubs] + [probe for _, _, probe in self._subs] + \
            ["/home/", "/Users/", "GPU-", "MIG-", "hf_"]

    def text_lines(self, s: str) -> str:
        """:meth:`text` for a big multi-line text: only the lines that hold something to mask are
        touched (whole-text regexes without a literal prefix would scan every byte of a 30 MB journal)."""
        if not self.enabled or not s:
            return s
        todo = _lines_holding(s, self._probes(), _line_starts(s))
        if not todo:
            return s
        lines = s.split("\n")
        for i in sorted(todo):
            lines[i] = self.text(lines[i])
        return "\n".join(lines)

    def _json_prompt_sub(self, m: re.Match) -> str:
        raw = m.group(3)
        if not raw:
            return m.group(0)
        try:
            value = json.loads('"' + raw + '"')
        except ValueError:
            value = raw
        return f'"{m.group(1)}"{m.group(2)}"{prompt_placeholder(value)}"'

    @staticmethod
    def _json_user_sub(m: re.Match) -> str:
        if not m.group(3):
            return m.group(0)
        mask = {"hostname": HOST_MASK, "nodename": HOST_MASK, "machine_id": MACHINE_ID_MASK}.get(m.group(1), USER_MASK)
        return f'"{m.group(1)}"{m.group(2)}"{mask}"'

    def summary(self) -> dict:
        """What was masked, for report.json (counts and kinds only, never the values)."""
        return {"enabled": self.enabled, "prompts_included": self.include_prompts,
                "masked": ["user name", "host name", "machine id", "home directory", "GPU UUIDs", "GPU serial numbers",
                           "secrets (*TOKEN*, *SECRET*, hf_...)"]
                + ([] if self.include_prompts else ["prompts (sha256 and token count kept)"])
                if self.enabled else [],
                "prompts_known": len(self.prompts)}


def _find_key_values(o: Any, keys: frozenset[str], depth: int = 0) -> set[str]:
    """Every scalar value stored under one of ``keys`` anywhere in ``o``."""
    found: set[str] = set()
    if depth > 12:
        return found
    if isinstance(o, dict):
        for k, v in o.items():
            if k in keys and isinstance(v, (str, int)) and not isinstance(v, bool):
                found.add(str(v))
            else:
                found |= _find_key_values(v, keys, depth + 1)
    elif isinstance(o, list):
        for v in o:
            found |= _find_key_values(v, keys, depth + 1)
    return found
