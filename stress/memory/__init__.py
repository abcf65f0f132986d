"""``stress plan``: what a scenario will compute and whether it fits, predicted from the model itself.

Public API (see docs/plan.md):

- :func:`make_plan` -> a JSON-able dict: workload accounting (per image, per resolution, per session)
  and the predicted peak GPU memory per resolution and for the session, split into weights,
  activations and overhead, with the stage and module where the peak happens;
- :func:`preflight` -> ``{(w, h): {"fits": bool, "predicted_peak": int, ...}}`` for the runner;
- :func:`render_text` -> the same plan as a table a person can read.

Importing this package is cheap; torch and diffusers are imported when a plan is made.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from stress.errors import StressError
from stress.scenario import Scenario

PLAN_FORMAT = 1

__all__ = ["make_plan", "preflight", "render_text", "PLAN_FORMAT"]

_TRACERS: dict[str, Any] = {}


def _settings_for(sc: Scenario, prompts: dict | None, traced_steps: int) -> Any:
    """The tracer's settings for ``sc``; ``prompts`` None (not counted yet): one chunk each, enough
    to build the networks (PipelineTracer.retarget takes the counted chunks)."""
    from stress.memory.pipeline import TraceSettings

    o = sc.optimizations
    chunks = prompts["padded_chunks"] if prompts is not None else 1
    return TraceSettings(dtype=sc.model.dtype, attention=o.attention, channels_last=o.channels_last,
                         vae_tiling=o.vae_tiling, vae_slicing=o.vae_slicing, cpu_offload=o.cpu_offload,
                         cfg=sc.cfg > 1, batch=sc.batch_size, base_chunks=chunks,
                         refiner_chunks=chunks, clip_skip=sc.model.clip_skip,
                         traced_steps=traced_steps, img2img=sc.workload == "sd15-img2img",
                         sequential_offload=o.sequential_offload, precomputed_embeds=o.precomputed_embeds)


def _tracer(base: Any, refiner: Any, settings: Any) -> Any:
    """One tracer per (architectures, settings) in this process: networks built once, traces cached."""
    import dataclasses
    import json

    from stress.memory.architectures import config_key
    from stress.memory.pipeline import PipelineTracer

    # Settings that only say how the networks are traced (the prompts' chunks, the workspace factor
    # make_plan gives after the build) are not part of the key: the tracer is retargeted to them.
    shape = {k: v for k, v in dataclasses.asdict(settings).items()
             if k not in ("base_chunks", "refiner_chunks", "conv_workspace")}
    key = json.dumps([sorted(config_key(c) for c in base.components.values()),
                      sorted(config_key(c) for c in refiner.components.values()) if refiner else None,
                      shape], sort_keys=True)
    if key not in _TRACERS:
        _TRACERS.clear()   # one scenario at a time: full-size fake networks are not free either
        _TRACERS[key] = PipelineTracer(base, refiner, settings)
    return _TRACERS[key]


def _architectures(sc: Scenario, base_dir: Path | None) -> tuple[Any, Any]:
    from stress.memory.architectures import load_architecture

    from stress.memory.architectures import with_scenario_components

    base = load_architecture(sc.model.base, base_dir)
    refiner = load_architecture(sc.model.refiner, base_dir) if (sc.model.refiner and sc.workload == "sdxl") else None
    base = with_scenario_components(base, sc.model.vae, sc.model.safety_checker)
    if refiner is not None:
        refiner = with_scenario_components(refiner, sc.model.vae, False)
    return base, refiner


def make_plan(sc: Scenario, base_dir: Path | None = None, *, gpu: Any = None, overhead: Any = None,
              traced_steps: int = 1, progress: Callable[[str], None] | None = None) -> dict:
    """Plan a scenario (see the module docstring). ``gpu``: a :class:`~stress.memory.gpu.GpuMemory`
    (None: unknown); ``overhead``: an :class:`~stress.memory.overhead.OverheadModel`."""
    from stress.memory.accounting import count_prompts, import_counters, one_torch_thread
    from stress.memory.gpu import GpuMemory
    from stress.memory.overhead import OverheadModel
    from stress.memory.predict import predict
    from stress.background import Background

    t0 = time.perf_counter()
    say = progress or (lambda _m: None)
    if traced_steps < 1:
        raise StressError("traced steps must be at least 1")
    gpu = gpu or GpuMemory(None, "not checked")
    if overhead is None:
        overhead = OverheadModel.for_gpu(gpu.compute_capability, cudnn_benchmark=sc.optimizations.cudnn_benchmark)
    from stress.memory.pipeline import quiet_libraries

    base, refiner = _architectures(sc, base_dir)

    def counted() -> dict:
        with quiet_libraries():
            return count_prompts(sc, base, base_dir)

    # The prompts are counted (the tokenizer and compel: 1.2 s on the SD.Next scenario) in a second
    # process while the networks are built here: they do not depend on the prompts; the traces do.
    with quiet_libraries():
        import_counters()
    counting = Background(counted, in_child=one_torch_thread)
    try:
        say(f"building {sc.model.base}" + (f" + {sc.model.refiner}" if refiner else "") + " on the meta device")
        tracer = _tracer(base, refiner, _settings_for(sc, None, traced_steps))
        prompts = counting.result()
    finally:
        counting.cancel()
    settings = _settings_for(sc, prompts, traced_steps)
    settings.conv_workspace = overhead.conv_workspace_factor
    tracer.retarget(settings)
    plan = predict(sc, tracer, prompts, gpu, overhead, say)
    plan["format"] = PLAN_FORMAT
    plan["seconds"] = round(time.perf_counter() - t0, 2)
    return plan


def preflight(scenario: Scenario, gpu_memory_bytes: int, *,
              base_dir: Path | None = None) -> dict[tuple[int, int], dict]:
    """For the runner: per resolution of ``scenario``, whether an image is predicted to fit in
    ``gpu_memory_bytes`` (the memory the workload may use: total minus what others hold), and the
    predicted peak (device memory as nvidia-smi would show it for this process).

    ``{(w, h): {"fits": bool, "predicted_peak": int, "required": int, "peak_stage": str}}``."""
    from stress.memory.gpu import GpuMemory

    plan = make_plan(scenario, base_dir, gpu=GpuMemory(int(gpu_memory_bytes), "preflight"))
    out = {}
    for r in plan["memory"]["resolutions"]:
        out[(r["width"], r["height"])] = {"fits": bool(r["fits"]), "predicted_peak": int(r["predicted_peak"]),
                                          "required": int(r["required"]), "peak_stage": r["peak_stage"]}
    return out


def render_text(plan: dict) -> str:
    from stress.memory.render import render_text as _render

    return _render(plan)
