"""Seeded generator of hostile scenario files, shared by tests/test_scenario_fuzz.py (a few hundred cases)
and benchmarks/fuzz_scenarios.py (thousands).

A case is a main file plus the files next to it (``extends:`` targets, a FIFO). Kinds: mutations of the
shipped scenarios (byte flips, YAML punctuation, anchors, tags, truncation), nesting and alias bombs,
unhashable keys, tags, non-finite and huge numbers, matrices, ``extends:`` to special files, bad encodings
and control characters, and wrong values at every known key path.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FIFO = object()          # marker: make a FIFO at this name


@dataclass
class Case:
    kind: str
    main: bytes
    extra: dict[str, object] = field(default_factory=dict)   # name -> bytes | FIFO

    def write(self, folder: Path, name: str = "case.yaml") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for rel, content in self.extra.items():
            p = folder / rel
            if content is FIFO:
                os.mkfifo(p)
            else:
                p.write_bytes(content)  # type: ignore[arg-type]
        path = folder / name
        path.write_bytes(self.main)
        return path


def _shipped() -> list[bytes]:
    return [p.read_bytes() for p in sorted((ROOT / "scenarios").glob("*.yaml"))]


def _shipped_files() -> dict[str, object]:
    """The shipped scenarios next to a mutated one, so that its ``extends:`` resolves."""
    return {p.name: p.read_bytes() for p in sorted((ROOT / "scenarios").glob("*.yaml"))}


_PUNCT = [b"[", b"]", b"{", b"}", b": ", b"- ", b"? ", b"&a ", b"*a", b"*b", b"&b ", b"!!python/object:os.system ",
          b"!!binary ", b"!foo ", b"<<: *a", b"---\n", b"...\n", b"|", b">", b"'", b'"', b"\t", b"%YAML 1.1\n",
          b"\x00", b"\x1b[31m", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\r", b"\n  ", b".inf", b"-.inf", b".nan",
          b"1e308", b"1e999", b"9" * 400, b"~", b"null", b"extends: ", b"matrix: "]

_KEYS = ["name", "steps", "cfg", "images", "batch_size", "resolutions", "seeds", "prompt", "prompt.tokens",
         "prompt.text", "prompt.file", "negative_prompt", "sampler", "sampler.name", "model.base", "model.refiner",
         "model.dtype", "model.clip_skip", "refiner.switch", "refiner.steps", "session.idle_after",
         "session.time_limit", "session.image_timeout", "session.load_timeout", "session.gpu_memory",
         "session.restart_worker_every", "probes.timeout", "probes.repetitions", "probes.during_every",
         "probes.display_wait", "probes.alpha", "probes.slowdown_ratio", "monitors.interval", "faults",
         "output.quality", "img2img.strength", "img2img.inputs", "extends", "matrix", "seeds.base"]

_VALUES = [0, -1, 1, 2**63, -(2**63), 10**30, 1e308, -1e308, float("inf"), float("-inf"), float("nan"), 1e-320,
           "", " ", "0", "1e308", "1e999", ".inf", "10m", "-10m", "99999999999d", "256x256", "0x0", "9999x9999",
           "64x64", "\u202e", "a" * 5000, [], {}, [[]], [{}], {"a": {"b": {"c": []}}}, None, True, False,
           ["256x256"] * 3, list(range(50)), {"text": "x", "tokens": 5}, {"tokens": 0}, {"base": -1},
           "/dev/zero", "/dev/urandom", "fifo", ".", "..", "missing.yaml", "case.yaml"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randint(0, len(b)) if b else 0
        if op < 0.3 and b:
            b[min(pos, len(b) - 1)] = rng.randint(0, 255)
        elif op < 0.7:
            b[pos:pos] = rng.choice(_PUNCT)
        elif op < 0.85:
            del b[pos:pos + rng.randint(1, 40)]
        else:
            lines = bytes(b).split(b"\n")
            i = rng.randrange(len(lines))
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
            b = bytearray(b"\n".join(lines))
    return bytes(b)


def _set(d: dict, dotted: str, value: object) -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def _value_case(rng: random.Random, shipped: list[bytes]) -> Case:
    base = rng.choice(shipped)
    data = yaml.safe_load(base) or {}
    data.pop("extends", None)
    for _ in range(rng.randint(1, 3)):
        _set(data, rng.choice(_KEYS), rng.choice(_VALUES))
    return Case("value", yaml.safe_dump(data, allow_unicode=rng.random() < 0.5).encode("utf-8", "surrogatepass"),
                {"demo-base.yaml": b"name: base\nsteps: 4\n"})


def _nesting(rng: random.Random) -> Case:
    depth = rng.choice([10, 31, 33, 100, 500, 1000, 5000])
    if rng.random() < 0.5:
        body = "[" * depth + "]" * depth
    else:
        body = "{a: " * depth + "1" + "}" * depth
    return Case("nesting", f"name: deep\nd: {body}\n".encode())


def _bomb(rng: random.Random) -> Case:
    levels, width = rng.randint(2, 12), rng.randint(2, 12)
    merge = rng.random() < 0.3
    lines = ["name: bomb"]
    if merge:
        lines.append("a0: &a0 {k: 1}")
        lines += [f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * width)}]}}" for i in range(1, levels)]
    else:
        lines.append("a0: &a0 [" + ", ".join(["x"] * width) + "]")
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    if rng.random() < 0.5:
        lines.append(f"resolutions: *a{levels - 1}")
    return Case("alias-bomb", ("\n".join(lines) + "\n").encode())


def _special(rng: random.Random) -> Case:
    choices = [
        ("self-alias", b"name: x\nl: &a [*a]\n"),
        ("self-alias", b"name: x\nm: &a {k: *a}\n"),
        ("undefined-alias", b"name: x\nsteps: *nope\n"),
        ("unhashable", b"name: x\n? [a, b]\n: 1\n"),
        ("unhashable", b"name: x\n{a: 1}: 2\n"),
        ("unhashable", b"name: x\nm: {[1]: 2}\n"),
        ("tag", b"name: x\nsteps: !!python/object/apply:os.system ['true']\n"),
        ("tag", b"name: x\nsteps:\n  !!python/name:os.system\n"),
        ("tag", b"name: x\ncfg: !custom 3\n"),
        ("tag", b"!!python/object:builtins.dict\nname: x\n"),
        ("empty", b""), ("empty", b"   \n\n"), ("empty", b"# only a comment\n"), ("empty", b"---\n...\n"),
        ("not-mapping", b"- a\n- b\n"), ("not-mapping", b"just a string\n"), ("not-mapping", b"42\n"),
        ("multi-doc", b"name: a\n---\nname: b\n"),
        ("encoding", b"name: caf\xe9\n"), ("encoding", b"\xff\xfen\x00a\x00"), ("encoding", b"name: x\n\x80\x81\n"),
        ("encoding", "name: é\n".encode("utf-16")), ("bom", b"\xef\xbb\xbfname: bom\nsteps: 2\n"),
        ("control", b"name: x\x00y\n"), ("control", b"name: x\nsteps: 3\x1b[2J\n"), ("control", b"\x07name: x\n"),
        ("numbers", b"name: x\nsession: {idle_after: 1e308}\n"), ("numbers", b"name: x\nprobes: {timeout: 1e308}\n"),
        ("numbers", b"name: x\nsession: {idle_after: .inf}\n"), ("numbers", b"name: x\nprobes: {timeout: .inf}\n"),
        ("numbers", b"name: x\ncfg: .nan\n"), ("numbers", b"name: x\nprompt: {tokens: 0}\n"),
        ("numbers", b"name: x\nsteps: " + b"9" * 5000 + b"\n"), ("numbers", b"name: x\ncfg: 1.0e+400\n"),
        ("numbers", b"name: x\nsession: {time_limit: 99999999999999999999d}\n"),
        ("numbers", b"name: x\nseeds: {base: 1, increment: 99999999999999999999999}\n"),
        ("numbers", b"name: x\nmonitors: {interval: .nan}\n"), ("numbers", b"name: x\nprobes: {alpha: nan}\n"),
        ("extends", b"name: x\nextends: ''\n"), ("extends", b"name: x\nextends: /dev/zero\n"),
        ("extends", b"name: x\nextends: /dev/urandom\n"), ("extends", b"name: x\nextends: .\n"),
        ("extends", b"name: x\nextends: /proc/self/mem\n"), ("extends", b"name: x\nextends: case.yaml\n"),
        ("extends", b"name: x\nextends: [a.yaml, b.yaml]\n"), ("extends", b"name: x\nextends: {a: 1}\n"),
        ("extends", b"name: x\nextends: missing.yaml\n"), ("extends", b"name: x\nextends: \"a\\0b\"\n"),
        ("extends", b"name: x\nextends: [" + b", ".join([b"a.yaml"] * 200) + b"]\n"),
    ]
    kind, main = rng.choice(choices)
    extra: dict[str, object] = {"a.yaml": b"name: a\nextends: b.yaml\n", "b.yaml": b"name: b\nsteps: 3\n"}
    if rng.random() < 0.2:
        extra["b.yaml"] = b"name: b\nextends: a.yaml\n"      # a cycle
    return Case(kind, main, extra)


def _fifo(rng: random.Random) -> Case:
    return Case("extends-fifo", b"name: x\nextends: fifo\n", {"fifo": FIFO})


def _matrix(rng: random.Random) -> Case:
    keys, vals = rng.randint(1, 24), rng.randint(1, 6)
    names = ["cfg", "steps", "model.dtype", "sampler.name", "batch_size", "images"] + [f"k{i}" for i in range(30)]
    body = "".join(f"  {names[i]}: [{', '.join(str(j + 1) for j in range(vals))}]\n" for i in range(keys))
    return Case("matrix", f"name: m\nsteps: 2\nmatrix:\n{body}".encode())


def _big(rng: random.Random) -> Case:
    size = rng.choice([100_000, 900_000, 1_100_000, 3_000_000])
    shape = rng.random()
    if shape < 0.3:
        body = "#" * size
    elif shape < 0.6:
        body = "resolutions: [" + ", ".join(["64x64"] * (size // 7)) + "]"
    else:
        body = "prompt: " + "x" * size
    return Case("big", f"name: big\n{body}\n".encode())


def cases(seed: int, n: int) -> list[Case]:
    """``n`` cases, the same ones for the same seed."""
    rng = random.Random(seed)
    shipped = _shipped()
    makers = [(0.35, lambda: Case("mutation", _mutate(rng, rng.choice(shipped)), _shipped_files())), (0.2, lambda: _value_case(rng, shipped)),
              (0.08, lambda: _nesting(rng)), (0.1, lambda: _bomb(rng)), (0.15, lambda: _special(rng)),
              (0.02, lambda: _fifo(rng)), (0.07, lambda: _matrix(rng)), (0.03, lambda: _big(rng))]
    out = []
    for _ in range(n):
        r, acc = rng.random(), 0.0
        for weight, make in makers:
            acc += weight
            if r < acc:
                out.append(make())
                break
        else:
            out.append(makers[0][1]())
    return out
