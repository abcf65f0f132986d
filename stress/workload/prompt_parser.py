"""Prompt attention parsing and per-encoder prompt splitting, as SD.Next does them.

Ported from SD.Next (github.com/vladmandic/sdnext, commit 058a7f0c, July 2026):
``modules/prompt_parser.py`` (``parse_prompt_attention``, lines 28-78 and 284-403) and
``modules/prompt_parser_diffusers.py`` (``split_prompts``, lines 576-606). Three modes:

- ``native``: SD.Next's default (``prompt_attention: native``, ``modules/ui_definitions.py:226``).
  A newline is a BREAK (``sd_textencder_linebreak``, default on), ``##`` is a BREAK marker, weights
  are rounded to 3 decimals at every multiplication, each text fragment loses its leading non-word
  characters and has its whitespace collapsed, a weight needs ``:`` directly before the number and
  ``)`` directly after (``(red: 1.3)`` is the text ``red 1.3`` at 1.1), a bare ``:`` is dropped,
  ``\\:`` escapes a colon, and fragments of equal weight are joined with a space after a letter or
  digit.
- ``a1111``: SD.Next's ``prompt_attention: a1111``: A1111's token list (``re_attention_v1``), no
  newline handling, no cleaning, fragments joined without a separator, but SD.Next's rounding and
  its weight syntax without spaces.
- ``webui``: the original AUTOMATIC1111 webui parser (unrounded weights, ``(red: 1.3)`` is a weight),
  which this suite used before it modelled SD.Next's modes.

Every mode turns ``BREAK`` into a ``["BREAK", -1]`` marker. Pure Python: the supervisor and the
planner import this module.
"""
from __future__ import annotations

import re

from stress.errors import StressError

MODES = ("native", "a1111", "webui")

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# SD.Next modules/prompt_parser.py:46-48
_RE_CLEAN = re.compile(r"^\W+", re.S)
_RE_WHITESPACE = re.compile(r"\s+", re.S)
_RE_BREAK_SDNEXT = re.compile(r"\s*\bBREAK\b|##\s*", re.S)
# SD.Next modules/prompt_parser.py:49-63. The last alternative is empty (the pattern ends in "|"):
# it matches nothing at a ":" that starts no weight, so the colon is skipped.
_RE_ATTENTION_V2 = re.compile(r"""
\\\(             |
\\\)             |
\\\:             |
\\\[             |
\\\]             |
\\\\             |
\\               |
\(               |
\[               |
:([+-]?[.\d]+)\) |
\)               |
\]               |
[^\\()\[\]:]+    |
""", re.X)
# SD.Next modules/prompt_parser.py:64-78
_RE_ATTENTION_V1 = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:([+-]?[.\d]+)\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)
# The AUTOMATIC1111 webui's own pattern (modules/prompt_parser.py there): spaces allowed around the weight.
_RE_ATTENTION_WEBUI = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)
_RE_BREAK_WEBUI = re.compile(r"\s*\bBREAK\b\s*", re.S)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise StressError(f"unknown prompt attention parser {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def parse_prompt_attention(text: str, mode: str = "native", linebreak: bool = True) -> list[list]:
    """``text`` -> ``[[fragment, weight], ...]``, with ``["BREAK", -1]`` markers.

    ``native``: ``"a (red:1.2) [cat]"`` -> ``[["a", 1.0], ["red", 1.2], ["cat", 0.909]]``;
    ``webui``: ``[["a ", 1.0], ["red", 1.2], [" ", 1.0], ["cat", 0.9090909090909091]]``.
    ``linebreak`` is SD.Next's ``sd_textencder_linebreak`` (native only): newline -> BREAK, else a space."""
    check_mode(mode)
    if mode == "webui":
        return _parse_webui(text)
    native = mode == "native"
    if native:
        text = text.replace("\n", " BREAK " if linebreak else " ")
        pattern, joiner = _RE_ATTENTION_V2, " "
    else:
        pattern, joiner = _RE_ATTENTION_V1, ""
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] = round(res[p][1] * multiplier, 3)

    for m in pattern.finditer(text):
        section, weight = m.group(0), m.group(1)
        if not section:
            continue
        if section.startswith("\\"):
            # SD.Next appends an escaped character to the fragment before it unless a space precedes it
            # (text[-1] at position 0, as SD.Next indexes it).
            if res and text[m.start() - 1] != " ":
                res[-1][0] += section[1:]
            else:
                res.append([section[1:], 1.0])
        elif section == "(":
            round_brackets.append(len(res))
        elif section == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            try:
                w = float(weight)
            except ValueError:  # SD.Next logs the section and skips it ("(a:1.2.3)", "(a:.)")
                continue
            multiply_range(round_brackets.pop(), w)
        elif section == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND_MULTIPLIER)
        elif section == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_RE_BREAK_SDNEXT.split(section)):
                if i > 0:
                    res.append(["BREAK", -1])
                if native:
                    part = _RE_WHITESPACE.sub(" ", _RE_CLEAN.sub("", part)).strip()
                    if not part:
                        continue
                res.append([part, 1.0])
    for pos in round_brackets:
        multiply_range(pos, ROUND_MULTIPLIER)
    for pos in square_brackets:
        multiply_range(pos, SQUARE_MULTIPLIER)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            # SD.Next indexes [-1] unguarded (an empty fragment, from a lone "\", raises there).
            sep = joiner if res[i][0][-1:].isalnum() else ""
            res[i][0] += sep + res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


def _parse_webui(text: str) -> list[list]:
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for m in _RE_ATTENTION_WEBUI.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            res.append([tok[1:], 1.0])
        elif tok == "(":
            round_brackets.append(len(res))
        elif tok == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            try:
                w = float(weight)
            except ValueError:
                raise StressError(f"prompt: the attention weight {weight!r} at character {m.start()} is not "
                                  "a number (write it like (word:1.2))") from None
            multiply_range(round_brackets.pop(), w)
        elif tok == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND_MULTIPLIER)
        elif tok == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_RE_BREAK_WEBUI.split(tok)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_brackets:
        multiply_range(pos, ROUND_MULTIPLIER)
    for pos in square_brackets:
        multiply_range(pos, SQUARE_MULTIPLIER)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


def break_sections(pairs: list[list]) -> list[tuple[list[str], list[float]]]:
    """The BREAK sections of parsed pairs, each as (fragments, weights), as SD.Next walks them
    (``prompt_parser_diffusers.py:671-684``): split at fragments that are exactly ``BREAK``, and a
    section with no fragments is skipped."""
    frags = [p[0] for p in pairs] + ["BREAK"]
    weights = [float(p[1]) for p in pairs] + [-1.0]
    out = []
    while "BREAK" in frags:
        pos = frags.index("BREAK")
        if pos > 0:
            out.append((frags[:pos], weights[:pos]))
        frags, weights = frags[pos + 1:], weights[pos + 1:]
    return out


def sections_with_weights(text: str, mode: str = "native") -> list[tuple[list[str], list[float]]]:
    """The BREAK sections of a prompt, each as (fragments, weights)."""
    return break_sections(parse_prompt_attention(text, mode))


def negative_sections(text: str, mode: str = "native") -> list[tuple[list[str], list[float]]]:
    """SD.Next: "negative prompt has no keywords": all its fragments at once, BREAK markers included."""
    pairs = parse_prompt_attention(text, mode)
    return [([p[0] for p in pairs], [float(p[1]) for p in pairs])]


def _split_once(text: str, marker: str) -> tuple[str, str]:
    parts = text.split(marker)
    if len(parts) != 2:  # SD.Next unpacks two values: a second marker raises there
        raise StressError(f"prompt: {marker!r} appears {len(parts) - 1} times; SD.Next accepts it once "
                          f"(text before it is for the first encoder, text after it for that one)")
    return parts[0], parts[1]


def split_prompts(prompt: str) -> tuple[str, str, str, str]:
    """SD.Next's ``split_prompts`` (``prompt_parser_diffusers.py:576-606``, not SD3): the text for
    each text encoder. ``"a cat TE2: a dog"`` -> ``("a cat", "a dog", "a cat", "a cat")``; without
    ``TE2:`` every encoder gets the whole (stripped) prompt; an empty part is ``" "``."""
    if "TE2:" in prompt:
        prompt, prompt2 = _split_once(prompt, "TE2:")
    else:
        prompt2 = prompt
    if "TE3:" in prompt:
        prompt, prompt3 = _split_once(prompt, "TE3:")
    elif "TE3:" in prompt2:
        prompt2, prompt3 = _split_once(prompt2, "TE3:")
    else:
        prompt3 = prompt
    if "TE4:" in prompt:
        prompt, prompt4 = _split_once(prompt, "TE4:")
    elif "TE4:" in prompt2:
        prompt2, prompt4 = _split_once(prompt2, "TE4:")
    elif "TE4:" in prompt3:
        prompt3, prompt4 = _split_once(prompt3, "TE4:")
    else:
        prompt4 = prompt
    prompt = prompt.strip()
    prompt2 = " " if prompt2.strip() == "" else prompt2.strip()
    prompt3 = " " if prompt3.strip() == "" else prompt3.strip()
    prompt4 = " " if prompt4.strip() == "" else prompt4.strip()
    return prompt, prompt2, prompt3, prompt4
