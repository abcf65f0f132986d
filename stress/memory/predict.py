"""From traces to the plan: accounting per image and session, predicted peaks per resolution.

For each distinct resolution of the scenario one image (one batch) is traced (see
:mod:`stress.memory.pipeline`; with model offload two: the first, and a steady one that starts with
what the first left on the GPU); the session's prefix (weights, prompt encoding) is traced once.
Memory per resolution:

- the tensor peak (what ``max_memory_allocated`` would show before rounding) with its split into
  weights and activations, and the stage and module where it happens;
- the prefix and image allocation sequence replayed through the caching-allocator model, plus the
  cuBLAS workspace: ``peak_allocated`` / ``peak_reserved`` as torch.cuda would report them;
- ``predicted_peak`` = reserved peak + cuDNN workspace allowance + CUDA context: device memory
  in use at the peak, as NVML / nvidia-smi would show it for the worker;
- ``required``: the smallest memory in which the same sequence runs without an OOM (the allocator
  releases its cached segments and retries before it gives up, so this can be below the peak a big
  GPU shows), plus the same two allowances; ``fits`` = ``required <= available``.

The session replay runs one image of every resolution, in the scenario's order, after the prefix
(with model offload: the first resolution's two images, then the steady image of each other one):
a long-lived worker keeps its cache between images, and switching resolutions can fragment it.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, NamedTuple

from stress.background import Background

from stress.plan import base_steps_run, expand, refiner_steps_run
from stress.memory.accounting import attention_totals, img2img_steps_run, one_torch_thread
from stress.memory.measured import stage_peaks
from stress.memory.overhead import MiB, CachingAllocatorModel, OverheadModel
from stress.scenario import Scenario

_BISECT_STEP = 16 * MiB


class _Peaks(NamedTuple):
    peak_allocated: int
    peak_reserved: int


def _replay(events: list[tuple[int, int]], overhead: OverheadModel, capacity: int | None = None,
            *, stop_at_oom: bool = False) -> Any:
    alloc = CachingAllocatorModel(capacity)
    alloc.malloc(-(1 << 62), overhead.cublas_workspace)   # kept for the process's life
    return alloc.replay(events, stop_at_oom=stop_at_oom)


class Replayer:
    """Replays of one event prefix (the session's weights and prompt encoding, the same for every
    resolution) followed by different rests, the prefix replayed once: each replay continues from a
    copy of the allocator after the prefix (:meth:`CachingAllocatorModel.clone`), which is exact
    whenever the capacity is at least the prefix's reserved peak, and replays from scratch otherwise."""

    def __init__(self, prefix: list[tuple[int, int]], overhead: OverheadModel):
        self.prefix, self.overhead = prefix, overhead
        self.after_prefix = CachingAllocatorModel(None)
        self.after_prefix.malloc(-(1 << 62), overhead.cublas_workspace)
        self.after_prefix.replay(prefix)

    def replay(self, rest: list[tuple[int, int]], capacity: int | None = None, *, stop_at_oom: bool = False) -> Any:
        if capacity is None or self.after_prefix.peak_reserved <= capacity:
            return self.after_prefix.clone(capacity).replay(rest, stop_at_oom=stop_at_oom)
        return _replay(self.prefix + rest, self.overhead, capacity, stop_at_oom=stop_at_oom)

    def minimum_capacity(self, rest: list[tuple[int, int]], low: int, high: int) -> int:
        """Smallest allocator capacity (to ``_BISECT_STEP``) at which prefix + ``rest`` does not OOM."""
        if self.replay(rest, low, stop_at_oom=True).oom is False:
            return low
        while high - low > _BISECT_STEP:
            mid = (low + high) // 2
            if self.replay(rest, mid, stop_at_oom=True).oom:
                low = mid
            else:
                high = mid
        return high


def minimum_capacity(events: list[tuple[int, int]], overhead: OverheadModel, low: int, high: int) -> int:
    """Smallest allocator capacity (to ``_BISECT_STEP``) at which the sequence does not OOM."""
    return Replayer([], overhead).minimum_capacity(events, low, high)


def _steps(sc: Scenario) -> tuple[int, int]:
    if sc.workload == "sd15-img2img":
        return img2img_steps_run(sc.steps, sc.img2img.strength), 0
    return base_steps_run(sc), refiner_steps_run(sc)


def _stage_rows(trace: Any) -> list[dict]:
    rows = []
    for name, st in trace.stages.items():
        rows.append({"stage": name, "engine_stage": name.split(":")[0], "component": st.component,
                     "peak": st.peak, "weights": st.weights_at_peak, "activations": st.peak - st.weights_at_peak,
                     "peak_module": st.peak_module, "flops": st.flops})
    return rows


def balanced_half(order: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The resolutions a second process traces, so that both sides trace about as many latent
    positions (their traces and replays take time in proportion): the split with the smallest
    difference (this process, which traced the prefix already, never taking more), over every split
    of up to 16 resolutions, else largest first to the lighter side. In ``order``'s order."""
    if len(order) < 2:
        return []
    sizes = [w * h for w, h in order]
    total = sum(sizes)
    if len(order) <= 16:
        best, pick = None, 0
        for mask in range(1 << len(order)):
            theirs = sum(sz for i, sz in enumerate(sizes) if mask >> i & 1)
            key = (abs(total - 2 * theirs), total - theirs > theirs, mask)
            if best is None or key < best:
                best, pick = key, mask
        return [r for i, r in enumerate(order) if pick >> i & 1]
    load = [0, 0]
    side: dict[tuple[int, int], int] = {}
    for (w, h) in sorted(order, key=lambda r: -r[0] * r[1]):
        i = 0 if load[0] < load[1] else 1
        side[(w, h)] = i
        load[i] += w * h
    return [r for r in order if side[r] == 1]


def predict(sc: Scenario, tracer: Any, prompts: dict, gpu: Any, overhead: OverheadModel,
            say: Callable[[str], None]) -> dict:
    s = tracer.s
    cfg_mult = 2 if s.cfg else 1
    base_steps, refiner_steps = _steps(sc)
    jobs = expand(sc)
    per_res_images: dict[tuple[int, int], int] = {}
    for j in jobs:
        per_res_images[(j.width, j.height)] = per_res_images.get((j.width, j.height), 0) + len(j.images)
    order = list(dict.fromkeys((w, h) for w, h in sc.resolutions))
    weights = tracer.weights_bytes()

    # The session's prefix (weights loaded, prompts encoded), which every trace shares, is traced
    # here first; then the resolutions are shared between this process and a forked child, balanced
    # by latent positions (the traces and replays take time in proportion; 2 cores).
    t0 = time.perf_counter()
    prefix = tracer.prefix_timeline()
    say(f"traced the prefix (weights, prompts) in {time.perf_counter() - t0:.1f} s")
    full_prefix = Replayer(prefix.events, overhead)
    lean_prefix = Replayer(prefix.events_without_workspace(), overhead)

    parent = os.getpid()

    def trace_and_replay(keys: list[tuple[int, int]], *, child: bool) -> dict:
        child = child and os.getpid() != parent   # the fallback runs it here: it says what it traces then
        out = {}
        for w, h in keys:
            t1 = time.perf_counter()
            if not child:
                say(f"tracing {w}x{h}")
            tr = tracer.trace(w, h)
            if not child:
                say(f"traced {w}x{h} in {time.perf_counter() - t1:.1f} s")
            # With the estimated conv workspaces: what a big GPU shows. Without (plus the minimum the
            # fallback plans need): what the run needs, since PyTorch falls back when memory is short.
            # Every trace shares the prefix (the tracer traces it once).
            assert tr.prefix is prefix
            big = full_prefix.replay(tr.rest_events())
            lean_rest = tr.rest_events(workspace=False)
            lean = lean_prefix.replay(lean_rest)
            required_cap = lean_prefix.minimum_capacity(lean_rest, lean.peak_allocated, lean.peak_reserved)
            out[(w, h)] = (dataclasses.replace(tr, prefix=None) if child else tr,
                           (big.peak_allocated, big.peak_reserved), (lean.peak_allocated, lean.peak_reserved),
                           required_cap)
        return out

    theirs = balanced_half(order)
    job = Background(lambda: trace_and_replay(theirs, child=True), in_child=one_torch_thread)
    try:
        done = trace_and_replay([k for k in order if k not in theirs], child=False)
        there = job.result()
    finally:
        job.cancel()
    for key, (tr, *rest) in there.items():
        if tr.prefix is None:                 # traced in the child: the prefix is the one traced here
            tr = dataclasses.replace(tr, prefix=prefix)
            tracer._cache[key] = tr
        done[key] = (tr, *rest)
    traces = {k: done[k][0] for k in order}

    available = gpu.available
    res_rows = []
    acc_rows = []
    fixed = overhead.cuda_context
    for (w, h) in order:
        tr, big, lean, required_cap = done[(w, h)]
        big = _Peaks(*big)
        lean = _Peaks(*lean)
        required = required_cap + overhead.cudnn_min_workspace + fixed
        predicted = max(big.peak_reserved + fixed, required)   # never below what it needs
        fits = None if available is None else required <= available
        tensor_peak = tr.peak
        row = {
            "width": w, "height": h, "images": per_res_images.get((w, h), 0),
            "weights": tr.peak_weights,
            "activations": tensor_peak - tr.peak_weights,
            "tensor_peak": tensor_peak,
            "peak_allocated": big.peak_allocated,
            "peak_reserved": big.peak_reserved,
            "peak_allocated_without_workspace": lean.peak_allocated,
            "peak_reserved_without_workspace": lean.peak_reserved,
            "overhead": {
                "allocator": lean.peak_reserved - tensor_peak - overhead.cublas_workspace,
                "cublas_workspace": overhead.cublas_workspace,
                "cudnn_workspace_estimate": big.peak_reserved - lean.peak_reserved,
                "cuda_context_estimate": overhead.cuda_context,
            },
            "predicted_peak": predicted,
            "required": required,
            "peak_stage": tr.peak_stage,
            "peak_module": tr.peak_module,
            "stages": _stage_rows(tr),
            "allocator_stages": stage_peaks(tr, overhead),
            "fits": fits,
            "headroom": None if available is None else available - required,
            "leaked": tr.leaked,
            "trace_seconds": round(tr.seconds, 2),
        }
        res_rows.append(row)
        acc_rows.append(_accounting_row(tracer, tr, w, h, cfg_mult, base_steps, refiner_steps, prompts,
                                        per_res_images.get((w, h), 0)))

    # The session: prefix once, then one image of each resolution in order (one cycle).
    session_events: list[tuple[int, int]] = []
    lean_session: list[tuple[int, int]] = []
    for key in order:
        # The first image of the session as it starts after the prompts; any later one as it starts
        # after another image (model offload: the steady trace, which follows any image's end state).
        later = bool(session_events)
        session_events.extend(traces[key].later_events() if later else traces[key].rest_events())
        lean_session.extend(traces[key].later_events(False) if later else traces[key].rest_events(False))
    srep = full_prefix.replay(session_events)
    slean = lean_prefix.replay(lean_session)
    s_required = lean_prefix.minimum_capacity(lean_session, slean.peak_allocated, slean.peak_reserved)
    s_required += overhead.cudnn_min_workspace + fixed
    worst = max(res_rows, key=lambda r: r["predicted_peak"])
    session_mem = {
        "peak_allocated": srep.peak_allocated, "peak_reserved": srep.peak_reserved,
        "predicted_peak": max(srep.peak_reserved + fixed, s_required), "required": s_required,
        "fits": None if available is None else s_required <= available,
        "worst_resolution": f"{worst['width']}x{worst['height']}",
    }
    accounting = _session_accounting(sc, tracer, acc_rows, prompts, base_steps, refiner_steps, cfg_mult, jobs)
    notes = list(overhead.notes)
    if sc.optimizations.compile:
        notes.append("optimizations.compile: predicted for eager execution; torch.compile (inductor) "
                     "usually needs less activation memory, plus its own workspace")
    if sc.model.device == "cpu":
        notes.append("model.device is cpu: the GPU figures describe the same session on a GPU")
    if any(r["leaked"] for r in res_rows):
        notes.append("the tracer saw an image leave memory allocated (a tracer limitation; see docs/plan.md)")
    return {
        "scenario": sc.name,
        "workload": sc.workload,
        "models": _models(tracer, weights),
        "settings": {
            "dtype": s.dtype, "attention": s.attention, "cfg": sc.cfg, "batch_size": s.batch,
            "vae_decode_dtype": str(tracer.vae_decode_dtype).replace("torch.", ""),
            "channels_last": s.channels_last, "vae_tiling": s.vae_tiling, "vae_slicing": s.vae_slicing,
            "cpu_offload": s.cpu_offload, "compile": sc.optimizations.compile,
            "sequential_offload": s.sequential_offload, "precomputed_embeds": s.precomputed_embeds,
            "vae": sc.model.vae, "safety_checker": sc.model.safety_checker, "workload": sc.workload,
            "traced_unet_steps": s.traced_steps,
        },
        "prompts": {"prompt": prompts["prompt"].as_dict(), "negative": prompts["negative"].as_dict(),
                    "padded_chunks": prompts["padded_chunks"],
                    "cross_attention_keys": prompts["cross_attention_keys"]},
        "accounting": accounting,
        "memory": {"resolutions": res_rows, "session": session_mem, "gpu": gpu.as_dict(),
                   "overhead_model": overhead.as_dict()},
        "notes": notes,
        "build_seconds": round(tracer.build_seconds, 2),
    }


def _models(tracer: Any, weights: dict[str, int]) -> dict:
    out: dict[str, Any] = {}
    for role, arch in (("base", tracer.base), ("refiner", tracer.refiner)):
        if arch is None:
            continue
        comps = {}
        for name, comp in arch.components.items():
            key = f"{role}.{name}"
            mod = tracer.modules[key]
            comps[name] = {"class": comp.cls, "parameters": sum(p.numel() for p in mod.parameters()),
                           "bytes": weights[key]}
        out[role] = {"source": arch.source, "config_origin": arch.origin, "kind": arch.kind,
                     "components": comps, "bytes": sum(c["bytes"] for c in comps.values())}
    return out


def _accounting_row(tracer: Any, tr: Any, w: int, h: int, cfg_mult: int, base_steps: int, refiner_steps: int,
                    prompts: dict, images: int) -> dict:
    s = tracer.s
    c, lh, lw = tracer.latent_shape(w, h)
    samples = s.batch * cfg_mult
    row: dict[str, Any] = {"width": w, "height": h, "images": images, "latent": [c, lh, lw],
                           "latent_positions": lh * lw}
    unets = {}
    for role, steps in (("base", base_steps), ("refiner", refiner_steps)):
        st = tr.stages.get(f"{role}:denoise")
        if st is None:
            continue
        per_eval_flops = st.flops // max(1, st.evaluations * samples)
        att = attention_totals(st.attention, st.evaluations)
        unets[role] = {
            "steps": steps,
            "unet_evaluations": steps * cfg_mult,
            "flops_per_evaluation": per_eval_flops,
            "flops": per_eval_flops * steps * cfg_mult,
            "attention_per_evaluation": att.as_dict(),
            "attention_qk": {"self": att.self_qk * steps * cfg_mult, "cross": att.cross_qk * steps * cfg_mult},
        }
    row["unet"] = unets
    for stage in ("vae_decode", "base:vae_encode"):
        st = tr.stages.get(stage)
        if st is not None:
            row[stage.replace("base:", "")] = {"flops": st.flops // max(1, s.batch),
                                               "attention_per_evaluation": attention_totals(st.attention).as_dict()}
    row["flops"] = (sum(u["flops"] for u in unets.values()) + row.get("vae_decode", {}).get("flops", 0)
                    + row.get("vae_encode", {}).get("flops", 0))
    return row


def _session_accounting(sc: Scenario, tracer: Any, rows: list[dict], prompts: dict, base_steps: int,
                        refiner_steps: int, cfg_mult: int, jobs: list) -> dict:
    trace0 = next(iter(tracer._cache.values()))
    text = {}
    text_flops = 0
    for name, st in trace0.stages.items():
        if not name.startswith("text_encode:"):
            continue
        enc = name.split(":", 1)[1]
        # prompt + negative, every chunk (the worker pads the shorter one with the empty prompt's
        # embedding, computed once per encoder); once per session: embeddings are cached.
        forwards = prompts["prompt"].chunks + prompts["negative"].chunks
        if prompts["prompt"].chunks != prompts["negative"].chunks:
            forwards += 1
        if enc.endswith("text_encoder_2"):
            forwards += 2   # pooled embeddings of prompt and negative (first 77 tokens)
        text[enc] = {"forwards_per_session": forwards, "flops_per_chunk": st.flops,
                     "flops": st.flops * forwards,
                     "attention_per_chunk": attention_totals(st.attention).as_dict()}
        text_flops += st.flops * forwards
    by_res = {(r["width"], r["height"]): r for r in rows}
    total_flops = text_flops
    total_evals = 0
    positions = 0
    for j in jobs:
        r = by_res[(j.width, j.height)]
        total_flops += r["flops"] * len(j.images)
        total_evals += sum(u["unet_evaluations"] for u in r["unet"].values()) * len(j.images)
        positions += r["latent_positions"] * len(j.images)
    return {
        "images": sc.images,
        "batches": len(jobs),
        "batch_size": sc.batch_size,
        "base_steps_per_image": base_steps,
        "refiner_steps_per_image": refiner_steps,
        "cfg_batch": cfg_mult,
        "unet_evaluations_per_image": (base_steps + refiner_steps) * cfg_mult,
        "unet_evaluations": total_evals,
        "unet_forward_calls": sum((base_steps + refiner_steps) for _ in jobs),
        "latent_positions": positions,
        "text_encoders": text,
        "per_resolution": rows,
        "flops": total_flops,
    }
