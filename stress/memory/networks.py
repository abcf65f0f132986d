"""Building a scenario's networks without memory: on the meta device, no initialisation, the
attention backend the worker sets (used by :mod:`stress.memory.pipeline`)."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import torch

from stress.memory.architectures import Component




@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence diffusers' and transformers' warnings meant for users of real weights ("should be
    kept in float32", "sequence length is longer than 77": compel chunks long prompts on purpose)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    before = (dlog.get_verbosity(), tlog.get_verbosity())
    dlog.set_verbosity(logging.ERROR)
    tlog.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        dlog.set_verbosity(before[0])
        tlog.set_verbosity(before[1])


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "zeros_", "ones_", "eye_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")


def _noop_init(tensor, *a, **k):
    return tensor


def _real_init_functions() -> dict[str, Any]:
    import torch.nn.init as init

    return {n: getattr(init, n) for n in _INIT_FUNCTIONS if hasattr(init, n)}


_REAL_INIT = _real_init_functions()   # taken when this module is imported, before any patch of ours


# Libraries that copy torch.nn.init's functions into a table when they are first imported, and put
# that table back on torch.nn.init after each of their own no-init loads (diffusers'
# ModelMixin.from_pretrained, transformers' no_init_weights). Imported first by _no_init: if one were
# first imported while our no-ops are installed (diffusers imports modeling_utils lazily, on the
# first getattr of a model class) it would keep them as "the originals" and reinstall them after
# every later from_pretrained, so the next model *built* in the process got uninitialised memory as
# weights (a CI run: a tiny refiner built after a plan in the same process saved garbage to the
# model cache, and its images were black).
_INIT_SNAPSHOTS = (("diffusers.models.modeling_utils", "TORCH_INIT_FUNCTIONS"),
                   ("transformers.initialization", "TORCH_INIT_FUNCTIONS"))


def _import_snapshotters() -> None:
    import importlib

    for mod, _attr in _INIT_SNAPSHOTS:
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


def repair_init_snapshots() -> list[str]:
    """Put the real functions back into any library table that holds one of our no-ops; returns the
    tables repaired ("module.TABLE[name]"). A safeguard: with _import_snapshotters first it finds none."""
    import sys

    fixed = []
    for mod, attr in _INIT_SNAPSHOTS:
        table = getattr(sys.modules.get(mod), attr, None)
        if not isinstance(table, dict):
            continue
        for name, fn in list(table.items()):
            if fn is _noop_init and name in _REAL_INIT:
                table[name] = _REAL_INIT[name]
                fixed.append(f"{mod}.{attr}[{name}]")
    return fixed


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """``torch.nn.init`` as no-ops while meta modules are built: initialising tensors that have no
    memory only costs time (a third of building full-size SDXL: every Linear's ``reset_parameters``).

    Leaving always puts back the real functions taken at import, never what was there on entry: a
    nested or concurrent use that ended first only makes the rest of a build slower, and no path can
    leave a no-op behind for the models of a later build (a CI run found one left, which zeroed the
    weights of tiny models built afterwards in the same process). The libraries that copy the init
    functions at import are imported before the patch (see _INIT_SNAPSHOTS)."""
    import torch.nn.init as init

    _import_snapshotters()
    for n in _REAL_INIT:
        setattr(init, n, _noop_init)
    try:
        yield
    finally:
        for n, f in _REAL_INIT.items():
            setattr(init, n, f)
        fixed = repair_init_snapshots()
        if fixed:
            logging.getLogger(__name__).warning("put the real torch.nn.init functions back into %s", ", ".join(fixed))


def build_module(comp: Component) -> torch.nn.Module:
    """The component's network on the meta device (no memory, no initialisation cost)."""
    with quiet_libraries(), torch.device("meta"), _no_init():
        if comp.cls == "StableDiffusionSafetyChecker":
            from stress.workload.components import build_safety_checker

            module = build_safety_checker(comp.config, device="meta")[0]
        elif comp.library == "diffusers":
            import diffusers

            cls = getattr(diffusers, comp.cls)
            module = cls.from_config({k: v for k, v in comp.config.items() if k != "_class_name"})
        else:
            import transformers

            cfg = transformers.CLIPTextConfig.from_dict(
                {k: v for k, v in comp.config.items() if k not in ("architectures", "_class_name")})
            cfg._attn_implementation = "sdpa"   # transformers' default where torch has SDPA
            module = getattr(transformers, comp.cls)(cfg)
    return module.eval().requires_grad_(False)


def materialize(module: torch.nn.Module, dtype: torch.dtype, device: str = "meta",
                *, channels_last: bool = False) -> torch.nn.Module:
    """Give a meta-built module its weights in ``dtype``: still on the meta device (shapes only), or
    real random ones on the CPU (``device="cpu"``, for the tests that measure real allocations)."""
    with quiet_libraries():
        if device == "cpu":
            module = module.to_empty(device="cpu")
            with torch.no_grad():
                for t in list(module.parameters()) + list(module.buffers()):
                    if t.is_floating_point():
                        t.normal_(0, 0.02)
                    else:
                        t.zero_()
        module = module.to(dtype)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
    return module


def weight_sizes(module: torch.nn.Module) -> list[int]:
    """Bytes of each parameter and buffer, in module order: one device allocation each when the
    model is moved to the GPU."""
    out = []
    for t in list(module.parameters()) + list(module.buffers()):
        out.append(t.numel() * t.element_size())
    return out


def apply_attention(module: torch.nn.Module, comp: Component, attention: str) -> None:
    """Configure the attention backend the way the worker does (see module docstring)."""
    if comp.library != "diffusers":
        return
    with quiet_libraries():
        if not hasattr(module, "set_default_attn_processor"):
            return   # AutoencoderTiny has no attention; the safety checker's CLIP tower is transformers'
        if attention == "math":
            module.set_default_attn_processor()
        elif attention == "sliced" and hasattr(module, "set_attention_slice"):
            module.set_attention_slice("auto")
