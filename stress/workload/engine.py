"""The workload engine that runs inside the worker process: load models, generate batches, measure.

``WorkloadSession`` is the whole interface the worker uses. One batch (``generate``) runs end to end:
text encode (cached per distinct prompt) -> base -> refiner (latents, no decode in between) -> VAE
decode -> save, emitting a ``stage`` and an ``alloc`` journal event as each stage ends and an ``alloc``
event after each image. Its records are the ``image`` records of run.json (docs/workload.md).
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from stress.errors import EnvironmentProblem, StressError
from stress.workload import alloc
from stress.workload.models import LoadedModel, default_cache_dir, load_model
from stress.workload.pipelines import (
    JPEG_COMMENT_LIMIT,
    StepCounter,
    apply_optimizations,
    decode_latents,
    encode_image,
    fit_parameters,
    list_inputs,
    load_input,
    output_name,
    pixel_digest,
    run_safety_checker,
    step_plan,
    sync,
    test_pattern,
    write_atomic,
)
from stress.workload.prompts import (
    EncodedPrompt,
    PromptEncoder,
    attention_mode,
    prompt_digest,
    repeat_batch,
    resolve_prompt_text,
)
from stress.workload.schedulers import check_available, make_scheduler, sampler_label, scheduler_record

if TYPE_CHECKING:  # pragma: no cover
    from stress.scenario import Scenario

log = logging.getLogger("stress.workload")

STAGES = ("text_encode", "base", "refiner", "vae_decode", "save")
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a CUDA device, else ``cpu``."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise EnvironmentProblem(f"model.device: cuda was asked for, but torch {torch.__version__} sees no CUDA "
                                 f"device (built for CUDA {torch.version.cuda}); use device: auto or cpu")
    return requested


def resolve_dtype(requested: str, device: str, notes: list[str]) -> Any:
    """The torch dtype to run in. fp16 on the CPU runs in fp32 instead (CPU fp16 kernels are slow or
    missing; bf16 is the CPU's half-precision type), with a note."""
    import torch

    if requested == "fp16" and device == "cpu":
        notes.append("model.dtype: fp16 on the CPU runs in fp32 (choose bf16 for half precision on a CPU)")
        log.warning(notes[-1])
        return torch.float32
    return getattr(torch, _DTYPES[requested])


def set_cpu_threads(notes: list[str]) -> tuple[int, str]:
    """Set torch's CPU threads for the cores actually free (``stress.workload.threads.choose``;
    ``STRESS_CPU_THREADS`` overrides). Returns ``(threads, why)``."""
    import torch

    from stress.workload import threads

    try:
        n, why = threads.choose()
    except ValueError as exc:
        raise StressError(str(exc)) from None
    torch.set_num_threads(n)
    if why == "STRESS_CPU_THREADS":
        notes.append(f"cpu threads: {n} (STRESS_CPU_THREADS)")
    return torch.get_num_threads(), why


def _model_label(source: str | None) -> str | None:
    if source is None:
        return None
    if source.startswith("builtin:"):
        return source
    p = Path(source)
    return p.stem if p.suffix else p.name


class _Steps(StepCounter):
    """Counts the steps a pipeline ran and reports each one (``progress``), at most every
    ``every`` seconds except the last."""

    def __init__(self, report: Callable[..., None], stage: str, index: int, every: float = 0.2) -> None:
        super().__init__()
        self.report, self.stage, self.index, self.every = report, stage, index, every
        self._last = 0.0

    def __call__(self, pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        out = super().__call__(pipe, step, timestep, kwargs)
        total = getattr(pipe, "_num_timesteps", None)
        now = time.monotonic()
        if now - self._last >= self.every or (total and self.count >= total):
            self._last = now
            self.report(self.stage, self.index, step=self.count, total=total)
        return out


class WorkloadSession:
    """Models loaded once, batches generated on demand. Not thread-safe; one per worker process.

    ``progress`` (optional) is called with ``{"stage", "index", "step", "total"}`` as each stage starts
    and as denoising steps end (``step``/``total`` None outside the denoising stages): the worker relays
    it to the supervisor's terminal display; it is not journalled per step."""

    def __init__(self, scenario: "Scenario", run_dir: Path, emit: Callable[[str, dict], None],
                 base_dir: Path, cache_dir: Path | None = None,
                 progress: Callable[[dict], None] | None = None):
        self.scenario = scenario
        self.progress = progress
        self.run_dir = Path(run_dir)
        self.emit = emit
        self.base_dir = Path(base_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.out_dir = self.run_dir / "outputs"
        self.device: str | None = None
        self.dtype: Any = None
        self.notes: list[str] = []
        self.base: LoadedModel | None = None
        self.refiner: LoadedModel | None = None
        self.prompt = ""
        self.negative = ""
        self.applied: dict[str, Any] = {}
        self._encoders: dict[str, PromptEncoder] = {}
        self._embeds: dict[tuple, EncodedPrompt] = {}
        self._model_sched_config: dict[str, dict] = {}
        self._inputs: list[Path] | None = None
        self._image_peaks: dict[str, int] = {}
        self._tiny_vae: Any = None

    # ---- lifecycle ----------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return "sd15" if self.scenario.workload in ("sd15-img2img", "sd15-txt2img") else "sdxl"

    def load(self) -> dict:
        """Load the models onto the device. Returns ``{"load_s", "device", "dtype", "models", ...}``."""
        import torch

        t0 = time.perf_counter()
        sc = self.scenario
        check_available(sc.sampler.name)  # fail before minutes of loading
        self.device = resolve_device(sc.model.device)
        self.dtype = resolve_dtype(sc.model.dtype, self.device, self.notes)
        threads_why = "cuda device: torch's default"
        if self.device == "cpu":
            threads_why = set_cpu_threads(self.notes)[1]
        # Full-size built-ins are built where they will live; with offload that is the CPU, so that a
        # GPU too small to hold the whole model can still run it.
        build_on = "cpu" if sc.optimizations.cpu_offload else self.device
        common = dict(base_dir=self.base_dir, cache_dir=self.cache_dir, device=build_on, dtype=self.dtype)
        self.base = load_model(sc.model.base, self.kind, role="base", **common)
        self._components(self.base, build_on)
        self._prepare(self.base, "base")
        if self.kind == "sdxl" and sc.model.refiner:
            self.refiner = load_model(sc.model.refiner, "sdxl-refiner", role="refiner", **common)
            self._components(self.refiner, build_on)
            self._prepare(self.refiner, "refiner")
        if sc.workload == "sd15-img2img" and sc.img2img.inputs:
            p = Path(sc.img2img.inputs).expanduser()
            self._inputs = list_inputs(p if p.is_absolute() else self.base_dir / p)
        tok = getattr(self.base.pipe, "tokenizer", None) or getattr(self.base.pipe, "tokenizer_2", None)
        self.prompt = resolve_prompt_text(sc.prompt, self.base_dir, tok)
        self.negative = resolve_prompt_text(sc.negative_prompt, self.base_dir, tok)
        sync(self.device)
        load_s = time.perf_counter() - t0
        stats = alloc.allocator_stats(self.device)
        self.emit("alloc", {"index": None, "at": "load", **stats})
        alloc.reset_peaks(self.device)
        enc = self._encoders["base"]
        info = {
            "load_s": round(load_s, 3),
            "device": self.device,
            "device_name": torch.cuda.get_device_name(torch.cuda.current_device()) if self.device == "cuda" else "cpu",
            "dtype": str(self.dtype).replace("torch.", ""),
            "dtype_requested": sc.model.dtype,
            "cpu_threads": torch.get_num_threads(),
            "cpu_threads_reason": threads_why,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "default",
            "workload": sc.workload,
            "models": {"base": self.base.info, **({"refiner": self.refiner.info} if self.refiner else {})},
            "sampler": sc.sampler.name,
            "optimizations": self.applied,
            "prompt": {"tokens": enc.prompt_tokens(self.prompt), "attention": enc.attention,
                       "chars": len(self.prompt), "sha256": prompt_digest(self.prompt)},
            "notes": list(self.notes),
        }
        return info

    def _components(self, model: LoadedModel, build_on: str) -> None:
        """The scenario's pipeline settings that change the pipeline itself (stress.workload.components):
        SD 1.x text-to-image, the tiny VAE, the safety checker."""
        from stress.workload import components as C

        sc = self.scenario
        full = C.is_full_size(sc.model.base)
        if sc.workload == "sd15-txt2img" and model.kind == "sd15":
            import diffusers

            model.pipe = diffusers.StableDiffusionPipeline.from_pipe(model.pipe, requires_safety_checker=False)
            model.info["pipeline"] = "StableDiffusionPipeline"
        if sc.model.vae == "tiny":
            if self._tiny_vae is None:   # one instance for base and refiner, as SD.Next shares its VAE
                self._tiny_vae = C.build_tiny_vae(C.tiny_vae_config(full), device=build_on, dtype=self.dtype)
            C.replace_vae(model.pipe, self._tiny_vae)
            model.info["vae"] = "AutoencoderTiny"
        if sc.model.safety_checker and model.kind == "sd15":
            checker, fe = C.build_safety_checker(C.safety_checker_config(full), device=build_on, dtype=self.dtype)
            C.attach_safety_checker(model.pipe, checker, fe)
            model.info["safety_checker"] = "StableDiffusionSafetyChecker"

    def _prepare(self, model: LoadedModel, role: str) -> None:
        """Sampler, optimizations, device placement and the prompt encoder for one pipeline."""
        self.notes.extend(model.notes)
        pipe = model.pipe
        self._model_sched_config[role] = dict(pipe.scheduler.config)
        pipe.scheduler = make_scheduler(self.scenario.sampler.name, self._model_sched_config[role])
        self.applied[role] = apply_optimizations(pipe, self.scenario.optimizations, self.device, self.notes, role)
        enc_device = "cpu" if self.scenario.optimizations.precomputed_embeds else self.device
        self._encoders[role] = PromptEncoder(pipe, model.kind, clip_skip=self.scenario.model.clip_skip,
                                             device=enc_device, attention=attention_mode(self.scenario))

    def reload_models(self) -> dict:
        """Drop the pipelines (and the embeddings cached for them) and load them again."""
        self._drop()
        return self.load()

    def _drop(self) -> None:
        self._tiny_vae = None
        self._encoders.clear()
        self._embeds.clear()
        self.base = self.refiner = None
        self.applied = {}
        self.notes = []
        if self.device:
            alloc.free_memory(self.device)

    def close(self) -> None:
        self._drop()

    def free_memory(self) -> None:
        """gc + empty the CUDA cache (after an OOM)."""
        alloc.free_memory(self.device or "cpu")

    def allocator_stats(self) -> dict:
        return alloc.allocator_stats(self.device or "cpu")

    # ---- generation -----------------------------------------------------------------------------

    def generate(self, job: dict) -> list[dict]:
        """Run one batch end to end; one record per image. An OOM propagates as is, after what it
        held has been freed."""
        if self.base is None:
            raise StressError("generate() before load()")
        try:
            return self._generate(job)
        except BaseException as exc:
            # The traceback keeps the failed frames' tensors alive: clear them, then free the cache.
            if exc.__traceback__ is not None:
                traceback.clear_frames(exc.__traceback__)
            self.free_memory()
            raise

    def _encoded(self, role: str) -> tuple[EncodedPrompt, bool]:
        key = (role, self.prompt, self.negative, self.scenario.model.clip_skip)
        hit = self._embeds.get(key)
        if hit is not None:
            return hit, True
        enc = self._encoders[role].encode(self.prompt, self.negative)
        if self.scenario.optimizations.precomputed_embeds and self.device != "cpu":
            import dataclasses

            # Encoded on the CPU; only the embeddings go to the GPU (and stay there, cached).
            enc = dataclasses.replace(enc, **{f: getattr(enc, f).to(self.device) for f in
                                              ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                                               "negative_pooled_prompt_embeds") if getattr(enc, f) is not None})
        self._embeds[key] = enc
        return enc, False

    def _report(self, stage: str, index: int, step: int | None = None, total: int | None = None) -> None:
        if self.progress is not None:
            self.progress({"stage": stage, "index": index, "step": step, "total": total})

    def _stage_end(self, name: str, t0: float, first: int, indices: list[int], timings: dict, **extra: Any) -> None:
        sync(self.device)
        s = time.perf_counter() - t0 if t0 else 0.0
        timings[name] = round(s, 4)
        ev = {"index": first, "stage": name, "s": round(s, 4), **extra}
        if len(indices) > 1:
            ev["indices"] = indices
        self.emit("stage", ev)
        stats = alloc.allocator_stats(self.device)
        self.emit("alloc", {"index": first, "at": f"stage:{name}", **stats})
        for k in ("peak_allocated", "peak_reserved", "peak_rss"):
            if k in stats:
                self._image_peaks[k] = max(self._image_peaks.get(k, 0), int(stats[k]))
        alloc.reset_peaks(self.device)

    def _generate(self, job: dict) -> list[dict]:
        import torch

        sc = self.scenario
        images = job["images"]
        if not images:
            return []
        width, height = int(job["width"]), int(job["height"])
        indices = [int(im["index"]) for im in images]
        seeds = [int(im["seed"]) for im in images]
        first, n = indices[0], len(images)
        timings: dict[str, float] = {}
        self._image_peaks = {}
        has_refiner = self.refiner is not None
        plan = step_plan(sc.steps, sc.refiner_steps, sc.refiner.switch, sc.refiner.semantics, has_refiner)

        # text encode (cached per distinct prompt; 0 s when cached)
        self._report("text_encode", first)
        t0 = time.perf_counter()
        enc, cached = self._encoded("base")
        renc = None
        if has_refiner:
            renc, rcached = self._encoded("refiner")
            cached = cached and rcached
        self._stage_end("text_encode", 0.0 if cached else t0, first, indices, timings, cached=cached)

        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        self._seed_sde_noise(self.base.pipe, seeds[0])
        base_counter = _Steps(self._report, "base", first)
        self._report("base", first)
        t0 = time.perf_counter()
        common = dict(guidance_scale=sc.cfg, generator=gens, output_type="latent", callback_on_step_end=base_counter)
        extra: dict[str, Any] = {}
        if sc.workload == "sd15-txt2img":
            latents = self.base.pipe(width=width, height=height, num_inference_steps=plan.base_num_inference_steps,
                                     **repeat_batch(enc, n), **common).images
        elif self.kind == "sd15":
            init = [self._input_image(i, width, height) for i in indices]
            extra["input"] = [self._input_name(i) for i in indices]
            kw = repeat_batch(enc, n)
            latents = self.base.pipe(image=init, strength=sc.img2img.strength,
                                     num_inference_steps=plan.base_num_inference_steps, **kw, **common).images
        else:
            latents = self.base.pipe(width=width, height=height, num_inference_steps=plan.base_num_inference_steps,
                                     denoising_end=plan.denoising_end, **repeat_batch(enc, n), **common).images
        self._stage_end("base", t0, first, indices, timings, steps=base_counter.count)

        refiner_counter = _Steps(self._report, "refiner", first)
        decode_pipe, decode_kind = self.base.pipe, self.base.kind
        if has_refiner:
            assert self.refiner is not None and renc is not None
            self._seed_sde_noise(self.refiner.pipe, seeds[0])
            self._report("refiner", first)
            t0 = time.perf_counter()
            latents = self.refiner.pipe(image=latents, num_inference_steps=plan.refiner_num_inference_steps,
                                        denoising_start=plan.denoising_start, guidance_scale=sc.cfg, generator=gens,
                                        output_type="latent", callback_on_step_end=refiner_counter,
                                        **repeat_batch(renc, n)).images
            self._stage_end("refiner", t0, first, indices, timings, steps=refiner_counter.count)
            decode_pipe, decode_kind = self.refiner.pipe, self.refiner.kind

        self._report("vae_decode", first)
        t0 = time.perf_counter()
        rgb = decode_latents(decode_pipe, latents, decode_kind)
        del latents
        flagged = run_safety_checker(decode_pipe, rgb, self.dtype)   # diffusers runs it right after the decode
        self._stage_end("vae_decode", t0, first, indices, timings,
                        **({"safety_checked": len(flagged), "nsfw_flagged": sum(flagged)} if flagged is not None else {}))

        self._report("save", first)
        t0 = time.perf_counter()
        fmt, quality = sc.output.format, sc.output.quality
        saved = []
        for k, (idx, seed) in enumerate(zip(indices, seeds)):
            text, truncated = fit_parameters(self.prompt, self.negative,
                                             self._parameters(seed, width, height, plan, base_counter.count,
                                                              refiner_counter.count),
                                             JPEG_COMMENT_LIMIT if fmt == "jpg" else 1 << 30)
            data = encode_image(rgb[k], fmt, quality, text)
            name = output_name(idx, seed, width, height, fmt)
            write_atomic(self.out_dir / name, data)
            saved.append({"path": f"outputs/{name}", "sha256": hashlib.sha256(data).hexdigest(),
                          "pixel_sha256": pixel_digest(data), "bytes": len(data),
                          "parameters_truncated": truncated})
        self._stage_end("save", t0, first, indices, timings)

        records = []
        base_sched = scheduler_record(self.base.pipe.scheduler)
        ref_sched = scheduler_record(self.refiner.pipe.scheduler) if has_refiner else None
        for k, (idx, seed) in enumerate(zip(indices, seeds)):
            rec: dict[str, Any] = {
                "index": idx, "seed": seed, "width": width, "height": height,
                "workload": sc.workload,
                "steps": base_counter.count, "cfg": sc.cfg,
                "sampler": sc.sampler.name, "sampler_label": sampler_label(sc.sampler.name),
                "scheduler": base_sched,
                "refiner_steps": refiner_counter.count,
                "base_num_inference_steps": plan.base_num_inference_steps,
                "refiner_num_inference_steps": plan.refiner_num_inference_steps,
                "denoising_end": plan.denoising_end, "denoising_start": plan.denoising_start,
                "step_semantics": sc.refiner.semantics if has_refiner else None,
                "prompt_tokens": enc.prompt_tokens, "prompt_chunks": enc.prompt_chunks,
                "negative_tokens": enc.negative_tokens, "negative_chunks": enc.negative_chunks,
                "text_encode_cached": cached,
                "timings": {s: timings.get(s, 0.0) for s in STAGES},
                "batch_size": n,
                "outcome": "ok",
                **saved[k],
            }
            if ref_sched is not None:
                rec["refiner_scheduler"] = ref_sched
                rec["refiner_prompt_chunks"] = renc.prompt_chunks if renc else None
            if self.kind == "sd15" and sc.workload == "sd15-img2img":
                rec["strength"] = sc.img2img.strength
                rec["input"] = extra["input"][k]
            records.append(rec)
            stats = alloc.allocator_stats(self.device)
            for key, val in self._image_peaks.items():
                stats[key] = max(int(stats.get(key, 0)), val)
            self.emit("alloc", {"index": idx, "at": "image", **stats})
        alloc.reset_peaks(self.device)
        return records

    # ---- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _seed_sde_noise(pipe: Any, seed: int) -> None:
        """DPM++ SDE draws its Brownian noise from its own seed: lock it to the image's seed."""
        sched = pipe.scheduler
        if hasattr(sched, "noise_sampler_seed"):
            sched.noise_sampler_seed = seed
            sched.noise_sampler = None

    def _input_image(self, index: int, width: int, height: int) -> Any:
        if self._inputs:
            return load_input(self._inputs[index % len(self._inputs)], width, height)
        return test_pattern(index, width, height)

    def _input_name(self, index: int) -> str:
        if self._inputs:
            return self._inputs[index % len(self._inputs)].name
        return f"test-pattern:{index}"

    def _parameters(self, seed: int, width: int, height: int, plan: Any, base_run: int, refiner_run: int) -> list:
        sc = self.scenario
        params: list[tuple[str, Any]] = [
            ("Steps", sc.steps), ("Sampler", sampler_label(sc.sampler.name)), ("CFG scale", sc.cfg),
            ("Seed", seed), ("Size", f"{width}x{height}"), ("Model", _model_label(sc.model.base)),
        ]
        if sc.workload == "sd15-img2img":
            params.append(("Denoising strength", sc.img2img.strength))
        if self.refiner is not None:
            params += [("Refiner", _model_label(sc.model.refiner)), ("Refiner switch", sc.refiner.switch),
                       ("Refiner steps", sc.refiner_steps)]
        if sc.model.clip_skip > 1:
            params.append(("Clip skip", sc.model.clip_skip))
        params.append(("Version", "stress"))
        return params
