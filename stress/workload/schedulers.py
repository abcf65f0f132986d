"""Samplers by name -> diffusers schedulers, configured as SD.Next configures them.

Every scheduler is made with ``from_config(<the model's own scheduler config>, **overrides)``, so the
model's betas, ``num_train_timesteps`` and ``prediction_type`` are kept and only the sampler's own
settings change. The overrides come from SD.Next's ``modules/sd_samplers_diffusers.py`` table; the
default, DPM++ 2M Karras, is exactly::

    DPMSolverMultistepScheduler.from_config(model_config, algorithm_type="dpmsolver++", solver_order=2,
        solver_type="midpoint", lower_order_final=True, use_karras_sigmas=True,
        final_sigmas_type="zero", timestep_spacing="linspace")
"""
from __future__ import annotations

import importlib.util
import json
from typing import Any, Mapping

from stress.errors import EnvironmentProblem, StressError

# name -> (diffusers class, overrides, A1111/SD.Next label, extra Python packages needed)
_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint",
             "lower_order_final": True, "final_sigmas_type": "zero", "timestep_spacing": "linspace",
             "thresholding": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
             "use_lu_lambdas": False}

SAMPLER_TABLE: dict[str, tuple[str, dict[str, Any], str, tuple[str, ...]]] = {
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {**_DPMPP_2M, "use_karras_sigmas": True}, "DPM++ 2M Karras", ()),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {**_DPMPP_2M, "use_karras_sigmas": False}, "DPM++ 2M", ()),
    "dpmpp_sde_karras": ("DPMSolverSDEScheduler", {"use_karras_sigmas": True, "timestep_spacing": "linspace",
                                                   "steps_offset": 0}, "DPM++ SDE Karras", ("torchsde",)),
    "euler": ("EulerDiscreteScheduler", {"interpolation_type": "linear", "final_sigmas_type": "zero",
                                         "timestep_spacing": "linspace", "use_karras_sigmas": False,
                                         "steps_offset": 0}, "Euler", ()),
    "euler_a": ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "linspace", "steps_offset": 0}, "Euler a", ()),
    "ddim": ("DDIMScheduler", {"clip_sample": False, "timestep_spacing": "leading"}, "DDIM", ()),
    "unipc": ("UniPCMultistepScheduler", {"predict_x0": True, "solver_order": 2, "solver_type": "bh2",
                                          "lower_order_final": True, "timestep_spacing": "linspace",
                                          "final_sigmas_type": "zero", "use_karras_sigmas": False}, "UniPC", ()),
    "heun": ("HeunDiscreteScheduler", {"timestep_spacing": "linspace", "use_karras_sigmas": False}, "Heun", ()),
    "lms": ("LMSDiscreteScheduler", {"timestep_spacing": "linspace", "use_karras_sigmas": False,
                                     "steps_offset": 0}, "LMS", ("scipy",)),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True, "timestep_spacing": "linspace"}, "PNDM", ()),
    "ddpm": ("DDPMScheduler", {"variance_type": "fixed_small", "clip_sample": False,
                               "timestep_spacing": "linspace"}, "DDPM", ()),
}

# Keys taken from the model, never from the sampler table.
MODEL_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")


def sampler_label(name: str) -> str:
    """The name A1111/SD.Next shows (``DPM++ 2M Karras``)."""
    return SAMPLER_TABLE[name][2] if name in SAMPLER_TABLE else name


def check_available(name: str) -> None:
    """Raise a one-line error when ``name`` is unknown or needs a package this machine lacks."""
    if name not in SAMPLER_TABLE:
        raise StressError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_TABLE)}")
    missing = [p for p in SAMPLER_TABLE[name][3] if importlib.util.find_spec(p) is None]
    if missing:
        raise EnvironmentProblem(f"sampler {name} needs the Python package {', '.join(missing)}, which is not "
                                 f"installed (pip install {' '.join(missing)}), or choose another sampler")


def make_scheduler(name: str, model_config: Mapping[str, Any]) -> Any:
    """A fresh scheduler for sampler ``name`` built on the model's scheduler config."""
    import diffusers

    check_available(name)
    cls_name, overrides, _label, _pkgs = SAMPLER_TABLE[name]
    cls = getattr(diffusers, cls_name)
    base = {k: v for k, v in dict(model_config).items() if not k.startswith("_")}
    return cls.from_config(base, **overrides)


def scheduler_record(scheduler: Any) -> dict[str, Any]:
    """The scheduler's full config as a plain JSON-able dict (with its class as ``_class_name``)."""
    cfg = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    cfg = json.loads(json.dumps(cfg, default=_jsonable))
    return {"_class_name": type(scheduler).__name__, **dict(sorted(cfg.items()))}


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (set, tuple)):
        return list(v)
    return str(v)
