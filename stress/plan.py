"""Scenario -> the list of jobs a run executes (pure: no I/O, no torch).

A job is one pipeline call: ``batch_size`` images of the same resolution. Resolutions cycle per batch
in the order the scenario lists them; seeds are locked per image index.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stress.scenario import Scenario


@dataclass(frozen=True)
class Job:
    job_id: int
    width: int
    height: int
    images: tuple[tuple[int, int], ...]   # (index, seed)

    def to_wire(self) -> dict:
        return {"images": [{"index": i, "seed": s} for i, s in self.images],
                "width": self.width, "height": self.height}

    @property
    def indices(self) -> list[int]:
        return [i for i, _ in self.images]


def expand(sc: Scenario) -> list[Job]:
    jobs: list[Job] = []
    index = 0
    batch = 0
    while index < sc.images:
        n = min(sc.batch_size, sc.images - index)
        w, h = sc.resolution_for(batch)
        jobs.append(Job(batch, w, h, tuple((i, sc.seed_for(i)) for i in range(index, index + n))))
        index += n
        batch += 1
    return jobs


# The default noise schedule of SD 1.5 / SDXL checkpoints (scheduler_config.json of both).
TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012


def _timesteps(sampler: str, n: int) -> np.ndarray:
    """The timesteps diffusers' DPMSolverMultistepScheduler sets for ``n`` steps (timestep_spacing
    "linspace", as SD.Next configures it), computed in numpy so the supervisor never imports torch.
    Checked against diffusers in tests/test_journal_plan.py."""
    base = np.linspace(0, TRAIN_TIMESTEPS - 1, n + 1).round()[::-1][:-1].astype(np.int64)
    if not sampler.endswith("_karras"):
        return base
    betas = np.linspace(BETA_START ** 0.5, BETA_END ** 0.5, TRAIN_TIMESTEPS, dtype=np.float32) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas, dtype=np.float32)
    sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    log_sigmas = np.log(sigmas)
    rho = 7.0
    sigma_min, sigma_max = float(sigmas[0]), float(sigmas[-1])
    ramp = np.linspace(0, 1, n)
    karras = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    log_sigma = np.log(np.maximum(karras, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high = low + 1
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0, 1)
    return ((1 - w) * low + w * high).round().astype(np.int64)


def _cut(sampler: str, n: int, switch: float, part: str) -> int:
    """Steps a pipeline runs when called with ``n`` steps and denoising_end/start = ``switch``.

    diffusers cuts by timestep, not by step count: with Karras sigmas most steps sit at low noise, so
    a 0.8 switch gives the base far fewer than 80% of its steps."""
    ts = _timesteps(sampler, n)
    cutoff = int(round(TRAIN_TIMESTEPS - switch * TRAIN_TIMESTEPS))
    return int((ts >= cutoff).sum()) if part == "base" else int((ts < cutoff).sum())


def base_call_steps(sc: Scenario) -> int:
    """``num_inference_steps`` the base pipeline is called with."""
    if sc.model.refiner and sc.refiner.semantics == "sdnext":
        return int(sc.steps // sc.refiner.switch + 1)
    return sc.steps


def refiner_call_steps(sc: Scenario) -> int:
    if not sc.model.refiner:
        return 0
    if sc.refiner.semantics == "sdnext":
        return int(sc.refiner_steps // (1 - sc.refiner.switch) // 2 + 1)
    return sc.steps


def _exact(sc: Scenario) -> bool:
    return sc.sampler.name in ("dpmpp_2m_karras", "dpmpp_2m")


def base_steps_run(sc: Scenario) -> int:
    """Steps the base model runs. Exact for the DPM++ 2M samplers on the standard SD/SDXL noise
    schedule; a proportional estimate for others (the worker records what actually ran)."""
    n = base_call_steps(sc)
    if sc.workload == "sd15-img2img":
        # diffusers' img2img skips the first (1 - strength) of the schedule
        return min(int(n * sc.img2img.strength), n)
    if not sc.model.refiner:
        return n
    if _exact(sc):
        return _cut(sc.sampler.name, n, sc.refiner.switch, "base")
    return round(n * sc.refiner.switch)


def refiner_steps_run(sc: Scenario) -> int:
    n = refiner_call_steps(sc)
    if not n:
        return 0
    if _exact(sc):
        return _cut(sc.sampler.name, n, sc.refiner.switch, "refiner")
    return n - round(n * sc.refiner.switch)


def accounting(sc: Scenario) -> dict:
    """Workload totals a person can check before running: positions, UNet evaluations."""
    jobs = expand(sc)
    cfg_mult = 2 if sc.cfg > 1 else 1
    latent_positions = sum((j.width // 8) * (j.height // 8) * len(j.images) for j in jobs)
    base, ref = base_steps_run(sc), refiner_steps_run(sc)
    return {
        "images": sc.images,
        "batches": len(jobs),
        "resolutions": [f"{w}x{h}" for w, h in sc.resolutions],
        "base_steps_per_image": base,
        "refiner_steps_per_image": ref,
        "base_call_steps": base_call_steps(sc),
        "refiner_call_steps": refiner_call_steps(sc),
        "steps_exact": _exact(sc) or not sc.model.refiner,
        "unet_evaluations": sc.images * (base + ref) * cfg_mult,
        "latent_positions": latent_positions,
    }
