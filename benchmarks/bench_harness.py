"""Harness throughput: images/min of `stress run` against a bare diffusers loop, same tiny pipeline.

Both sides run the same built-in tiny SDXL base + refiner from the same cache folder, with the same
scheduler (DPM++ 2M Karras as SD.Next configures it), steps, CFG, resolution, seed and a prompt short
enough (one 77-token chunk) that diffusers' own text encoding does the same work as ours. The bare
loop is what a minimal script would do: base -> latents -> refiner -> decode -> save JPG, in this
process. The harness side is a real `stress run` (supervisor, worker subprocess, journal with fsync,
monitors at their default rate; probes off, since they are timed separately by design).

Steady state excludes the first image on both sides (first-call warm-up); the harness's one-off
costs (worker start, imports, model load) are reported separately.

    .venv/bin/python benchmarks/bench_harness.py [--images 6] [--steps 20] [--size 128] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def scenario_yaml(images: int, steps: int, size: int) -> str:
    return f"""
name: bench-harness
model: {{base: builtin:tiny-sdxl, refiner: builtin:tiny-sdxl-refiner, device: cpu}}
steps: {steps}
cfg: 6.8
images: {images}
resolutions: [{size}x{size}]
seeds: 1234
prompt: "a lighthouse on a cliff at dusk, oil painting, dramatic light, detailed"
negative_prompt: "blurry"
probes: {{enabled: false}}
"""


def bare_loop(cache: Path, images: int, steps: int, size: int) -> list[float]:
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    from stress.workload.models import ensure_builtin
    from stress.workload.schedulers import make_scheduler

    base_dir, _ = ensure_builtin("builtin:tiny-sdxl", cache)
    ref_dir, _ = ensure_builtin("builtin:tiny-sdxl-refiner", cache)
    base = StableDiffusionXLPipeline.from_pretrained(base_dir, local_files_only=True)
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(ref_dir, local_files_only=True)
    for pipe in (base, refiner):
        pipe.scheduler = make_scheduler("dpmpp_2m_karras", pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
    prompt = "a lighthouse on a cliff at dusk, oil painting, dramatic light, detailed"
    switch = 0.8
    out = Path(tempfile.mkdtemp(prefix="bare-"))
    times = []
    for i in range(images):
        t0 = time.perf_counter()
        g = torch.Generator("cpu").manual_seed(1234)
        latents = base(prompt=prompt, negative_prompt="blurry", num_inference_steps=int(steps // switch + 1),
                       denoising_end=switch, guidance_scale=6.8, width=size, height=size, generator=g,
                       output_type="latent").images
        image = refiner(prompt=prompt, negative_prompt="blurry", image=latents,
                        num_inference_steps=int(steps // (1 - switch) // 2 + 1), denoising_start=switch,
                        guidance_scale=6.8, generator=g).images[0]
        image.save(out / f"{i:05d}.jpg", quality=92)
        times.append(time.perf_counter() - t0)
    return times


def harness(cache: Path, images: int, steps: int, size: int) -> tuple[list[float], dict]:
    from stress.journal import read_journal
    from stress.progress import Progress
    from stress.runner import run_scenario
    from stress.scenario import load_scenario

    work = Path(tempfile.mkdtemp(prefix="harness-"))
    scen = work / "bench.yaml"
    scen.write_text(scenario_yaml(images, steps, size))
    sc = load_scenario(scen)
    t0 = time.time()
    result = run_scenario(sc, scen, artifacts=work / "artifacts", reports=None, progress=Progress.quiet())
    wall = time.time() - t0
    events = read_journal(result.run_dir / "journal.jsonl").events
    starts = {e["index"]: e["t"] for e in events if e["ev"] == "image_start"}
    ends = {e["index"]: e["t"] for e in events if e["ev"] == "image"}
    per_image = [ends[i] - starts[i] for i in sorted(ends)]
    ready = next(e for e in events if e["ev"] == "worker_ready")
    wstart = next(e for e in events if e["ev"] == "worker_start")
    summary = next((e for e in events if e["ev"] == "monitors_summary"), {})
    extra = {
        "wall_s": round(wall, 2),
        "worker_start_to_ready_s": round(ready["t"] - wstart["t"], 2),
        "journal_events": len(events),
        "journal_bytes": (result.run_dir / "journal.jsonl").stat().st_size,
        "monitor_cpu_pct": summary.get("cpu_pct"),
        "outcomes": sorted({e.get("outcome") for e in events if e["ev"] == "image"}),
    }
    return per_image, extra


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads on both sides")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ["STRESS_CPU_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    cache = Path(os.environ.get("STRESS_CACHE") or tempfile.mkdtemp(prefix="bench-cache-"))
    os.environ["STRESS_CACHE"] = str(cache)
    from stress.workload.models import ensure_builtin

    ensure_builtin("builtin:tiny-sdxl", cache)
    ensure_builtin("builtin:tiny-sdxl-refiner", cache)

    h_times, extra = harness(cache, args.images, args.steps, args.size)
    b_times = bare_loop(cache, args.images, args.steps, args.size)

    def steady(ts: list[float]) -> float:
        rest = ts[1:] or ts
        return 60.0 / statistics.mean(rest)

    res = {
        "images": args.images, "steps": args.steps, "size": args.size, "threads": args.threads,
        "bare_img_per_min": round(steady(b_times), 2),
        "harness_img_per_min": round(steady(h_times), 2),
        "bare_s_per_image": [round(t, 3) for t in b_times],
        "harness_s_per_image": [round(t, 3) for t in h_times],
        **extra,
    }
    res["harness_vs_bare"] = round(res["harness_img_per_min"] / res["bare_img_per_min"], 3)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"bare diffusers loop : {res['bare_img_per_min']:.2f} images/min (steady state)")
        print(f"stress run          : {res['harness_img_per_min']:.2f} images/min (steady state)"
              f" = {res['harness_vs_bare'] * 100:.1f}% of bare")
        print(f"harness one-off     : worker start to ready {extra['worker_start_to_ready_s']} s, "
              f"run wall {extra['wall_s']} s")
        print(f"journal             : {extra['journal_events']} events, {extra['journal_bytes']} bytes; "
              f"monitors {extra['monitor_cpu_pct']}% of one core")
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
