"""Samplers -> schedulers (configured as SD.Next does) and the refiner step arithmetic."""
from __future__ import annotations

import importlib.util
import json

import pytest

from stress.errors import EnvironmentProblem, StressError
from stress.scenario import SAMPLERS
from stress.workload import models
from stress.workload.pipelines import step_plan
from stress.workload.schedulers import (
    SAMPLER_TABLE,
    check_available,
    make_scheduler,
    sampler_label,
    scheduler_record,
)

SDXL = models.builtin_component_configs("builtin:sdxl")["scheduler"]


def test_every_scenario_sampler_has_a_scheduler():
    assert set(SAMPLERS) == set(SAMPLER_TABLE)
    assert sampler_label("dpmpp_2m_karras") == "DPM++ 2M Karras"


def test_default_sampler_is_dpmpp_2m_karras_as_sdnext_configures_it():
    s = make_scheduler("dpmpp_2m_karras", SDXL)
    assert type(s).__name__ == "DPMSolverMultistepScheduler"
    c = s.config
    assert c.algorithm_type == "dpmsolver++"
    assert c.solver_order == 2
    assert c.solver_type == "midpoint"
    assert c.lower_order_final is True
    assert c.use_karras_sigmas is True
    assert c.final_sigmas_type == "zero"
    assert c.timestep_spacing == "linspace"
    # The model's own noise schedule and parameterisation are kept.
    assert (c.beta_start, c.beta_end, c.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert c.prediction_type == "epsilon" and c.num_train_timesteps == 1000
    rec = scheduler_record(s)
    assert rec["_class_name"] == "DPMSolverMultistepScheduler" and rec["use_karras_sigmas"] is True
    json.dumps(rec)  # plain JSON


def test_model_prediction_type_and_betas_survive_every_sampler():
    vpred = dict(SDXL, prediction_type="v_prediction", beta_end=0.0125)
    for name in SAMPLER_TABLE:
        try:
            check_available(name)
        except EnvironmentProblem:
            continue
        s = make_scheduler(name, vpred)
        assert s.config.prediction_type == "v_prediction", name
        assert s.config.beta_end == 0.0125, name
        s.set_timesteps(10)
        assert len(s.timesteps) >= 10, name
    assert make_scheduler("dpmpp_2m", SDXL).config.use_karras_sigmas is False
    assert type(make_scheduler("euler_a", SDXL)).__name__ == "EulerAncestralDiscreteScheduler"


@pytest.mark.skipif(importlib.util.find_spec("torchsde") is not None, reason="torchsde is installed here")
def test_sampler_needing_a_missing_package_fails_clearly():
    with pytest.raises(EnvironmentProblem, match="dpmpp_sde_karras needs the Python package torchsde"):
        make_scheduler("dpmpp_sde_karras", SDXL)
    with pytest.raises(StressError, match="unknown sampler"):
        check_available("dpmpp_9m")


def test_step_plan_sdnext_and_diffusers_semantics():
    p = step_plan(38, 38, 0.8, "sdnext", refiner=True)
    assert p.base_num_inference_steps == 48           # int(38 // 0.8 + 1)
    assert p.refiner_num_inference_steps == 96        # int(38 // (1 - 0.8) // 2 + 1), float floor included
    assert p.denoising_end == p.denoising_start == 0.8
    p = step_plan(38, 20, 0.8, "diffusers", refiner=True)
    assert (p.base_num_inference_steps, p.refiner_num_inference_steps) == (38, 20)
    p = step_plan(38, 38, 0.8, "sdnext", refiner=False)
    assert (p.base_num_inference_steps, p.refiner_num_inference_steps, p.denoising_end) == (38, 0, None)
    assert step_plan(30, 30, 0.5, "sdnext", refiner=True).base_num_inference_steps == 61
    with pytest.raises(StressError):
        step_plan(38, 38, 0.8, "comfy", refiner=True)
