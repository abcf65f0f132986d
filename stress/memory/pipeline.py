"""Walk one image of a scenario through the real networks, stage by stage, recording every allocation.

:class:`PipelineTracer` builds the scenario's networks (the diffusers / transformers classes, in the
scenario's dtype, with its attention backend, VAE tiling/slicing as configured) on the meta device,
where tensors have shapes, dtypes and strides but no memory, and runs them inside a
:class:`~stress.memory.memtrace.StorageTracker`, the way the worker (``stress.workload.engine``) runs
a session:

1. once a session (the worker caches the embeddings of each distinct prompt): the weights are loaded,
   then each text encoder encodes one 77-token chunk (every chunk allocates the same), the
   embeddings of every chunk of prompt and negative are concatenated and padded to the same count;
2. per image: the base pipeline call (``repeat_batch`` copies, the CFG batch, the latents, then
   ``traced_steps`` UNet evaluations with the CFG batch and the sampler's float32 update; one step
   is enough, every step allocates the same sequence), the refiner's call the same way, then the VAE
   decode through ``vae.decode`` itself, so tiling and slicing run diffusers' own code, in the dtype
   the SDXL pipelines decode in (an fp16 VAE whose config says ``force_upcast`` is cast to fp32 for
   the decode and back), and the post-processing on the device.

Weights exist before the trace; their residency is added to the same timeline as explicit events by
:class:`Residency`: everything resident for the whole session without offload; with ``cpu_offload``
accelerate's chained hooks as ``enable_model_cpu_offload`` installs them (a model's hook moves out only
the model before it in ``model_cpu_offload_seq``; every model of a pipeline goes out at the end of its
call), and a second image that starts where the first ended; the VAE's fp32 copy while an upcast
decode runs.

What depends on the device is the attention kernel SDPA picks. On a GPU, flash or memory-efficient
attention return the output and a float32 log-sum-exp and never build the score matrix; on the meta
device SDPA would fall back to the math kernel, so :class:`_SdpaAsOnGpu` routes it to the fused
kernel with the GPU's footprint (the one the CPU picks too: the tests compare against real CPU runs).
``attention: math`` is diffusers' classic ``AttnProcessor`` (the score matrix built with ``baddbmm``,
then softmax), as the worker sets it; ``sliced`` is ``set_attention_slice("auto")`` on the UNet, as
``pipe.enable_attention_slicing()`` does (the VAE keeps SDPA).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from stress.memory.architectures import Architecture, Component, config_key
from stress.memory.memtrace import ModuleLabels, StorageTracker, Timeline, storage_bytes
from stress.memory.networks import apply_attention, build_module, materialize, quiet_libraries, weight_sizes
from stress.memory.residency import Residency
from stress.memory.traces import AttentionCall, ImageTrace, StageInfo

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CHUNK_TOKENS = 77


# --------------------------------------------------------------------------------------------
# The tracer


@dataclass
class TraceSettings:
    dtype: str = "fp16"
    attention: str = "sdpa"
    channels_last: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False
    cfg: bool = True
    batch: int = 1
    base_chunks: int = 1                   # 77-token chunks after padding prompt and negative
    refiner_chunks: int = 1
    clip_skip: int = 1
    traced_steps: int = 1
    upcast_vae: bool | None = None         # None: as the SDXL pipelines decide (fp16 + force_upcast)
    conv_workspace: float = 1.0            # cuDNN workspace estimate per convolution (x its input)
    img2img: bool = False                  # sd15-img2img: VAE-encode an input image first
    sequential_offload: bool = False       # enable_sequential_cpu_offload
    precomputed_embeds: bool = False       # prompts encoded on the CPU; text encoders never on the GPU


def vae_decode_upcasts(kind: str, dtype: torch.dtype, vae: Component) -> bool:
    """Whether the pipeline casts the VAE to fp32 for the decode, as the installed diffusers does
    (tests/test_planner_components.py reads its source to hold this to it): the SDXL pipelines
    (``pipeline_stable_diffusion_xl*.py``: ``needs_upcasting = self.vae.dtype == torch.float16 and
    self.vae.config.force_upcast``) do, for an fp16 VAE whose config says ``force_upcast`` (an
    AutoencoderKL config without the key means True, its default; AutoencoderTiny registers False);
    the SD 1.x pipelines never upcast (bf16 never either)."""
    if kind not in ("sdxl", "sdxl-refiner") or dtype != torch.float16:
        return False
    if vae.cls == "AutoencoderTiny":
        return False
    return bool(vae.config.get("force_upcast", True))


class _SdpaAsOnGpu(TorchFunctionMode):
    """On the meta device SDPA would fall back to the math kernel and build the score matrix; a GPU
    runs flash or memory-efficient attention, which return the output and a float32 log-sum-exp.
    Route SDPA to the fused kernel with that footprint (the one the CPU picks too)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
            dropout = args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0)
            causal = args[5] if len(args) > 5 else kwargs.get("is_causal", False)
            if kwargs.get("enable_gqa") and k.shape[-3] != q.shape[-3]:
                rep = q.shape[-3] // k.shape[-3]
                k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, dropout, causal, attn_mask=mask, scale=kwargs.get("scale"))[0]
        return func(*args, **kwargs)


class PipelineTracer:
    """Traces a scenario's pipeline per resolution; networks are built once, traces cached."""

    def __init__(self, base: Architecture, refiner: Architecture | None, settings: TraceSettings,
                 *, device: str = "meta"):
        self.base, self.refiner, self.s = base, refiner, settings
        self.device = device          # "meta": shapes only (planning); "cpu": real tensors (tests)
        self.dtype = DTYPES[settings.dtype]
        self.modules: dict[str, torch.nn.Module] = {}
        self.components: dict[str, Component] = {}
        self.sizes: dict[str, list[int]] = {}
        t0 = time.perf_counter()
        for prefix, arch in (("base", base), ("refiner", refiner)):
            if arch is None:
                continue
            for name, comp in arch.components.items():
                key = f"{prefix}.{name}"
                mod = build_module(comp)
                apply_attention(mod, comp, settings.attention)
                cl = settings.channels_last and comp.name in ("unet", "vae")
                mod = materialize(mod, self.dtype, device, channels_last=cl)
                self.modules[key], self.components[key] = mod, comp
                self.sizes[key] = weight_sizes(mod)
        self.vae_decode_dtype = self._vae_decode_dtype()
        self.upcast_vae: torch.nn.Module | None = None
        if self.vae_decode_dtype != self.dtype:
            # The pipeline's vae.to(float32): traced with an fp32 copy of the decoder's network.
            comp = self.components[self.decoder_key]
            self.upcast_vae = build_module(comp)
            apply_attention(self.upcast_vae, comp, settings.attention)
            self.upcast_vae = materialize(self.upcast_vae, self.vae_decode_dtype, device,
                        channels_last=settings.channels_last)
        self.build_seconds = time.perf_counter() - t0
        self._cache: dict[tuple[int, int], ImageTrace] = {}
        self._prefix_state: Any = None
        self._weight_keys: dict[str, list[int]] = {}   # Residency.keys: one set per model for every trace

    # What the networks are built with; every other setting only changes how they are traced.
    BUILD_FIELDS = ("dtype", "attention", "channels_last", "upcast_vae")

    def retarget(self, settings: TraceSettings) -> None:
        """Trace with ``settings`` from now on (the networks stay: ``settings`` must agree on
        :attr:`BUILD_FIELDS`); the traces made with other settings are dropped. make_plan builds the
        networks while the prompts are counted, and gives the counted chunks here."""
        if settings == self.s:
            return
        for f in self.BUILD_FIELDS:
            if getattr(settings, f) != getattr(self.s, f):
                raise ValueError(f"retarget: {f} {getattr(settings, f)!r} differs from the networks' "
                                 f"{getattr(self.s, f)!r}; build another tracer")
        self.s = settings
        self._cache.clear()
        self._prefix_state = None

    def _chains(self) -> dict[str, list[str]]:
        """Each pipeline's models in its ``model_cpu_offload_seq`` order (diffusers' own class
        attribute), as ``enable_model_cpu_offload`` chains their hooks."""
        import diffusers

        out = {}
        for prefix, arch in (("base", self.base), ("refiner", self.refiner)):
            if arch is None:
                continue
            if prefix == "refiner":
                cls = "StableDiffusionXLImg2ImgPipeline"
            elif arch.kind != "sd":
                cls = "StableDiffusionXLPipeline"
            else:
                cls = "StableDiffusionImg2ImgPipeline" if self.s.img2img else "StableDiffusionPipeline"
            with quiet_libraries():   # the pipeline modules' import warns that torchvision is missing
                seq = getattr(diffusers, cls).model_cpu_offload_seq.split("->")
            out[prefix] = [f"{prefix}.{n}" for n in seq if f"{prefix}.{n}" in self.modules]
        return out

    def _offload_mode(self) -> str:
        if self.s.sequential_offload:
            return "sequential"
        return "model" if self.s.cpu_offload else "resident"

    def _pinned(self) -> frozenset:
        return frozenset(k for k in self.modules if k.endswith(".safety_checker"))

    def _never(self) -> frozenset:
        if not self.s.precomputed_embeds:
            return frozenset()
        return frozenset(k for k in self.modules if k.split(".")[-1] in ("text_encoder", "text_encoder_2"))

    # ---- facts used by accounting ----
    @property
    def decoder_key(self) -> str:
        return "refiner.vae" if self.refiner is not None else "base.vae"

    def _vae_decode_dtype(self) -> torch.dtype:
        vae = self.components[self.decoder_key]
        upcast = self.s.upcast_vae
        if upcast is None:
            upcast = vae_decode_upcasts((self.refiner or self.base).kind, self.dtype, vae)
        return torch.float32 if upcast else self.dtype

    def weights_bytes(self) -> dict[str, int]:
        return {k: sum(v) for k, v in self.sizes.items()}

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        f = self.base.vae_scale_factor
        return self.base.latent_channels, height // f, width // f

    # ---- tracing ----
    def trace(self, width: int, height: int) -> ImageTrace:
        key = (width, height)
        if key not in self._cache:
            self._cache[key] = self._trace(width, height)
        return self._cache[key]

    def prefix_timeline(self) -> Timeline:
        """The session's prefix (weights loaded, prompts encoded), traced once: every image's trace
        starts from it (``ImageTrace.prefix`` is this timeline)."""
        return self._prefix()[0]

    def _all_weights(self) -> Iterator[torch.Tensor]:
        mods = list(self.modules.values()) + ([self.upcast_vae] if self.upcast_vae is not None else [])
        for m in mods:
            yield from m.parameters()
            yield from m.buffers()

    def _ctx(self) -> Any:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.device(self.device))   # every factory call lands on our device
        if self.device == "meta":
            stack.enter_context(_SdpaAsOnGpu())
        return stack

    def _labels(self, tl: Timeline) -> ModuleLabels:
        roots = list(self.modules.items())
        if self.upcast_vae is not None:
            roots.append((self.decoder_key, self.upcast_vae))
        return ModuleLabels(tl, roots)

    def _prefix(self) -> tuple[Timeline, Residency, dict[str, dict[str, torch.Tensor]], dict[str, StageInfo]]:
        """Load the weights and encode the prompts, once: the worker encodes each distinct prompt
        once and keeps the embeddings on the GPU for every later image."""
        if self._prefix_state is None:
            tl = Timeline()
            res = Residency(tl, self.sizes, self._offload_mode(), pinned=self._pinned(), never=self._never(),
                            chains=self._chains(), keys=self._weight_keys)
            tl.mark("load")
            res.load_all(list(self.modules))
            stages: dict[str, StageInfo] = {}
            tracker = StorageTracker(tl, self._all_weights(), count_flops=True,
                                     conv_workspace=self.s.conv_workspace)
            if self.s.precomputed_embeds:
                # Encoded on the CPU (its own timeline, not the GPU's); the embeddings then move to
                # the GPU and stay there, cached, like the worker's.
                enc_tl = Timeline()
                enc_res = Residency(enc_tl, self.sizes, "resident")
                enc_tracker = StorageTracker(enc_tl, self._all_weights(), count_flops=True)
                with torch.no_grad(), self._ctx(), enc_tracker, self._labels(enc_tl):
                    cached = self._encode_all(enc_tl, enc_res, stages)
                enc_tracker.detach_all()
                self._finish_stages(enc_tl, stages)
                for name in stages:
                    tl.mark(name)
                for d in cached.values():
                    tl.alloc(storage_bytes(d.values()))
                for info in stages.values():
                    info.peak, info.weights_at_peak, info.peak_module = tl.live, tl.weights_live, ""
            else:
                tracker = StorageTracker(tl, self._all_weights(), count_flops=True,
                                         conv_workspace=self.s.conv_workspace)
                # The worker encodes outside any pipeline call: no maybe_free_model_hooks after it.
                with torch.no_grad(), self._ctx(), tracker, self._labels(tl), res.sequential_hooks(self._roots()):
                    cached = self._encode_all(tl, res, stages)
                tracker.detach_all()   # the cached embeddings live as long as the session
                self._finish_stages(tl, stages)
            self._prefix_state = (tl, res, cached, stages)
        return self._prefix_state

    def _encode_all(self, tl: Timeline, res: Residency, stages: dict[str, StageInfo]) -> dict:
        cached = {"base": self._encode(tl, res, stages, "base", self.base, self.s.base_chunks)}
        if self.refiner is not None:
            cached["refiner"] = self._encode(tl, res, stages, "refiner", self.refiner, self.s.refiner_chunks)
        return cached

    def _roots(self) -> list[torch.nn.Module]:
        return list(self.modules.values()) + ([self.upcast_vae] if self.upcast_vae is not None else [])

    def _trace(self, width: int, height: int) -> ImageTrace:
        t0 = time.perf_counter()
        ptl, pres, cached, pstages = self._prefix()
        tl = ptl.fork()
        res = pres.continue_on(tl)
        stages: dict[str, StageInfo] = {}
        self._traced_image(tl, res, stages, width, height, cached)
        leaked = tl.live - ptl.live + (ptl.weights_live - tl.weights_live)
        steady = None
        moves = [("prefix", *m) for m in pres.log] + [("image", *m) for m in res.log]
        if res.mode == "model":   # what the first image left on the GPU is where the next one starts
            steady = tl.fork()
            sres = res.continue_on(steady)
            self._traced_image(steady, sres, {}, width, height, cached)
            moves += [("steady", *m) for m in sres.log]
        self._finish_stages(tl, stages, steady)
        return ImageTrace(width, height, self.s.batch, ptl, tl, {**pstages, **stages},
                          time.perf_counter() - t0, leaked=leaked, steady=steady, residency=moves)

    def _traced_image(self, tl: Timeline, res: Residency, stages: dict[str, StageInfo], width: int, height: int,
                      cached: dict) -> None:
        existing = list(self._all_weights()) + [t for d in cached.values() for t in d.values()]
        tracker = StorageTracker(tl, existing, count_flops=True, conv_workspace=self.s.conv_workspace)
        with torch.no_grad(), self._ctx(), tracker, self._labels(tl), res.sequential_hooks(self._roots()):
            self._run_image(tl, res, stages, width, height, cached)
        tracker.detach_all()

    @staticmethod
    def _finish_stages(tl: Timeline, stages: dict[str, StageInfo], also: Timeline | None = None) -> None:
        for name, info in stages.items():
            t = also if also is not None and also.stage_peaks.get(name, -1) > tl.stage_peaks.get(name, 0) else tl
            info.peak = t.stage_peaks.get(name, 0)
            info.weights_at_peak = t.stage_peak_weights.get(name, 0)
            info.peak_module = t.stage_peak_modules.get(name, "")

    @contextlib.contextmanager
    def _stage(self, tl: Timeline, stages: dict[str, StageInfo], name: str, component: str,
               module: torch.nn.Module) -> Iterator[StageInfo]:
        info = StageInfo(name, component)
        stages[name] = info
        tl.mark(name)
        hooks = self._attention_hooks(component, module, info)
        try:
            yield info
        finally:
            for h in hooks:
                h.remove()
            info.flops = tl.flops.get(name, 0)

    def _attention_hooks(self, component: str, root: torch.nn.Module, info: StageInfo) -> list[Any]:
        handles = []
        for name, mod in root.named_modules():
            cls = type(mod).__name__
            if cls == "Attention" and hasattr(mod, "heads"):
                def hook(m, args, kwargs, _name=f"{component}.{name}"):  # noqa: ANN001, ANN202
                    hs = args[0] if args else kwargs.get("hidden_states")
                    enc = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
                    q = hs.shape[2] * hs.shape[3] if hs.dim() == 4 else hs.shape[1]
                    k = enc.shape[1] if enc is not None else q
                    info.attention.append(AttentionCall(_name, "cross" if enc is not None else "self",
                                                        hs.shape[0], m.heads, q, k))
                handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))
            elif cls.startswith("CLIP") and cls.endswith("Attention"):
                def hook2(m, args, kwargs, _name=f"{component}.{name}"):  # noqa: ANN001, ANN202
                    hs = args[0] if args else kwargs.get("hidden_states")
                    info.attention.append(AttentionCall(_name, "self", hs.shape[0], m.num_heads,
                                                        hs.shape[1], hs.shape[1]))
                handles.append(mod.register_forward_pre_hook(hook2, with_kwargs=True))
        return handles

    # ---- the stages ----
    def _encode(self, tl: Timeline, res: Residency, stages: dict[str, StageInfo], prefix: str,
                arch: Architecture, chunks: int) -> dict[str, torch.Tensor]:
        """As the worker's PromptEncoder (SD.Next through compel): each 77-token chunk encoded on its
        own, chunks concatenated on the token axis, encoders on the feature axis, the shorter of
        prompt and negative padded to the same chunk count; the pooled embedding of the last
        encoder. Returns the batch-1 embeddings the worker caches."""
        per_encoder_pos, per_encoder_neg = [], []
        pooled = None
        for te_name in arch.text_encoders:
            key = f"{prefix}.{te_name}"
            te = self.modules[key]
            with self._stage(tl, stages, f"text_encode:{prefix}.{te_name}", key, te) as info:
                res.use(key)
                vocab = int(self.components[key].config.get("vocab_size", 49408))
                ids = torch.randint(0, vocab, (1, CHUNK_TOKENS))
                out = te(ids, output_hidden_states=True, return_dict=True)
                if arch.kind == "sd":
                    layer = out.hidden_states[-self.s.clip_skip] if self.s.clip_skip > 1 else out.last_hidden_state
                else:
                    layer = out.hidden_states[-(self.s.clip_skip + 1)]
                hidden = layer.to(self.dtype)
                if te_name == "text_encoder_2" and getattr(out, "text_embeds", None) is not None:
                    pooled = out.text_embeds.to(self.dtype).clone()
                del out, layer, ids
                info.evaluations = 1
                # Every chunk allocates the same activations, one chunk at a time; the outputs add up.
                pos = torch.cat([hidden] + [hidden.clone() for _ in range(chunks - 1)], dim=1)
                neg = torch.cat([hidden.clone() for _ in range(chunks)], dim=1)
                del hidden
                per_encoder_pos.append(pos)
                per_encoder_neg.append(neg)
        cond: dict[str, torch.Tensor] = {}
        cond["prompt_embeds"] = torch.cat(per_encoder_pos, dim=-1) if len(per_encoder_pos) > 1 else per_encoder_pos[0]
        cond["negative_prompt_embeds"] = (torch.cat(per_encoder_neg, dim=-1) if len(per_encoder_neg) > 1
                                          else per_encoder_neg[0])
        del per_encoder_pos, per_encoder_neg
        if arch.kind != "sd":
            if pooled is None:
                pooled = torch.zeros(1, arch.pooled_width(), dtype=self.dtype)
            cond["pooled_prompt_embeds"] = pooled
            cond["negative_pooled_prompt_embeds"] = pooled.clone()
        return cond

    def _pipeline_inputs(self, arch: Architecture, cached: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the pipeline call builds from the cached embeddings: ``repeat_batch`` copies for the
        batch, the pipeline's own repeat, the CFG batch (negative first), the SDXL time ids."""
        b = self.s.batch
        kw = {k: torch.cat([v] * b, dim=0) for k, v in cached.items()}      # repeat_batch
        pos = kw["prompt_embeds"].repeat(1, 1, 1)
        neg = kw["negative_prompt_embeds"].repeat(1, 1, 1)
        cond = {"_kw": kw, "_neg": neg}   # kept alive, as the caller's and the pipeline's locals are
        cond["encoder_hidden_states"] = torch.cat([neg, pos], dim=0) if self.s.cfg else pos
        del pos
        if arch.kind != "sd":
            p, n = kw["pooled_prompt_embeds"].repeat(1, 1), kw["negative_pooled_prompt_embeds"].repeat(1, 1)
            cond["text_embeds"] = torch.cat([n, p], dim=0) if self.s.cfg else p
            ids = torch.zeros(1, arch.time_ids(), dtype=self.dtype)
            cond["time_ids"] = ids.repeat((2 if self.s.cfg else 1) * b, 1)
        return cond

    def _denoise(self, tl: Timeline, res: Residency, stages: dict[str, StageInfo], prefix: str,
                 latents: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        key = f"{prefix}.unet"
        res.use(key)
        unet = self.modules[key]
        history: list[torch.Tensor] = []
        with self._stage(tl, stages, f"{prefix}:denoise", key, unet) as info:
            info.evaluations = self.s.traced_steps
            for _ in range(self.s.traced_steps):
                t = torch.full((), 500.0)
                model_in = torch.cat([latents] * 2) if self.s.cfg else latents
                kwargs: dict[str, Any] = {"encoder_hidden_states": cond["encoder_hidden_states"],
                                          "return_dict": False}
                if "text_embeds" in cond:
                    kwargs["added_cond_kwargs"] = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
                noise = unet(model_in, t, **kwargs)[0]
                del model_in
                if self.s.cfg:
                    uncond, text = noise.chunk(2)
                    noise = uncond + 6.0 * (text - uncond)
                    del uncond, text
                # DPM++ 2M: the data prediction joins a 2-deep history; the update runs in float32
                # and is cast back (diffusers' DPMSolverMultistepScheduler.step).
                x0 = latents - noise
                del noise
                history = (history + [x0])[-2:]
                prev = latents.to(torch.float32) * 0.9 + history[-1].to(torch.float32) * 0.1
                latents = prev.to(self.dtype)
                del prev, x0
        del history
        return latents

    def _vae_encode(self, tl: Timeline, res: Residency, stages: dict[str, StageInfo], prefix: str,
                    width: int, height: int) -> torch.Tensor:
        key = f"{prefix}.vae"
        res.use(key)
        vae = self.modules[key]
        with self._stage(tl, stages, f"{prefix}:vae_encode", key, vae):
            image = torch.zeros(self.s.batch, 3, height, width, dtype=self.dtype)
            # The worker passes one generator per image, so prepare_latents encodes image[i:i+1]
            # one at a time and concatenates (diffusers' img2img ``prepare_latents``).
            parts = []
            for i in range(self.s.batch):
                out = vae.encode(image[i:i + 1])
                parts.append(out.latent_dist.sample() if hasattr(out, "latent_dist") else out.latents)
                del out
            del image
            latents = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
            del parts
            latents = latents * float(vae.config.get("scaling_factor", 0.18215))
        return latents

    def _decode(self, tl: Timeline, res: Residency, stages: dict[str, StageInfo], latents: torch.Tensor) -> None:
        key = self.decoder_key
        vae = self.upcast_vae if self.upcast_vae is not None else self.modules[key]
        with self._stage(tl, stages, "vae_decode", key, vae):
            res.use(key)                # the VAE's hook fires on decode (diffusers' apply_forward_hook)
            undo = res.swap_dtype(key, weight_sizes(vae)) if self.upcast_vae is not None else None
            if self.s.vae_tiling:
                vae.enable_tiling()
            if self.s.vae_slicing:
                vae.enable_slicing()
            latents_batch = latents.shape[0]
            z = latents.to(self.vae_decode_dtype) / float(vae.config.get("scaling_factor", 0.13025))
            del latents
            image = vae.decode(z, return_dict=False)[0]
            del z
            if undo is not None:   # decode_latents casts the VAE back before post-processing
                undo()
            # VaeImageProcessor.postprocess: denormalize on the device, then .cpu().
            image = (image * 0.5 + 0.5).clamp(0, 1)
            del image
            self._safety_check(tl, res, latents_batch)

    def _safety_check(self, tl: Timeline, res: Residency, batch: int) -> None:
        """``run_safety_checker``: the feature extractor on the CPU, then on the GPU the CLIP vision
        tower on (B, 3, S, S) pixels, the projection and the two cosine-distance matmuls; the rest of
        ``StableDiffusionSafetyChecker.forward`` is numpy on the CPU. Part of the decode stage."""
        key = "base.safety_checker"
        checker = self.modules.get(key)
        if checker is None:
            return
        res.use(key)
        size = int(self.components[key].config["vision_config"]["image_size"])
        clip_input = torch.zeros(batch, 3, size, size, dtype=self.dtype)
        pooled = checker.vision_model(clip_input)[1]
        del clip_input
        embeds = checker.visual_projection(pooled)
        del pooled
        from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance

        a = cosine_distance(embeds, checker.special_care_embeds)
        b = cosine_distance(embeds, checker.concept_embeds)
        del a, b, embeds

    def _run_image(self, tl: Timeline, res: Residency, stages: dict[str, StageInfo], width: int, height: int,
                   cached: dict[str, dict[str, torch.Tensor]]) -> None:
        c, h, w = self.latent_shape(width, height)
        b = self.s.batch
        tl.mark("base:prepare")        # the worker's "base" stage is the whole base pipeline call
        cond = self._pipeline_inputs(self.base, cached["base"])
        if self.s.img2img:
            latents = self._vae_encode(tl, res, stages, "base", width, height).to(self.dtype)
        else:
            latents = torch.randn(b, c, h, w).to(self.dtype)   # prepare_latents: CPU generator, moved
        latents = latents * 1.0                                # * scheduler.init_noise_sigma
        latents = self._denoise(tl, res, stages, "base", latents, cond)
        del cond
        res.finish_pipeline("base")     # the base pipeline call ends (output_type="latent")
        if self.refiner is not None:
            tl.mark("refiner:prepare")
            cond = self._pipeline_inputs(self.refiner, cached["refiner"])
            latents = torch.cat([latents], dim=0)              # img2img prepare_latents (4-channel input)
            latents = self._denoise(tl, res, stages, "refiner", latents, cond)
            del cond
            res.finish_pipeline("refiner")
        self._decode(tl, res, stages, latents)   # the worker's decode_latents: outside any pipeline call
        del latents


__all__ = ["PipelineTracer", "TraceSettings", "ImageTrace", "StageInfo", "AttentionCall", "DTYPES",
           "build_module", "materialize", "weight_sizes", "config_key", "quiet_libraries", "apply_attention",
           "Residency", "vae_decode_upcasts"]
