"""Optional pipeline components a scenario can ask for, the same definitions for the worker and the planner.

- ``model.vae: tiny``: diffusers' ``AutoencoderTiny`` (the TAESD architecture) in place of the model's
  AutoencoderKL, with seeded random weights: a toy-width config for the tiny built-ins, diffusers'
  default (the published TAESD / TAESDXL config: 64 channels, 3 blocks per level) otherwise;
- ``model.safety_checker``: the SD 1.x ``StableDiffusionSafetyChecker`` (a CLIP ViT vision tower +
  projection) and its ``CLIPImageProcessor`` feature extractor, as a default diffusers SD 1.x pipeline
  loads them (CompVis/stable-diffusion-safety-checker: ViT-L/14 at 224 px, projection 768), random
  weights; tiny built-ins get a toy vision tower. The concept embeddings stay at diffusers' initial
  ones, so no random image is ever flagged (a flagged image would be blacked out).

Component configs are plain dicts (``_class_name`` names the class), like
:func:`stress.workload.models.builtin_component_configs`.
"""
from __future__ import annotations

import copy
from typing import Any

TAESD_FULL: dict = {"_class_name": "AutoencoderTiny"}         # diffusers' defaults are TAESD's
TAESD_TINY: dict = {"_class_name": "AutoencoderTiny", "encoder_block_out_channels": [16, 16, 16, 16],
                    "decoder_block_out_channels": [16, 16, 16, 16], "num_encoder_blocks": [1, 1, 1, 1],
                    "num_decoder_blocks": [1, 1, 1, 1]}

# CompVis/stable-diffusion-safety-checker config.json (the vision tower: CLIP ViT-L/14, 224 px).
SAFETY_FULL: dict = {"_class_name": "StableDiffusionSafetyChecker", "projection_dim": 768,
                     "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                       "num_attention_heads": 16, "patch_size": 14, "image_size": 224,
                                       "hidden_act": "quick_gelu", "projection_dim": 768}}
SAFETY_TINY: dict = {"_class_name": "StableDiffusionSafetyChecker", "projection_dim": 32,
                     "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                       "num_attention_heads": 4, "patch_size": 8, "image_size": 32,
                                       "hidden_act": "quick_gelu", "projection_dim": 32}}


def tiny_vae_config(full_size: bool) -> dict:
    return copy.deepcopy(TAESD_FULL if full_size else TAESD_TINY)


def safety_checker_config(full_size: bool) -> dict:
    return copy.deepcopy(SAFETY_FULL if full_size else SAFETY_TINY)


def is_full_size(source: str) -> bool:
    """Built-in ``tiny-*`` models get tiny components; every other source full-size ones."""
    return not source.startswith("builtin:tiny-")


def build_tiny_vae(config: dict, device: Any = "cpu", dtype: Any = None, seed: int = 4001) -> Any:
    import diffusers
    import torch

    cfg = {k: v for k, v in config.items() if k != "_class_name"}
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderTiny.from_config(cfg)
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)


def build_safety_checker(config: dict, device: Any = "cpu", dtype: Any = None, seed: int = 4002) -> tuple[Any, Any]:
    """(safety_checker, feature_extractor)."""
    import torch
    import transformers
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    vision = dict(config["vision_config"])
    clip_cfg = transformers.CLIPConfig(vision_config=vision, projection_dim=config["projection_dim"],
                                       text_config={"hidden_size": 32, "intermediate_size": 64,
                                                    "num_hidden_layers": 1, "num_attention_heads": 4})
    torch.manual_seed(seed)
    checker = StableDiffusionSafetyChecker(clip_cfg).to(device=device, dtype=dtype).eval().requires_grad_(False)
    size = int(vision["image_size"])
    proc = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor  # no torchvision here
    fe = proc(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return checker, fe


def attach_safety_checker(pipe: Any, checker: Any, feature_extractor: Any) -> None:
    """Register both as the pipeline's own components (so ``.to()`` and model offload see them:
    diffusers' ``_exclude_from_cpu_offload = ["safety_checker"]`` keeps it on the GPU)."""
    pipe.register_modules(safety_checker=checker, feature_extractor=feature_extractor)
    pipe.register_to_config(requires_safety_checker=True)


def replace_vae(pipe: Any, vae: Any) -> None:
    pipe.register_modules(vae=vae)
    if hasattr(pipe, "image_processor"):
        from diffusers.image_processor import VaeImageProcessor

        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        pipe.vae_scale_factor = factor
        pipe.image_processor = VaeImageProcessor(vae_scale_factor=factor)
