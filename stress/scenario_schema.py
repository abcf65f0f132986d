"""The JSON Schema of the YAML a user writes (``gpu-stress schema``), for editors and validators.

pydantic's schema describes the validated model (a resolution is ``[w, h]``, a duration seconds); a
scenario file uses the short forms the loader accepts, so those are added here: ``'1152x1536'``
resolutions (one, or a list mixing strings and pairs), ``'10m'`` durations, a prompt given as a plain
string, the sampler's names as an enum. Every file in scenarios/ is checked against it in the tests.
"""
from __future__ import annotations

import copy
from typing import Any

RESOLUTION_PATTERN = r"^\s*\d+\s*[xX×]\s*\d+\s*$"
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"
_DURATIONS = ("time_limit", "image_timeout", "load_timeout")


def _duration(prop: dict) -> dict:
    number = {"type": "number", "exclusiveMinimum": 0}
    for branch in [prop, *prop.get("anyOf", [])]:
        if branch.get("type") == "number" and "maximum" in branch:
            number["maximum"] = branch["maximum"]
    out = {k: v for k, v in prop.items() if k not in ("type", "anyOf", "maximum", "minimum")}
    out["anyOf"] = [number, {"type": "string", "pattern": DURATION_PATTERN,
                             "description": "a number with a unit: ms, s, m, h or d (e.g. '90s', '10m', '8h')"}]
    if any(b.get("type") == "null" for b in prop.get("anyOf", [])):
        out["anyOf"].append({"type": "null"})
    return out


def _env_schema(props: dict, defs: dict) -> None:
    """``env:`` as written: NAME -> a string, null, or {value, for}; ``for`` one target or a list."""
    from stress.experiment import NAME

    env = props.get("env")
    if env is None:
        return
    env["propertyNames"] = {"pattern": NAME.pattern}
    env["additionalProperties"] = {"anyOf": [{"type": "string"}, {"type": "null"}, {"$ref": "#/$defs/EnvVar"}]}
    for_ = defs["EnvVar"]["properties"]["for"]
    items = for_["items"]
    defs["EnvVar"]["properties"]["for"] = {"description": for_.get("description", ""),
                                           "anyOf": [items, {k: v for k, v in for_.items() if k != "description"}]}


def user_schema(model_schema: dict, samplers: tuple[str, ...]) -> dict:
    schema = copy.deepcopy(model_schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "stress scenario"
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    props = schema.setdefault("properties", {})
    props["extends"] = {"description": "file(s) this scenario is stacked on (deep merge)",
                        "anyOf": [{"type": "string", "minLength": 1},
                                  {"type": "array", "items": {"type": "string", "minLength": 1}}]}
    props["matrix"] = {"description": "key path -> list of values; one run per combination (at most 256 runs)",
                       "type": "object", "minProperties": 1,
                       "additionalProperties": {"type": "array", "minItems": 1}}
    props.pop("matrix_values", None)           # set by matrix expansion, never written by a user
    # `name` may come from a file this one extends; a matrix names its runs after the file.
    schema["required"] = [k for k in schema.get("required", []) if k != "name"]
    if not schema["required"]:
        del schema["required"]
    schema["anyOf"] = [{"required": ["name"]}, {"required": ["extends"]}, {"required": ["matrix"]}]
    pair = {"type": "array", "prefixItems": [{"type": "integer", "minimum": 64, "maximum": 8192}] * 2,
            "minItems": 2, "maxItems": 2}
    one = {"anyOf": [{"type": "string", "pattern": RESOLUTION_PATTERN, "description": "WIDTHxHEIGHT, e.g. 1152x1536"},
                     pair]}
    res = props["resolutions"]
    props["resolutions"] = {"description": "one resolution or a list; each WIDTHxHEIGHT (e.g. '1152x1536') "
                            "or [width, height], both divisible by 8 in 64..8192",
                            "anyOf": [one["anyOf"][0], {"type": "array", "minItems": res.get("minItems", 1), "items": one}]}
    for key in ("prompt", "negative_prompt"):
        ref = {k: v for k, v in props[key].items() if k in ("$ref", "allOf", "anyOf")}
        props[key] = {"description": "the prompt text, or {text | file | tokens, ...}",
                      "anyOf": [{"type": "string"}, ref]}
    sampler = defs["SamplerSpec"]["properties"]["name"]
    sampler["enum"] = list(samplers)
    sampler.pop("type", None)
    _env_schema(props, defs)
    session = defs["SessionSpec"]["properties"]
    for key in _DURATIONS:
        session[key] = _duration(session[key])
    cycle = defs.get("CycleSpec", {}).get("properties")
    if cycle:                                  # desktop cycles (stress.cycles): durations and the aliases of `do`
        from stress.cycles import ALIASES

        for key in ("off_s", "seconds"):
            cycle[key] = _duration(cycle[key])
        cycle["do"]["enum"] = [*cycle["do"]["enum"], *ALIASES]
    return schema
