"""Scenario files: YAML -> validated :class:`Scenario`.

Loaded with a safe loader; every key keeps the file and line it came from, so that every problem is
reported at once as ``file:line: key.path: what is wrong (got X)``. ``extends:`` stacks a scenario on
others (deep merge, cycles detected); ``matrix:`` expands one scenario into a named sweep.
"""
from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from stress.workload.models import BUILTINS
from stress.errors import Problem, ScenarioError
from stress.experiment import EnvName, EnvVar, SettingSpec, parse_env, set_matrix_value
from stress.scenario_files import check_files as _check_files
from stress.hw.config import MonitorsConfig
from stress.cycles import CycleSpec, check_images as _check_cycles
from stress.probes.config import ProbesConfig
from stress import yamlsafe
from stress.yamlsafe import Located

SCHEMA_VERSION = 1

# Samplers selectable by name. The default is DPM++ 2M Karras exactly as SD.Next configures it.
SAMPLERS = (
    "dpmpp_2m_karras", "dpmpp_2m", "dpmpp_sde_karras", "euler", "euler_a", "ddim", "unipc", "heun",
    "lms", "pndm", "ddpm",
)
BUILTIN_MODELS = tuple(BUILTINS)      # the names the worker can build (stress.workload.models)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 30 * 86400


def parse_duration(value: Any) -> float:
    """``90``, ``"90s"``, ``"10m"``, ``"2h"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90, '90s', '10m' or '2h'")
    if isinstance(value, (int, float)):
        secs = float(value) if abs(value) < 1e300 else math.inf
    else:
        m = _DURATION.match(str(value)) if isinstance(value, str) and len(value) < 40 else None
        if not m:
            raise ValueError("expected a duration like 90, '90s', '10m' or '2h'")
        secs = float(m.group(1)) * _UNITS[m.group(2)]
    if secs <= 0:
        raise ValueError("must be positive")
    if not math.isfinite(secs) or secs > MAX_DURATION_S:
        raise ValueError("must be at most 30 days ('30d')")
    return secs


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    base: str = Field("builtin:tiny-sdxl", description=(
        "builtin:tiny-sdxl | builtin:sdxl | a local diffusers folder | a single .safetensors checkpoint"))
    refiner: str | None = Field(None, description="same forms as base; null for no refiner")
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    clip_skip: int = Field(1, ge=1, le=12, description="as SD.Next: 1 takes the penultimate layer for SDXL")
    vae: Literal["default", "tiny"] = Field("default", description=(
        "default: the model's AutoencoderKL; tiny: diffusers' AutoencoderTiny (TAESD architecture, random "
        "weights: a tiny config for the tiny built-ins, the published TAESD config otherwise)"))
    safety_checker: bool = Field(False, description=(
        "SD 1.x: load the safety checker + feature extractor a default diffusers pipeline loads, and run "
        "it on every decoded image (diffusers keeps it on the GPU under model offload)"))

    @field_validator("base", "refiner")
    @classmethod
    def _known_source(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v.startswith("builtin:") and v not in BUILTIN_MODELS:
            close = difflib.get_close_matches(v, BUILTIN_MODELS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; choose one of {', '.join(BUILTIN_MODELS)}"
            raise ValueError(f"unknown built-in model{hint}")
        return v


class SamplerSpec(_Strict):
    name: str = "dpmpp_2m_karras"

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SAMPLERS:
            close = difflib.get_close_matches(v, SAMPLERS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(SAMPLERS)}"
            raise ValueError(f"unknown sampler; {hint}")
        return v


class RefinerSpec(_Strict):
    switch: float = Field(0.8, gt=0, lt=1, description="fraction of denoising done by the base")
    steps: int | None = Field(None, ge=1, le=1000, description="refiner steps; default: same as steps")
    semantics: Literal["sdnext", "diffusers"] = Field("sdnext", description=(
        "sdnext: the base is called with steps//switch+1 steps and denoising_end=switch, the refiner "
        "with refiner_steps//(1-switch)//2+1 and denoising_start=switch (as SD.Next); diffusers: one "
        "schedule of `steps` split at `switch`"))


class PromptSpec(_Strict):
    """Exactly one of text, file, tokens."""

    text: str | None = None
    file: str | None = None
    tokens: int | None = Field(None, ge=1, le=20000, description="generate exactly this many tokens")
    seed: int = Field(0, description="seed of the generated prompt's word choice")
    breaks_every: int | None = Field(None, ge=1, le=20000, description="insert BREAK every N tokens (generated prompts)")

    @model_validator(mode="after")
    def _one_source(self) -> "PromptSpec":
        given = [k for k in ("text", "file", "tokens") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, file or tokens"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


class SeedsSpec(_Strict):
    base: int = Field(..., ge=0, lt=2**63)
    increment: int = Field(1, ge=-(2**62), le=2**62)


class Img2ImgSpec(_Strict):
    inputs: str | None = Field(None, description="folder of input images; default: generated test patterns")
    strength: float = Field(0.6, gt=0, le=1)


class Optimizations(_Strict):
    attention: Literal["sdpa", "math", "sliced"] = "sdpa"
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False
    sequential_offload: bool = Field(False, description=(
        "enable_sequential_cpu_offload: every leaf module's weights go to the GPU only while it runs "
        "(distinct from cpu_offload, which moves whole models)"))
    precomputed_embeds: bool = Field(False, description=(
        "encode the prompts on the CPU and pass prompt_embeds: the text encoders never go to the GPU"))


class SessionSpec(_Strict):
    restart_worker_every: int = Field(0, ge=0, le=1_000_000, description="fresh worker every K images; 0: one long-lived worker")
    reload_models_every: int = Field(0, ge=0, le=1_000_000, description="reload the models every K images; 0: never")
    time_limit: float | None = Field(None, le=MAX_DURATION_S, description="stop the run after this long (e.g. '8h'); at most 30 days")
    image_timeout: float = Field(900.0, le=86400, description="watchdog: kill a worker stuck this long on one image; at most 1 day")
    load_timeout: float = Field(1800.0, le=86400, description="watchdog for loading models; at most 1 day")
    on_failure: Literal["continue", "stop"] = "continue"
    idle_after: float = Field(0.0, ge=0, le=86400, description="seconds the worker stays idle after the last image; at most 1 day")
    on_predicted_oom: Literal["run", "skip"] = Field("run", description=(
        "run: run every image, also those `gpu-stress plan` predicts will not fit (reproduces the OOM "
        "path); skip: record them as skipped without running them"))
    gpu_memory: str | None = Field(None, description="GPU memory the preflight compares with (e.g. '24GiB'); "
                                   "default: what NVML reports")

    @field_validator("gpu_memory")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB|K|M|G|T)?\s*", v, re.I):
            raise ValueError("expected a size like '24GiB' or '16000MiB'")
        return v

    @field_validator("time_limit", "image_timeout", "load_timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)


class FaultSpec(_Strict):
    """Inject a fault at one image, to check the harness records it (and that a setup works)."""

    image: int = Field(..., ge=0, le=1_000_000, description="index of the image the fault hits")
    kind: Literal["crash", "hang", "oom", "error", "exit", "drop-env"] = Field(..., description=(
        "crash: the worker dies of SIGSEGV; hang: it stops responding; oom: torch.OutOfMemoryError; "
        "error: a Python exception; exit: the worker exits with status 3; drop-env: the worker that "
        "starts for this image is launched without the variable `env` (a launcher losing a setting)"))
    env: str | None = Field(None, description="drop-env: the variable (of the scenario's env) to leave out")

    @model_validator(mode="after")
    def _env_only_for_drop(self) -> "FaultSpec":
        if (self.kind == "drop-env") != (self.env is not None):
            raise ValueError("give env: NAME with kind drop-env, and only with it")
        return self


class OutputSpec(_Strict):
    format: Literal["jpg", "png"] = "jpg"
    quality: int = Field(92, ge=1, le=100)


def _parse_resolution(item: Any) -> Any:
    if isinstance(item, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", item)
        if not m:
            raise ValueError("is not WIDTHxHEIGHT (e.g. 1152x1536)")
        return (int(m.group(1)), int(m.group(2)))
    return item


def _check_resolution(v: tuple[int, int]) -> tuple[int, int]:
    w, h = v
    if w < 64 or h < 64 or w > 8192 or h > 8192:
        raise ValueError(f"{w}x{h} is outside 64..8192")
    if w % 8 or h % 8:
        raise ValueError(f"{w}x{h} is not divisible by 8 (the VAE downsamples by 8); try {w - w % 8}x{h - h % 8}")
    return v


Resolution = Annotated[tuple[int, int], BeforeValidator(_parse_resolution), AfterValidator(_check_resolution)]


class Scenario(_Strict):
    schema_version: int = SCHEMA_VERSION
    name: str = Field(..., min_length=1, max_length=200)
    description: str = ""
    workload: Literal["sdxl", "sd15-img2img", "sd15-txt2img"] = "sdxl"
    model: ModelSpec = Field(default_factory=ModelSpec)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    steps: int = Field(38, ge=1, le=1000)
    cfg: float = Field(6.8, ge=0, le=50)
    refiner: RefinerSpec = Field(default_factory=RefinerSpec)
    images: int = Field(1, ge=1, le=1_000_000)
    batch_size: int = Field(1, ge=1, le=64)
    resolutions: list[Resolution] = Field(default_factory=lambda: [(1024, 1024)], min_length=1)
    seeds: Union[int, list[int], SeedsSpec] = 0
    prompt: PromptSpec = Field(default_factory=lambda: PromptSpec(text="a photograph of a lighthouse"))
    negative_prompt: PromptSpec = Field(default_factory=lambda: PromptSpec(text=""))
    prompt_attention: Literal["native", "a1111", "webui"] | None = Field(None, description=(
        "prompt parser: native (SD.Next's default), a1111 (SD.Next's a1111 option) or webui (the "
        "AUTOMATIC1111 webui's); default: native under refiner.semantics sdnext, webui under diffusers"))
    img2img: Img2ImgSpec = Field(default_factory=Img2ImgSpec)
    optimizations: Optimizations = Field(default_factory=Optimizations)
    session: SessionSpec = Field(default_factory=SessionSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    monitors: MonitorsConfig = Field(default_factory=MonitorsConfig)
    faults: list[FaultSpec] = Field(default_factory=list, description="harness self-test: faults to inject")
    env: Annotated[dict[EnvName, EnvVar], BeforeValidator(parse_env)] = Field(default_factory=dict, description=(
        "environment variables for the processes the suite starts: NAME: \"value\" (worker and probe "
        "children), NAME: null (removed), or NAME: {value, for: [worker | probes]}; read back from "
        "/proc/<pid>/environ after each start"))
    settings: list[SettingSpec] = Field(default_factory=list, description=(
        "GPU settings applied with nvidia-smi before the baseline probes and read back through NVML"))
    cycles: list[CycleSpec] = Field(default_factory=list, max_length=100, description=(
        "desktop cycles (display off/on, idle, VT switch, suspend) between images or after the workload, "
        "each followed by probes (docs/scenarios.md#cycles)"))
    # Set by matrix expansion: the values this run took, for naming and reports.
    matrix_values: dict[str, Any] = Field(default_factory=dict)

    @field_validator("prompt", "negative_prompt", mode="before")
    @classmethod
    def _prompt_shorthand(cls, v: Any) -> Any:
        return {"text": v} if isinstance(v, str) else v

    @field_validator("resolutions", mode="before")
    @classmethod
    def _one_resolution(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        # One clear message instead of one per member of the union.
        shape = "a seed is an integer, a list of integers, or {base: N, increment: K}"
        if isinstance(v, bool) or not isinstance(v, (int, list, dict)):
            raise ValueError(shape)
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one seed")
            for i, x in enumerate(v):
                if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 2**63:
                    raise ValueError(f"item {i} is not a seed in 0..2**63-1 (got {x!r}); {shape}")
        if isinstance(v, int) and not 0 <= v < 2**63:
            raise ValueError("a seed must be in 0..2**63-1")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        if self.workload in ("sd15-img2img", "sd15-txt2img"):
            if "base" not in self.model.model_fields_set:
                self.model.base = "builtin:tiny-sd15"   # the default model follows the workload
            elif self.model.base.startswith("builtin:") and "sd15" not in self.model.base:
                raise ValueError(f"model.base: {self.model.base} is not an SD 1.5 model; the {self.workload} "
                                 "workload needs builtin:tiny-sd15, builtin:sd15 or an SD 1.5 checkpoint")
            if self.model.refiner:
                raise ValueError(f"model.refiner: the {self.workload} workload has no refiner; remove it")
        elif self.model.base.startswith("builtin:") and ("sd15" in self.model.base or "refiner" in self.model.base):
            raise ValueError(f"model.base: {self.model.base} cannot be the base of the sdxl workload; "
                             "use builtin:tiny-sdxl or builtin:sdxl (or set workload: sd15-img2img)")
        if self.model.refiner and self.model.refiner.startswith("builtin:") and "sd15" in self.model.refiner:
            raise ValueError(f"model.refiner: {self.model.refiner} is not an SDXL model")
        if self.model.safety_checker and self.workload == "sdxl":
            raise ValueError("model.safety_checker: SDXL pipelines have no safety checker; it is an SD 1.x "
                             "component (workload sd15-img2img or sd15-txt2img)")
        if self.optimizations.cpu_offload and self.optimizations.sequential_offload:
            raise ValueError("optimizations: cpu_offload and sequential_offload exclude each other; choose one")
        for f in self.faults:
            if f.env is not None and (f.env not in self.env or "worker" not in self.env[f.env].for_):
                raise ValueError(f"faults.env: {f.env} is not a variable of env for the worker; drop-env "
                                 "leaves out one the scenario sets")
        if self.cycles and (why := _check_cycles(self.cycles, self.images)):
            raise ValueError(why)
        return self

    # ---- derived values used by the plan and the worker ----
    def seed_for(self, index: int) -> int:
        if isinstance(self.seeds, int):
            return self.seeds
        if isinstance(self.seeds, list):
            return self.seeds[index % len(self.seeds)]
        return self.seeds.base + index * self.seeds.increment

    def resolution_for(self, index: int) -> Resolution:
        return self.resolutions[index % len(self.resolutions)]

    @property
    def refiner_steps(self) -> int:
        return self.refiner.steps or self.steps


# --------------------------------------------------------------------------------------------
# Loading with line numbers


MAX_EXTENDS_FILES = 32      # files one scenario may stack (extends, transitively)
MAX_MATRIX_RUNS = 256       # runs one matrix may expand into
MAX_PROBLEMS = 50           # problems reported at once; the rest are counted


def _compose(path: Path, where: tuple[str, int | None] | None = None) -> Located:
    loc = yamlsafe.load_file(path, key="extends" if where else "", where=where)
    if not isinstance(loc.data, dict):
        raise ScenarioError([Problem(str(yamlsafe.display(path)), 1, "",
                                     f"a scenario must be a mapping of keys (got {type(loc.data).__name__})")])
    return loc


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load_with_extends(path: Path, chain: tuple[Path, ...] = (), where: tuple[str, int | None] | None = None,
                       budget: list[int] | None = None) -> Located:
    budget = [MAX_EXTENDS_FILES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        f, line = where or (str(path), None)
        raise ScenarioError([Problem(f, line, "extends", f"more than {MAX_EXTENDS_FILES} files stacked; "
                                     "flatten the scenario")])
    try:
        path = path.resolve() if path.exists() else path
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte: read_bounded says which
        pass
    if path in chain:
        cycle = " -> ".join(p.name for p in chain + (path,))
        raise ScenarioError([Problem(str(yamlsafe.display(chain[-1])), None, "extends", f"cycle detected: {cycle}")])
    loc = _compose(path, where)
    parents = loc.data.pop("extends", None)
    if parents is None:
        return loc
    here = loc.lines.get(("extends",), (str(yamlsafe.display(path)), None))
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ScenarioError([Problem(*here, "extends", "must be a file name or a list of file names "
                                     f"(got {_short(parents)})")])
    merged: dict = {}
    lines: dict = {}
    for parent in parents:
        if not parent.strip():
            raise ScenarioError([Problem(*here, "extends", "an empty file name; name a .yaml file or remove the key")])
        ploc = _load_with_extends(path.parent / parent, chain + (path,), here, budget)
        merged = _deep_merge(merged, ploc.data)
        lines.update(ploc.lines)
    merged = _deep_merge(merged, loc.data)
    lines.update(loc.lines)
    return Located(merged, lines, loc.nodes)


def _loc_to_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_for(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``loc`` (for 'did you mean')."""
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _short(v: Any) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


# pydantic's union/tagged-loc fragments that mean nothing to a user
_NOISE = re.compile(r"^(\[key\]|int|str|list\[.*\]|SeedsSpec|tuple\[.*\]|function-after\[.*\]|function-before\[.*\])$")


def _problems_from(exc: ValidationError, located: Located, source: str) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple] = set()
    for err in exc.errors(include_url=False)[:MAX_PROBLEMS + 1]:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _NOISE.match(p)))
        msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        # Cross-field checks raise at the model level; their message names the key they are about.
        m = re.match(r"^([a-z_]+(?:\.[a-z_]+)*): (.*)$", msg, re.S)
        owner = _model_for(loc) if m and "." not in m.group(1) else None
        if m and ("." in m.group(1) or (owner is not None and m.group(1) in owner.model_fields)):
            loc = loc + tuple(m.group(1).split("."))
            msg = m.group(2)
        if err["type"] == "extra_forbidden":
            key = loc[-1]
            owner = _model_for(loc[:-1])
            names = list(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            msg = f"unknown key '{key}'" + (f"; did you mean '{close[0]}'?" if close
                                            else (f" (allowed: {', '.join(names)})" if names else ""))
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and err["type"] not in ("value_error", "assertion_error"):
            msg = f"{msg} (got {_short(err['input'])})"
        elif "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {_short(err['input'])})"
        # Find the nearest located ancestor for the line number.
        probe = loc
        while probe not in located.lines and probe:
            probe = probe[:-1]
        f, line = located.lines.get(probe, (source, None))
        if (loc, msg) in seen:
            continue
        seen.add((loc, msg))
        problems.append(Problem(f, line, _loc_to_path(loc), msg))
    return problems


def _set_path(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def _matrix_label(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def load_scenarios(path: str | Path, *, check_files: bool = True) -> list[Scenario]:
    """Load, merge ``extends``, expand ``matrix``, validate. Raises ScenarioError with every problem."""
    path = Path(path)
    located = _load_with_extends(path)
    data = located.data
    matrix = data.pop("matrix", None)
    source = str(path)
    variants: list[tuple[dict, dict]] = []
    problems: list[Problem] = []
    if matrix is not None:
        f, line = located.lines.get(("matrix",), (source, None))
        if not isinstance(matrix, dict) or not matrix:
            problems.append(Problem(f, line, "matrix", "must map key paths to lists of values, "
                                    "e.g. {cfg: [5, 6.8], model.dtype: [fp16, bf16]}"))
        else:
            for k, vals in matrix.items():
                if not isinstance(vals, list) or not vals:
                    kf, kl = located.lines.get(("matrix", k), (f, line))
                    problems.append(Problem(kf, kl, f"matrix.{k}", f"must be a non-empty list (got {_short(vals)})"))
            runs = 1
            for vals in matrix.values():
                runs *= len(vals) if isinstance(vals, list) else 1
                if runs > MAX_MATRIX_RUNS:
                    break
            if not problems and runs > MAX_MATRIX_RUNS:
                sizes = "x".join(str(len(v)) for v in matrix.values())
                problems.append(Problem(f, line, "matrix", f"expands into more than {MAX_MATRIX_RUNS} runs "
                                        f"(got {sizes}); split it into several files"))
            if not problems:
                keys = list(matrix)
                for k in keys:      # a value set by the matrix is located at its matrix key
                    located.lines.setdefault(tuple(k.split(".")), located.lines.get(("matrix", k), (f, line)))
                for combo in itertools.product(*(matrix[k] for k in keys)):
                    d = copy.deepcopy(data)
                    for k, v in zip(keys, combo):
                        set_matrix_value(d, k, v, _set_path)
                    values = dict(zip(keys, combo))
                    d["matrix_values"] = values
                    label = ",".join(f"{k.split('.')[-1]}={_matrix_label(v)}" for k, v in values.items())
                    base = data.get("name", path.stem)
                    # a name that is no string stays as it is, so that validation says so
                    d["name"] = f"{base}[{label}]" if isinstance(base, str) else base
                    variants.append((d, values))
    else:
        variants.append((data, {}))
    if problems:
        raise ScenarioError(problems)
    out = []
    seen: set[Problem] = set()

    def add(found: list[Problem]) -> None:
        for p in found:
            if p not in seen:
                seen.add(p)
                problems.append(p)

    for d, values in variants:
        try:
            out.append(Scenario.model_validate(d))
        except ValidationError as exc:
            add(_problems_from(exc, located, source))
        if check_files:
            add(_check_files(d, located, path.parent))
        if len(problems) > MAX_PROBLEMS:
            break
    if problems:
        if len(problems) > MAX_PROBLEMS:
            problems = problems[:MAX_PROBLEMS] + [Problem(source, None, "", f"more problems not shown "
                                                          f"(the first {MAX_PROBLEMS} are above; fix them first)")]
        raise ScenarioError(problems)
    return out


def load_scenario(path: str | Path, *, check_files: bool = True) -> Scenario:
    """Load a scenario that is not a matrix (or take its first expansion)."""
    return load_scenarios(path, check_files=check_files)[0]


def json_schema() -> dict:
    """The JSON Schema of scenario files as written (stress.scenario_schema)."""
    from stress.scenario_schema import user_schema

    return user_schema(Scenario.model_json_schema(), SAMPLERS)
