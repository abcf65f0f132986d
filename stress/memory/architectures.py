"""Which networks a scenario runs, as configs: built-in names, local diffusers folders, single files.

The planner needs the architecture, never the weights: a component is a (class, config) pair, built
on the meta device and traced with fake tensors (:mod:`stress.memory.memtrace`).

Sources, in the order they are tried:

- ``builtin:*``: :func:`stress.workload.models.builtin_component_configs`, the worker's own
  definitions (so the planner traces exactly the networks the worker builds). The full-size tables
  below are the published SDXL / SD 1.5 configurations (Stability-AI/generative-models
  ``configs/inference/sd_xl_base.yaml`` / ``sd_xl_refiner.yaml``, ``v1-inference.yaml``), kept as
  an independent cross-check (tests/test_planner.py builds both and compares parameter counts) and
  as a fallback when that module is not importable;
- a diffusers folder: ``model_index.json`` and each component's ``config.json``;
- a single ``.safetensors`` checkpoint: its header (names and shapes only; nothing else is read)
  tells SDXL base, SDXL refiner and SD 1.5 apart, as diffusers' single-file loader does; the
  full-size built-in configuration of that family is used.
"""
from __future__ import annotations

import copy
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from stress.errors import StressError

# Component name -> class, for configs that do not name their class.
_DEFAULT_CLASS = {
    "unet": "UNet2DConditionModel",
    "vae": "AutoencoderKL",
    "text_encoder": "CLIPTextModel",
    "text_encoder_2": "CLIPTextModelWithProjection",
}
_DIFFUSERS_CLASSES = ("UNet2DConditionModel", "AutoencoderKL", "AutoencoderTiny", "StableDiffusionSafetyChecker")
_TRANSFORMERS_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")

# --------------------------------------------------------------------------------------------
# Full-size configurations (architecture only)

_CLIP_L = {  # openai/clip-vit-large-patch14 text tower, as in SDXL's text_encoder/config.json
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "projection_dim": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "bos_token_id": 0, "eos_token_id": 2,
    "pad_token_id": 1,
}
_CLIP_BIGG = {  # OpenCLIP ViT-bigG-14 text tower (SDXL text_encoder_2/config.json)
    "vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "projection_dim": 1280,
    "num_hidden_layers": 32, "num_attention_heads": 20, "max_position_embeddings": 77,
    "hidden_act": "gelu", "layer_norm_eps": 1e-05, "bos_token_id": 0, "eos_token_id": 2,
    "pad_token_id": 1,
}
_VAE_SDXL = {  # sd_xl_base.yaml first_stage_config: ch 128, ch_mult [1, 2, 4, 4]
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "act_fn": "silu",
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True,
}
_VAE_SD15 = dict(_VAE_SDXL, sample_size=512, scaling_factor=0.18215, force_upcast=True)

_UNET_SDXL = {  # sd_xl_base.yaml: model_channels 320, channel_mult [1, 2, 4], attention at ds 2 and 4,
    # transformer_depth [1, 2, 10] (the first unused), 64 channels per head, context 2048, adm 2816
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048, "use_linear_projection": True, "norm_num_groups": 32,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
_UNET_SDXL_REFINER = {  # sd_xl_refiner.yaml: model_channels 384, channel_mult [1, 2, 4, 4],
    # transformer_depth 4, context 1280, adm 2560 (pooled 1280 + 5 x 256: sizes, crop, aesthetic score)
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [384, 768, 1536, 1536],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": 4, "attention_head_dim": [6, 12, 24, 24],
    "cross_attention_dim": 1280, "use_linear_projection": True, "norm_num_groups": 32,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2560,
}
_UNET_SD15 = {  # v1-inference.yaml: model_channels 320, channel_mult [1, 2, 4, 4], 8 heads, context 768
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "attention_head_dim": 8, "cross_attention_dim": 768, "norm_num_groups": 32,
}

_FALLBACK: dict[str, dict[str, dict]] = {
    "builtin:sdxl": {"unet": _UNET_SDXL, "vae": _VAE_SDXL, "text_encoder": _CLIP_L, "text_encoder_2": _CLIP_BIGG},
    "builtin:sdxl-refiner": {"unet": _UNET_SDXL_REFINER, "vae": _VAE_SDXL, "text_encoder_2": _CLIP_BIGG},
    "builtin:sd15": {"unet": _UNET_SD15, "vae": _VAE_SD15, "text_encoder": dict(_CLIP_L)},
}


@dataclass(frozen=True)
class Component:
    """One network of a pipeline: its class name and its config (diffusers or transformers)."""

    name: str
    cls: str
    config: dict = field(hash=False, compare=False)

    @property
    def library(self) -> str:
        return "diffusers" if self.cls in _DIFFUSERS_CLASSES else "transformers"


@dataclass
class Architecture:
    """The networks of one model source (base or refiner)."""

    source: str
    origin: str                     # where the configs came from, for the report
    components: dict[str, Component]

    @property
    def kind(self) -> str:
        """``sdxl`` (two text encoders), ``sdxl-refiner`` (text_encoder_2 only) or ``sd``."""
        unet = self.components["unet"].config
        if unet.get("addition_embed_type") == "text_time":
            return "sdxl" if "text_encoder" in self.components else "sdxl-refiner"
        return "sd"

    @property
    def text_encoders(self) -> list[str]:
        return [n for n in ("text_encoder", "text_encoder_2") if n in self.components]

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.components["vae"].config.get("block_out_channels", [0] * 4)) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.components["unet"].config.get("in_channels", 4))

    def cross_attention_width(self) -> int:
        """Feature width of the prompt embedding (the encoders' hidden sizes, concatenated)."""
        return sum(int(self.components[n].config["hidden_size"]) for n in self.text_encoders)

    def pooled_width(self) -> int:
        te = self.components.get("text_encoder_2")
        return int(te.config.get("projection_dim") or te.config["hidden_size"]) if te else 0

    def time_ids(self) -> int:
        """Numbers in SDXL's ``add_time_ids`` (6 for the base, 5 for the refiner)."""
        unet = self.components["unet"].config
        if unet.get("addition_embed_type") != "text_time":
            return 0
        extra = int(unet["projection_class_embeddings_input_dim"]) - self.pooled_width()
        return extra // int(unet["addition_time_embed_dim"])


def _builtin_configs(name: str) -> tuple[dict[str, dict], str]:
    try:
        from stress.workload import models as _models  # the worker's own definitions, when present
    except ImportError:
        _models = None
    fn = getattr(_models, "builtin_component_configs", None) if _models else None
    if fn is not None:
        return fn(name), "stress.workload.models.builtin_component_configs"
    if name not in _FALLBACK:
        raise StressError(f"built-in model {name!r} needs stress.workload.models (not importable here)")
    return copy.deepcopy(_FALLBACK[name]), "stress.memory.architectures (published configs)"


def _class_of(name: str, config: dict) -> str:
    cls = config.get("_class_name")
    if not cls and config.get("architectures"):
        cls = config["architectures"][0]
    return cls or _DEFAULT_CLASS.get(name, "")


def _from_configs(source: str, origin: str, configs: dict[str, dict]) -> Architecture:
    comps = {}
    for name, cfg in configs.items():
        if name not in _DEFAULT_CLASS or cfg is None:
            continue  # tokenizers, schedulers: no GPU memory of their own
        cls = _class_of(name, cfg)
        if cls not in _DIFFUSERS_CLASSES + _TRANSFORMERS_CLASSES:
            raise StressError(f"{source}: component {name} is a {cls or 'model of unknown class'}; "
                              "the planner knows UNet2DConditionModel, AutoencoderKL and CLIP text encoders")
        comps[name] = Component(name, cls, dict(cfg))
    missing = [n for n in ("unet", "vae") if n not in comps]
    if missing:
        raise StressError(f"{source}: no {' or '.join(missing)} found; is this a Stable Diffusion model?")
    if not any(n in comps for n in ("text_encoder", "text_encoder_2")):
        raise StressError(f"{source}: no text encoder found")
    return Architecture(source, origin, comps)


def _from_folder(path: Path) -> Architecture:
    index_path = path / "model_index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StressError(f"cannot read {index_path}: {exc}") from None
    configs = {}
    for name in _DEFAULT_CLASS:
        if name not in index or not index[name] or index[name][0] is None:
            continue
        cfg_path = path / name / "config.json"
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StressError(f"cannot read {cfg_path}: {exc}") from None
        cfg.setdefault("_class_name", index[name][1])
        configs[name] = cfg
    return _from_configs(str(path), f"{path}/*/config.json", configs)


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names in a .safetensors file, from its JSON header only."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100 * 1024 * 1024:
                raise ValueError("header too large")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, struct.error) as exc:
        raise StressError(f"{path} is not a readable .safetensors file ({exc})") from None
    return [k for k in header if k != "__metadata__"]


def _single_file_family(path: Path) -> str:
    if path.suffix != ".safetensors":
        raise StressError(f"{path}: the planner reads .safetensors headers only; convert the checkpoint "
                          "or point model.base at a diffusers folder")
    keys = safetensors_keys(path)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("conditioner.embedders.1.model.transformer"):
        return "builtin:sdxl"
    if has("conditioner.embedders.0.model.transformer"):
        return "builtin:sdxl-refiner"
    if has("cond_stage_model.transformer"):
        return "builtin:sd15"
    raise StressError(f"{path}: cannot tell which Stable Diffusion family this checkpoint is "
                      "(no SDXL or SD 1.5 text encoder keys)")


def load_architecture(source: str, base_dir: Path | None = None) -> Architecture:
    """The architecture of ``model.base`` / ``model.refiner`` (see the module docstring)."""
    if source.startswith("builtin:"):
        configs, origin = _builtin_configs(source)
        return _from_configs(source, origin, configs)
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        family = _single_file_family(path)
        configs, origin = _builtin_configs(family)
        return _from_configs(str(path), f"{family} configuration (detected from the checkpoint's keys)",
                             configs)
    raise StressError(f"model not found: {path}")


def config_key(comp: Component) -> str:
    """A stable key of a component's architecture, for caching traces."""
    clean = {k: v for k, v in comp.config.items() if not k.startswith("_") and k not in ("architectures",)}
    return comp.cls + json.dumps(clean, sort_keys=True, default=str)


def with_scenario_components(arch: Architecture, vae: str, safety_checker: bool) -> Architecture:
    """The architecture as the worker runs it (stress.workload.components): ``vae: tiny`` swaps in
    AutoencoderTiny; ``safety_checker`` adds the SD 1.x safety checker (SD only)."""
    from stress.workload import components as C

    comps = dict(arch.components)
    full = C.is_full_size(arch.source)
    if vae == "tiny":
        comps["vae"] = Component("vae", "AutoencoderTiny", C.tiny_vae_config(full))
    if safety_checker and arch.kind == "sd":
        comps["safety_checker"] = Component("safety_checker", "StableDiffusionSafetyChecker",
                                            C.safety_checker_config(full))
    return Architecture(arch.source, arch.origin, comps)
