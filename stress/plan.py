"""Scenario -> the list of jobs a run executes (pure: no I/O, no torch).

A job is one pipeline call: ``batch_size`` images of the same resolution. Resolutions cycle per batch
in the order the scenario lists them; seeds are locked per image index.
"""
from __future__ import annotations

from dataclasses import dataclass

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


def base_steps_run(sc: Scenario) -> int:
    """Steps the base model runs (as scheduled; the worker records what actually ran)."""
    if not sc.model.refiner:
        return sc.steps
    if sc.refiner.semantics == "sdnext":
        called = int(sc.steps // sc.refiner.switch + 1)
        return round(called * sc.refiner.switch)
    return round(sc.steps * sc.refiner.switch)


def refiner_steps_run(sc: Scenario) -> int:
    if not sc.model.refiner:
        return 0
    if sc.refiner.semantics == "sdnext":
        called = int(sc.refiner_steps // (1 - sc.refiner.switch) // 2 + 1)
        return called - round(called * sc.refiner.switch)
    return sc.steps - round(sc.steps * sc.refiner.switch)


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
        "unet_evaluations": sc.images * (base + ref) * cfg_mult,
        "latent_positions": latent_positions,
    }
