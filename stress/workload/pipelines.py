"""Running the pipelines: step semantics, optimizations, decoding, img2img inputs and saving images.

The SDXL base and refiner run with ``output_type="latent"`` (latents go base -> refiner without a
decode) and the VAE decode is done here, the way the SDXL pipeline does it after its loop (fp16 VAEs
with ``force_upcast`` decode in fp32), so that each stage can be timed and measured on its own.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stress.errors import StressError
from stress.workload.prompts import truncate_for_metadata

# ---------------------------------------------------------------------------------------------
# Step semantics


@dataclass(frozen=True)
class StepPlan:
    """What each pipeline is called with. ``*_num_inference_steps`` is the requested schedule length,
    not the number of steps that run (the ``denoising_end``/``denoising_start`` cut decides that)."""

    base_num_inference_steps: int
    refiner_num_inference_steps: int
    denoising_end: float | None
    denoising_start: float | None


def step_plan(steps: int, refiner_steps: int, switch: float, semantics: str, refiner: bool) -> StepPlan:
    """``sdnext``: the base gets ``int(steps // switch + 1)`` and stops at ``switch``, so it runs about
    ``steps`` steps; the refiner gets ``int(refiner_steps // (1 - switch) // 2 + 1)`` and starts at
    ``switch`` (SD.Next's arithmetic, float floor division included). ``diffusers``: the diffusers
    documentation's split of one schedule: base ``steps``, refiner ``refiner_steps`` (default: the
    same), cut at ``switch``."""
    if not refiner:
        return StepPlan(steps, 0, None, None)
    if semantics == "sdnext":
        return StepPlan(int(steps // switch + 1), int(refiner_steps // (1 - switch) // 2 + 1), switch, switch)
    if semantics == "diffusers":
        return StepPlan(steps, refiner_steps, switch, switch)
    raise StressError(f"unknown refiner step semantics {semantics!r} (sdnext or diffusers)")


class StepCounter:
    """A ``callback_on_step_end`` that counts the steps a pipeline actually ran."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, pipe: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        self.count += 1
        return kwargs


# ---------------------------------------------------------------------------------------------
# Optimizations


def apply_optimizations(pipe: Any, opts: Any, device: Any, notes: list[str], role: str) -> dict[str, Any]:
    """Apply scenario ``optimizations`` to one pipeline and move it to ``device`` (unless offloaded).
    Returns what was applied; anything ignored is explained in ``notes``."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    dev = torch.device(device)
    applied: dict[str, Any] = {}
    vae_attn = hasattr(pipe.vae, "set_attn_processor")   # AutoencoderTiny has no attention
    if opts.attention == "sdpa":
        pipe.unet.set_attn_processor(AttnProcessor2_0())
        if vae_attn:
            pipe.vae.set_attn_processor(AttnProcessor2_0())
    elif opts.attention == "math":
        pipe.unet.set_attn_processor(AttnProcessor())
        if vae_attn:
            pipe.vae.set_attn_processor(AttnProcessor())
    elif opts.attention == "sliced":
        pipe.enable_attention_slicing()
    applied["attention"] = opts.attention
    if opts.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        applied["channels_last"] = True
    if opts.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
        applied["cudnn_benchmark"] = True
        if dev.type != "cuda":
            notes.append(f"{role}: cudnn_benchmark has no effect on {dev.type}")
    if opts.vae_tiling:
        pipe.vae.enable_tiling()
        applied["vae_tiling"] = True
    if opts.vae_slicing:
        pipe.vae.enable_slicing()
        applied["vae_slicing"] = True
    offloaded = False
    if getattr(opts, "sequential_offload", False):
        if dev.type == "cuda":
            pipe.enable_sequential_cpu_offload(device=dev)
            offloaded = True
            applied["sequential_offload"] = True
        else:
            applied["sequential_offload"] = "ignored"
            notes.append(f"{role}: sequential_offload ignored: it only means something on CUDA (device is {dev.type})")
    if opts.cpu_offload:
        if dev.type == "cuda":
            pipe.enable_model_cpu_offload(device=dev)
            offloaded = True
            applied["cpu_offload"] = True
        else:
            applied["cpu_offload"] = "ignored"
            notes.append(f"{role}: cpu_offload ignored: it only means something on CUDA (device is {dev.type})")
    if not offloaded:
        pipe.to(dev)
    if getattr(opts, "precomputed_embeds", False):
        # The prompts are encoded on the CPU (the worker's PromptEncoder runs there); the text
        # encoders never go to the GPU, with or without offload hooks.
        for name in ("text_encoder", "text_encoder_2"):
            te = getattr(pipe, name, None)
            if te is not None:
                if offloaded:
                    from accelerate.hooks import remove_hook_from_module

                    remove_hook_from_module(te, recurse=True)
                te.to("cpu")
        applied["precomputed_embeds"] = True
    if opts.compile:
        # Compiled lazily, on the first call: the first image pays for it (its base time shows it).
        pipe.unet = torch.compile(pipe.unet)
        applied["compile"] = True
    pipe.set_progress_bar_config(disable=True)  # 38 progress lines per image would drown the worker log
    return applied


def execution_device(pipe: Any) -> Any:
    return getattr(pipe, "_execution_device", None) or pipe.device


def sync(device: Any) -> None:
    """Wait for queued GPU work, so that a stage's time is the stage's."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# Decoding


def decode_latents(pipe: Any, latents: Any, kind: str) -> Any:
    """Latents -> uint8 RGB array (B, H, W, 3), as the pipeline's own post-loop code would decode."""
    import numpy as np
    import torch

    vae = pipe.vae
    with torch.no_grad():
        needs_upcasting = False
        if kind in ("sdxl", "sdxl-refiner"):
            # SDXL's VAE overflows in fp16: the pipeline decodes in fp32 when force_upcast is set.
            needs_upcasting = vae.dtype == torch.float16 and bool(vae.config.force_upcast)
            if needs_upcasting:
                vae.to(dtype=torch.float32)
                latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
        if latents.dtype != vae.dtype:
            latents = latents.to(vae.dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean_t = torch.tensor(mean).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            std_t = torch.tensor(std).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std_t / vae.config.scaling_factor + mean_t
        else:
            latents = latents / vae.config.scaling_factor
        try:
            from diffusers.utils.torch_utils import get_module_execution_device

            latents = latents.to(get_module_execution_device(vae))
        except ImportError:  # older diffusers
            latents = latents.to(execution_device(pipe))
        image = vae.decode(latents, return_dict=False)[0]
        if needs_upcasting:
            vae.to(dtype=torch.float16)
        arr = pipe.image_processor.postprocess(image, output_type="np")
    return (np.asarray(arr) * 255).round().astype("uint8")


def run_safety_checker(pipe: Any, rgb: Any, dtype: Any) -> list[bool] | None:
    """The pipeline's own ``run_safety_checker`` on the decoded images (SD 1.x with a safety checker;
    None otherwise): the feature extractor on the CPU, the checker on its device. Flagged images are
    blacked out in ``rgb``, as diffusers does. Returns the per-image flags."""
    import numpy as np

    if getattr(pipe, "safety_checker", None) is None or not hasattr(pipe, "run_safety_checker"):
        return None
    from diffusers.utils.torch_utils import get_module_execution_device

    images = rgb.astype(np.float32) / 255.0
    checked, flags = pipe.run_safety_checker(images, get_module_execution_device(pipe.safety_checker), dtype)
    flags = [bool(f) for f in (flags or [])]
    for k, f in enumerate(flags):
        if f:
            rgb[k] = (np.asarray(checked[k]) * 255).round().astype("uint8")
    return flags


# ---------------------------------------------------------------------------------------------
# img2img inputs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def list_inputs(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise StressError(f"img2img.inputs: no .png/.jpg/.webp images in {folder}")
    return files


def test_pattern(index: int, width: int, height: int) -> Any:
    """A deterministic RGB test image for img2img: gradients, colour bars and a disc that moves with
    ``index`` (so consecutive images differ)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    k = 2 + index % 5
    r = u
    g = v
    b = 0.5 + 0.5 * np.sin(2 * np.pi * k * (u + v))
    img = np.stack([r, g, b], axis=-1)
    bars = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 1], [0, 1, 0], [1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0]], np.float32)
    bar_h = max(height // 8, 1)
    img[:bar_h] = bars[np.minimum((u[:bar_h] * 8).astype(int), 7)]
    cx, cy = 0.2 + 0.6 * ((index * 0.37) % 1.0), 0.3 + 0.5 * ((index * 0.61) % 1.0)
    disc = (u - cx) ** 2 + ((v - cy) * height / max(width, 1)) ** 2 < 0.02
    img[disc] = [0.9, 0.4, 0.1]
    return Image.fromarray((img * 255).round().astype(np.uint8), "RGB")


def load_input(path: Path, width: int, height: int) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    except OSError as exc:
        raise StressError(f"img2img.inputs: cannot read {path}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Saving

JPEG_COMMENT_LIMIT = 65000  # one COM segment holds at most 65,533 bytes


def a1111_parameters(prompt: str, negative: str, params: list[tuple[str, Any]]) -> str:
    """A1111's generation-parameters text: prompt, ``Negative prompt: ...``, then ``Key: value, ...``."""
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{k}: {v}" for k, v in params if v is not None))
    return "\n".join(lines)


def fit_parameters(prompt: str, negative: str, params: list[tuple[str, Any]], limit: int) -> tuple[str, bool]:
    """The parameters text within ``limit`` bytes: prompts shortened (with their length and sha256
    appended) only when the whole would not fit."""
    text = a1111_parameters(prompt, negative, params)
    if len(text.encode("utf-8")) <= limit:
        return text, False
    budget = max(limit - len(a1111_parameters("", "", params).encode("utf-8")) - 64, 512)
    neg_budget = min(len(negative.encode("utf-8")), budget // 4)
    neg = truncate_for_metadata(negative, neg_budget) if negative else ""
    pos = truncate_for_metadata(prompt, budget - len(neg.encode("utf-8")))
    return a1111_parameters(pos, neg, params), True


def encode_image(rgb: Any, fmt: str, quality: int, parameters: str) -> bytes:
    """The file bytes of one image with its parameters embedded; no timestamps, so reruns are
    byte-identical. JPEG: a COM segment (UTF-8; PIL ``info["comment"]``, ``identify -verbose``'s
    ``comment:``, A1111's PNG-info reader). PNG: a ``parameters`` text chunk (as A1111 writes)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    img = Image.fromarray(rgb, "RGB")
    buf = io.BytesIO()
    if fmt == "png":
        info = PngInfo()
        info.add_text("parameters", parameters)
        img.save(buf, "PNG", pnginfo=info)
    else:
        img.save(buf, "JPEG", quality=quality, comment=parameters.encode("utf-8"))
    return buf.getvalue()


def pixel_digest(data: bytes) -> str:
    """sha256 of the RGB pixels decoded back from the file bytes (what the decode probe re-checks)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return hashlib.sha256(im.convert("RGB").tobytes()).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename: a crash never leaves a half-written image behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def output_name(index: int, seed: int, width: int, height: int, fmt: str) -> str:
    return f"{index:05d}-s{seed}-{width}x{height}.{'png' if fmt == 'png' else 'jpg'}"
