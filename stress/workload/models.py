"""Model sources: built-in random-weight models, local diffusers folders and single-file checkpoints.

Built-in models need no download. They are built offline from configs with seeded random weights:

- ``builtin:tiny-sdxl``, ``builtin:tiny-sdxl-refiner``, ``builtin:tiny-sd15``: the real architectures'
  structure at toy width (8x VAE, two text encoders + ``text_time`` conditioning for the base, only
  text_encoder_2 + aesthetic-score conditioning for the refiner). Saved once to the cache folder
  (built in a temporary folder, then renamed into place) and then loaded through the same
  ``from_pretrained`` path as a real checkpoint.
- ``builtin:sdxl``, ``builtin:sdxl-refiner``, ``builtin:sd15``: the full-size architectures (SDXL UNet
  2.57 B parameters) with random weights, for GPU machines without downloaded weights. Saving ~7-10 GB
  of random numbers is pointless, so these are built directly on the target device in the target
  dtype at every load (seeded; a few seconds on a GPU). Their config folder (configs + tokenizers, no
  weights) is saved to the cache: it is also the offline config for single-file checkpoints.

The tokenizers of built-in models use a synthetic CLIP BPE vocabulary (49,408 entries, laid out as
CLIP's: 256 byte symbols, the same with ``</w>``, 48,894 merges, ``<|startoftext|>``,
``<|endoftext|>``), trained deterministically on the prompt generator's words and topped up with
letter n-gram merges, so it tokenizes any text deterministically and the same way on every machine.

:func:`builtin_component_configs` gives the memory planner the exact component configs.
"""
from __future__ import annotations

import copy
import hashlib
import heapq
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stress.errors import EnvironmentProblem, StressError

log = logging.getLogger("stress.workload")

BUILTIN_FORMAT = 1          # bump when the build procedure changes (the cache key includes it)
VOCAB_SIZE = 49408          # CLIP's
N_MERGES = VOCAB_SIZE - 512 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

KINDS = ("sdxl", "sdxl-refiner", "sd15")


@dataclass(frozen=True)
class BuiltinSpec:
    name: str
    kind: str           # sdxl | sdxl-refiner | sd15
    full_size: bool
    seed: int


BUILTINS: dict[str, BuiltinSpec] = {
    "builtin:tiny-sdxl": BuiltinSpec("builtin:tiny-sdxl", "sdxl", False, 1001),
    "builtin:tiny-sdxl-refiner": BuiltinSpec("builtin:tiny-sdxl-refiner", "sdxl-refiner", False, 1002),
    "builtin:tiny-sd15": BuiltinSpec("builtin:tiny-sd15", "sd15", False, 1003),
    "builtin:sdxl": BuiltinSpec("builtin:sdxl", "sdxl", True, 2001),
    "builtin:sdxl-refiner": BuiltinSpec("builtin:sdxl-refiner", "sdxl-refiner", True, 2002),
    "builtin:sd15": BuiltinSpec("builtin:sd15", "sd15", True, 2003),
}
# The full-size config folder a single-file checkpoint of each kind is loaded against.
FULL_SIZE_FOR_KIND = {"sdxl": "builtin:sdxl", "sdxl-refiner": "builtin:sdxl-refiner", "sd15": "builtin:sd15"}


def default_cache_dir() -> Path:
    env = os.environ.get("STRESS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stress" / "models"


# --------------------------------------------------------------------------------------------
# Component configs (diffusers / transformers config dicts, as in the real repositories)

_SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
}
_SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "timestep_spacing": "leading",
}


def _clip_text(hidden: int, layers: int, heads: int, inter: int, act: str, proj: int, with_projection: bool) -> dict:
    return {
        "architectures": ["CLIPTextModelWithProjection" if with_projection else "CLIPTextModel"],
        "model_type": "clip_text_model", "vocab_size": VOCAB_SIZE, "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "max_position_embeddings": 77, "hidden_act": act, "projection_dim": proj, "layer_norm_eps": 1e-05,
        "attention_dropout": 0.0, "dropout": 0.0, "initializer_range": 0.02, "initializer_factor": 1.0,
        # As the real SDXL/SD 1.5 encoders: eos_token_id 2 selects transformers' legacy pooling (argmax
        # of the ids), which finds <|endoftext|> = 49407, the highest id, in both vocabularies.
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    }


def _vae(channels: list[int], layers: int, scaling: float, sample: int) -> dict:
    return {
        "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": channels,
        "down_block_types": ["DownEncoderBlock2D"] * len(channels), "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": layers, "norm_num_groups": 32,
        "sample_size": sample, "scaling_factor": scaling, "force_upcast": True,
    }


def _unet(**kw: Any) -> dict:
    base = {
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "center_input_sample": False,
        "conv_in_kernel": 3, "conv_out_kernel": 3, "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
        "in_channels": 4, "out_channels": 4, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
        "norm_num_groups": 32, "resnet_time_scale_shift": "default", "time_embedding_type": "positional",
        "only_cross_attention": False, "upcast_attention": False, "dual_cross_attention": False,
    }
    base.update(kw)
    return base


def _sdxl_unet(channels: list[int], heads: list[int], tlayers: list[int], cross: int, time_dim: int,
               pooled: int, layers: int, sample: int) -> dict:
    return _unet(
        block_out_channels=channels, attention_head_dim=heads, transformer_layers_per_block=tlayers,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        cross_attention_dim=cross, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        # pooled text embedding + 6 size/crop numbers, each embedded in time_dim
        projection_class_embeddings_input_dim=pooled + 6 * time_dim,
        layers_per_block=layers, use_linear_projection=True, sample_size=sample)


def _refiner_unet(channels: list[int], heads: list[int], tlayers: int, cross: int, time_dim: int,
                  pooled: int, layers: int, sample: int) -> dict:
    return _unet(
        block_out_channels=channels, attention_head_dim=heads, transformer_layers_per_block=tlayers,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        cross_attention_dim=cross, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        # pooled text embedding + 4 size/crop numbers + the aesthetic score, each embedded in time_dim
        projection_class_embeddings_input_dim=pooled + 5 * time_dim,
        layers_per_block=layers, use_linear_projection=True, sample_size=sample)


def _sd15_unet(channels: list[int], heads: int | list[int], cross: int, layers: int, sample: int) -> dict:
    return _unet(
        block_out_channels=channels, attention_head_dim=heads, cross_attention_dim=cross,
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        layers_per_block=layers, use_linear_projection=False, sample_size=sample)


def _configs_for(spec: BuiltinSpec) -> dict[str, dict]:
    if spec.full_size:
        te1 = _clip_text(768, 12, 12, 3072, "quick_gelu", 768, False)           # CLIP ViT-L/14
        te2 = _clip_text(1280, 32, 20, 5120, "gelu", 1280, True)                # OpenCLIP ViT-bigG/14
        if spec.kind == "sdxl":
            return {"unet": _sdxl_unet([320, 640, 1280], [5, 10, 20], [1, 2, 10], 2048, 256, 1280, 2, 128),
                    "vae": _vae([128, 256, 512, 512], 2, 0.13025, 1024),
                    "text_encoder": te1, "text_encoder_2": te2, "scheduler": dict(_SDXL_SCHEDULER)}
        if spec.kind == "sdxl-refiner":
            return {"unet": _refiner_unet([384, 768, 1536, 1536], [6, 12, 24, 24], 4, 1280, 256, 1280, 2, 128),
                    "vae": _vae([128, 256, 512, 512], 2, 0.13025, 1024),
                    "text_encoder_2": te2, "scheduler": dict(_SDXL_SCHEDULER)}
        return {"unet": _sd15_unet([320, 640, 1280, 1280], 8, 768, 2, 64),
                "vae": _vae([128, 256, 512, 512], 2, 0.18215, 512),
                "text_encoder": te1, "scheduler": dict(_SD15_SCHEDULER)}
    # Tiny: the same block structure at toy width (norm groups of 32 need channels in multiples of 32).
    te1 = _clip_text(32, 3, 4, 64, "quick_gelu", 32, False)
    te2 = _clip_text(64, 3, 4, 128, "gelu", 64, True)
    if spec.kind == "sdxl":
        return {"unet": _sdxl_unet([32, 64, 128], [1, 2, 4], [1, 1, 2], 32 + 64, 8, 64, 2, 32),
                "vae": _vae([32, 32, 64, 64], 1, 0.13025, 256),
                "text_encoder": te1, "text_encoder_2": te2, "scheduler": dict(_SDXL_SCHEDULER)}
    if spec.kind == "sdxl-refiner":
        return {"unet": _refiner_unet([32, 64, 96, 96], [1, 2, 3, 3], 1, 64, 8, 64, 1, 32),
                "vae": _vae([32, 32, 64, 64], 1, 0.13025, 256),
                "text_encoder_2": te2, "scheduler": dict(_SDXL_SCHEDULER)}
    return {"unet": _sd15_unet([32, 64, 64, 64], [1, 2, 2, 2], 32, 1, 32),
            "vae": _vae([32, 32, 64, 64], 1, 0.18215, 256),
            "text_encoder": te1, "scheduler": dict(_SD15_SCHEDULER)}


def builtin_spec(name: str) -> BuiltinSpec:
    try:
        return BUILTINS[name]
    except KeyError:
        raise StressError(f"unknown built-in model {name!r}; choose one of {', '.join(BUILTINS)}") from None


def builtin_component_configs(name: str) -> dict[str, dict]:
    """Component name -> config dict for a built-in model (``unet``, ``vae``, ``text_encoder``,
    ``text_encoder_2`` where present, and ``scheduler``). Diffusers configs carry ``_class_name``;
    transformers configs carry ``architectures``. Build one on the meta device with
    :func:`instantiate_component`. Returns a fresh deep copy."""
    return copy.deepcopy(_configs_for(builtin_spec(name)))


def instantiate_component(config: dict, device: Any = "meta", dtype: Any = None) -> Any:
    """Build the module a component config describes, with random weights, on ``device`` (default:
    ``meta``, which allocates nothing: use it to count parameters and bytes)."""
    import torch

    cfg = dict(config)
    if "architectures" in cfg:
        import transformers

        cls = getattr(transformers, cfg["architectures"][0])
        conf = transformers.CLIPTextConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
        build: Callable[[], Any] = lambda: cls(conf)
    else:
        import diffusers

        cls = getattr(diffusers, cfg.pop("_class_name"))
        build = lambda: cls.from_config(cfg)
    prev = torch.get_default_dtype()
    try:
        if dtype is not None:
            torch.set_default_dtype(dtype)  # initialise directly in the target dtype: no fp32 copy
        with torch.device(device):
            module = build()
    finally:
        torch.set_default_dtype(prev)
    return module.eval().requires_grad_(False)


def config_digest(name: str) -> str:
    payload = json.dumps({"format": BUILTIN_FORMAT, "vocab": _VOCAB_VERSION, "spec": BUILTINS[name].__dict__,
                          "configs": _configs_for(BUILTINS[name])}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# The synthetic CLIP BPE vocabulary

_VOCAB_VERSION = 1


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _train_bpe(words: list[str], max_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training (most frequent pair first, ties broken by the pair's text), incremental."""
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
    freq = [1] * len(seqs)
    counts: dict[tuple[str, str], int] = {}
    where: dict[tuple[str, str], set[int]] = {}
    for i, s in enumerate(seqs):
        for p in zip(s, s[1:]):
            counts[p] = counts.get(p, 0) + freq[i]
            where.setdefault(p, set()).add(i)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < max_merges:
        negc, pair = heapq.heappop(heap)
        c = counts.get(pair, 0)
        if c <= 0 or -negc != c:
            continue  # stale entry; the current count has its own entry
        merges.append(pair)
        a, b = pair
        touched: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            s = seqs[i]
            for p in zip(s, s[1:]):
                counts[p] -= freq[i]
                touched.add(p)
            out, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == a and s[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            seqs[i] = out
            for p in zip(out, out[1:]):
                counts[p] = counts.get(p, 0) + freq[i]
                where.setdefault(p, set()).add(i)
                touched.add(p)
        counts[pair] = 0
        for p in touched:
            if counts.get(p, 0) > 0:
                heapq.heappush(heap, (-counts[p], p))
    return merges


def synthetic_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of the synthetic CLIP BPE vocabulary; deterministic, pure Python (~1 s)."""
    from stress.workload.prompts import vocabulary_words

    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []

    def add(a: str, b: str) -> None:
        if a in vocab and b in vocab and (a + b) not in vocab and len(merges) < N_MERGES:
            merges.append((a, b))
            vocab[a + b] = len(vocab)

    for a, b in _train_bpe(vocabulary_words(), N_MERGES):
        add(a, b)
    # Top up with letter n-grams (bigrams, then trigrams, then 4-grams) so that unseen English words
    # still come out in a few tokens; ranked after the corpus merges so those words stay whole.
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    grams = [a + b for a in letters for b in letters]
    for g in grams:
        add(g[0], g[1])
        add(g[0], g[1] + "</w>")
    level = grams
    while len(merges) < N_MERGES:
        nxt = []
        for g in level:
            for c in letters:
                add(g, c)
                add(g, c + "</w>")
                nxt.append(g + c)
                if len(merges) >= N_MERGES:
                    break
            if len(merges) >= N_MERGES:
                break
        level = nxt
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    return vocab, merges


_TOKENIZER_CACHE: dict[str, Any] = {}


def _cached_synthetic_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """:func:`synthetic_vocab`, kept as JSON in the model cache (training it costs ~1 s of every
    ``plan`` and worker start). The file name carries a digest of everything the vocabulary is made
    from (the word list, the merge count, the format version), so a change to any of them trains a
    new one; an unwritable or corrupt cache only means training it again."""
    from stress.workload.prompts import vocabulary_words

    digest = hashlib.sha256(json.dumps([_VOCAB_VERSION, N_MERGES, VOCAB_SIZE, list(vocabulary_words())])
                            .encode()).hexdigest()[:16]
    path = default_cache_dir() / f"synthetic-vocab-{digest}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab, merges = data["vocab"], [tuple(m) for m in data["merges"]]
        if len(vocab) == VOCAB_SIZE and len(merges) == N_MERGES:
            return vocab, merges
    except (OSError, ValueError, KeyError, TypeError):
        pass
    vocab, merges = synthetic_vocab()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"vocab": vocab, "merges": merges}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
    return vocab, merges


def synthetic_tokenizer(pad_token: str = EOS) -> Any:
    """A CLIPTokenizer on the synthetic vocabulary. ``pad_token``: ``<|endoftext|>`` as CLIP's
    tokenizer, or ``"!"`` (id 0) as SDXL's tokenizer_2."""
    from transformers import CLIPTokenizer

    if "vm" not in _TOKENIZER_CACHE:
        _TOKENIZER_CACHE["vm"] = _cached_synthetic_vocab()
    vocab, merges = _TOKENIZER_CACHE["vm"]
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77, pad_token=pad_token,
                         clean_up_tokenization_spaces=False)


# --------------------------------------------------------------------------------------------
# Building pipelines from configs


def _pipeline_class(kind: str) -> Any:
    import diffusers

    return {"sdxl": diffusers.StableDiffusionXLPipeline, "sdxl-refiner": diffusers.StableDiffusionXLImg2ImgPipeline,
            "sd15": diffusers.StableDiffusionImg2ImgPipeline}[kind]


def _pipeline_extras(kind: str) -> dict:
    """Constructor/loader arguments that make a pipeline behave like the real one of its kind."""
    if kind == "sdxl":
        return {"add_watermarker": False}
    if kind == "sdxl-refiner":
        return {"add_watermarker": False}
    return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def build_builtin_pipeline(name: str, device: Any = "cpu", dtype: Any = None) -> Any:
    """A pipeline with seeded random weights, built in memory on ``device`` in ``dtype``."""
    import diffusers
    import torch

    spec = builtin_spec(name)
    cfgs = _configs_for(spec)
    torch.manual_seed(spec.seed)
    if device != "cpu" and torch.device(device).type == "cuda":
        torch.cuda.manual_seed_all(spec.seed)
    parts: dict[str, Any] = {}
    for comp in ("text_encoder", "text_encoder_2", "unet", "vae"):
        if comp in cfgs:
            parts[comp] = instantiate_component(cfgs[comp], device=device, dtype=dtype)
    sched_cfg = dict(cfgs["scheduler"])
    parts["scheduler"] = getattr(diffusers, sched_cfg.pop("_class_name")).from_config(sched_cfg)
    if spec.kind == "sdxl":
        parts["tokenizer"] = synthetic_tokenizer()
        parts["tokenizer_2"] = synthetic_tokenizer(pad_token="!")
        return diffusers.StableDiffusionXLPipeline(**parts, force_zeros_for_empty_prompt=True, add_watermarker=False)
    if spec.kind == "sdxl-refiner":
        parts["tokenizer_2"] = synthetic_tokenizer(pad_token="!")
        return diffusers.StableDiffusionXLImg2ImgPipeline(
            text_encoder=None, tokenizer=None, **parts, requires_aesthetics_score=True,
            force_zeros_for_empty_prompt=False, add_watermarker=False)
    parts["tokenizer"] = synthetic_tokenizer()
    return diffusers.StableDiffusionImg2ImgPipeline(**parts, safety_checker=None, feature_extractor=None,
                                                    requires_safety_checker=False)


def _atomic_build(target: Path, build: Callable[[Path], None]) -> bool:
    """Build into a temporary sibling folder, then rename it to ``target``. Returns True if this call
    built it (False: someone else finished first, theirs is kept)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if (target / "stress-builtin.json").exists():
                return False  # a concurrent build won the race
            raise
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def builtin_folder(name: str, cache_dir: Path) -> Path:
    slug = name.split(":", 1)[1]
    return Path(cache_dir) / f"{slug}-{config_digest(name)}"


def ensure_builtin(name: str, cache_dir: Path | None = None) -> tuple[Path, bool]:
    """The cache folder of built-in model ``name``, building it if missing. Returns (folder, built).

    Tiny models: a complete diffusers folder (weights included). Full-size models: configs and
    tokenizers only (weights are built at load time); usable as ``config=`` for single files."""
    spec = builtin_spec(name)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    target = builtin_folder(name, cache_dir)
    if (target / "stress-builtin.json").exists():
        return target, False

    def build(tmp: Path) -> None:
        t0 = time.perf_counter()
        if spec.full_size:
            _write_config_folder(spec, tmp)
        else:
            pipe = build_builtin_pipeline(name, device="cpu")
            pipe.save_pretrained(tmp, safe_serialization=True)
        marker = {"name": name, "format": BUILTIN_FORMAT, "digest": config_digest(name),
                  "weights": not spec.full_size, "seed": spec.seed, "build_s": round(time.perf_counter() - t0, 3)}
        (tmp / "stress-builtin.json").write_text(json.dumps(marker, indent=1), encoding="utf-8")

    try:
        built = _atomic_build(target, build)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write the model cache {cache_dir}: {exc.strerror or exc} "
                                 "(set STRESS_CACHE to a writable folder)") from None
    if built:
        log.info("built %s into %s", name, target)
    return target, built


def _write_config_folder(spec: BuiltinSpec, folder: Path) -> None:
    """model_index.json, component configs and tokenizers; no weights."""
    import diffusers

    cfgs = _configs_for(spec)
    folder.mkdir(parents=True, exist_ok=True)
    cls = _pipeline_class(spec.kind)
    index: dict[str, Any] = {"_class_name": cls.__name__, "_diffusers_version": diffusers.__version__}
    for comp, cfg in cfgs.items():
        sub = folder / comp
        sub.mkdir()
        if comp == "scheduler":
            (sub / "scheduler_config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
            index[comp] = ["diffusers", cfg["_class_name"]]
        elif "architectures" in cfg:
            (sub / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
            index[comp] = ["transformers", cfg["architectures"][0]]
        else:
            (sub / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
            index[comp] = ["diffusers", cfg["_class_name"]]
    if spec.kind in ("sdxl", "sd15"):
        synthetic_tokenizer().save_pretrained(folder / "tokenizer")
        index["tokenizer"] = ["transformers", "CLIPTokenizer"]
    if spec.kind in ("sdxl", "sdxl-refiner"):
        synthetic_tokenizer(pad_token="!").save_pretrained(folder / "tokenizer_2")
        index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    if spec.kind == "sdxl":
        index.update(force_zeros_for_empty_prompt=True, text_encoder=index["text_encoder"])
    elif spec.kind == "sdxl-refiner":
        index.update(text_encoder=[None, None], tokenizer=[None, None], requires_aesthetics_score=True,
                     force_zeros_for_empty_prompt=False)
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    (folder / "model_index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Loading any source


@dataclass
class LoadedModel:
    pipe: Any
    kind: str
    source: str
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _dtype_kwargs(dtype: Any) -> dict:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (the old name warns); use what this one takes."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401

        return {"dtype": dtype}
    except ImportError:
        return {"torch_dtype": dtype}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip(": ")[:300]


def source_kind(source: str, base_dir: Path) -> str:
    """``builtin``, ``folder`` or ``file``."""
    if source.startswith("builtin:"):
        return "builtin"
    p = Path(source).expanduser()
    p = p if p.is_absolute() else base_dir / p
    return "file" if p.is_file() else "folder"


def quiet_progress_bars() -> None:
    """Loading and saving progress bars would fill the worker's log with carriage returns."""
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic
        pass


def load_model(source: str, kind: str, *, role: str, base_dir: Path, cache_dir: Path | None,
               device: Any, dtype: Any) -> LoadedModel:
    """Load ``source`` as a pipeline of ``kind`` (``sdxl``, ``sdxl-refiner``, ``sd15``).

    Raises EnvironmentProblem (one line) when the source is missing or cannot be loaded. The pipeline
    is returned on the CPU unless it is a full-size built-in (built on ``device`` directly)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    quiet_progress_bars()
    t0 = time.perf_counter()
    if source.startswith("builtin:"):
        spec = builtin_spec(source)
        if spec.kind not in ACCEPTS[kind]:
            want = [n for n, s in BUILTINS.items() if s.kind == kind and s.full_size == spec.full_size]
            raise StressError(f"model.{role}: {source} is {_KIND_WORDS[spec.kind]}, this slot needs "
                              f"{_KIND_WORDS[kind]}" + (f" (e.g. {want[0]})" if want else ""))
        folder, built = ensure_builtin(source, cache_dir)
        if spec.full_size:
            try:
                pipe = build_builtin_pipeline(source, device=device, dtype=dtype)
            except Exception as exc:  # noqa: BLE001 - OOM while building is an environment problem too
                if type(exc).__name__ == "OutOfMemoryError":
                    raise
                raise EnvironmentProblem(f"model.{role}: cannot build {source} on {device}: {_one_line(exc)}") from None
            how = "built in memory (random weights)"
            if spec.kind != kind:  # a base model serving as the refiner: same parts, img2img pipeline
                pipe = _pipeline_class(kind)(**pipe.components, add_watermarker=False)
        else:
            pipe = _from_pretrained(kind, folder, role, source, dtype)
            how = "built into the cache, then loaded" if built else "loaded from the cache"
        info = {"source": source, "builtin": True, "path": str(folder), "how": how}
        return LoadedModel(pipe, spec.kind, source, _describe(pipe, info, t0))
    p = Path(source).expanduser()
    p = p if p.is_absolute() else base_dir / p
    if not p.exists():
        raise EnvironmentProblem(f"model.{role}: checkpoint not found: {p}")
    if p.is_dir():
        if not (p / "model_index.json").exists():
            raise EnvironmentProblem(f"model.{role}: {p} is not a diffusers folder (no model_index.json)")
        pipe = _from_pretrained(kind, p, role, source, dtype)
        return LoadedModel(pipe, detect_kind(pipe), source, _describe(pipe, {"source": source, "path": str(p), "how": "diffusers folder"}, t0))
    return _from_single_file(p, kind, role, source, cache_dir, dtype, t0)


def detect_kind(pipe: Any) -> str:
    """``sdxl``, ``sdxl-refiner`` or ``sd15``, from the loaded components (not the folder's claims)."""
    unet = getattr(pipe, "unet", None)
    cfg = getattr(unet, "config", None)
    if cfg is None:
        return "unknown"
    if getattr(cfg, "addition_embed_type", None) == "text_time":
        te2 = getattr(pipe, "text_encoder_2", None)
        pooled = int(getattr(getattr(te2, "config", None), "projection_dim", 0) or 0)
        n_ids = (int(cfg.projection_class_embeddings_input_dim) - pooled) // int(cfg.addition_time_embed_dim)
        if getattr(pipe, "text_encoder", None) is None or n_ids == 5:
            return "sdxl-refiner"   # 5 numbers: sizes, crop and the aesthetic score
        return "sdxl"
    return "sd15" if getattr(pipe, "text_encoder", None) is not None else "unknown"


_KIND_WORDS = {"sdxl": "an SDXL base model", "sdxl-refiner": "an SDXL refiner", "sd15": "a Stable Diffusion 1.x model",
               "unknown": "not a model this tool knows"}
# What each slot accepts: a refiner slot also takes a base model (SD.Next allows any SDXL model there).
ACCEPTS = {"sdxl": ("sdxl",), "sdxl-refiner": ("sdxl-refiner", "sdxl"), "sd15": ("sd15",)}


def check_kind(got: str, kind: str, role: str, source: str) -> None:
    """Raise a clear error when a model is the wrong kind for its slot (a refiner as the base...)."""
    if got in ACCEPTS[kind]:
        return
    hint = ""
    if got == "sdxl-refiner" and role == "base":
        hint = "; use it as model.refiner"
    raise EnvironmentProblem(f"model.{role}: {source} is {_KIND_WORDS[got]}, this slot needs {_KIND_WORDS[kind]}{hint}")


def _from_pretrained(kind: str, folder: Path, role: str, source: str, dtype: Any) -> Any:
    cls = _pipeline_class(kind)
    kwargs = {**_dtype_kwargs(dtype), **_pipeline_extras(kind), "local_files_only": True}
    unet_dir = folder / "unet"
    if unet_dir.is_dir() and not any(unet_dir.glob("diffusion_pytorch_model.safetensors")) \
            and not any(unet_dir.glob("diffusion_pytorch_model.bin")) and any(unet_dir.glob("*.fp16.*")):
        kwargs["variant"] = "fp16"  # folders that only ship the fp16 variant
    try:
        pipe = cls.from_pretrained(str(folder), **kwargs)
    except Exception as exc:  # noqa: BLE001 - any loader failure is reported as one line
        raise EnvironmentProblem(f"model.{role}: cannot load {source} as {cls.__name__}: {_one_line(exc)}") from None
    check_kind(detect_kind(pipe), kind, role, source)
    return pipe


def _from_single_file(path: Path, kind: str, role: str, source: str, cache_dir: Path, dtype: Any,
                      t0: float) -> LoadedModel:
    cls = _pipeline_class(kind)
    extras = _pipeline_extras(kind)
    kwargs = {**_dtype_kwargs(dtype), **extras, "local_files_only": True}
    notes: list[str] = []
    try:
        # With a Hugging Face cache that holds the original repository's configs and tokenizers.
        pipe = cls.from_single_file(str(path), **kwargs)
        how = "single file, configs from the local Hugging Face cache"
    except Exception as first:  # noqa: BLE001 - fall back to the built-in configs below
        log.info("single-file load without a local config failed (%s); using the built-in config", _one_line(first))
        config_dir, _ = ensure_builtin(FULL_SIZE_FOR_KIND[kind], cache_dir)
        try:
            pipe = cls.from_single_file(str(path), config=str(config_dir), **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise EnvironmentProblem(f"model.{role}: cannot load {path.name} as {cls.__name__}: {_one_line(exc)}") from None
        how = "single file, configs from the built-in full-size folder"
        notes.append(f"model.{role}: {path.name} loaded with the built-in {kind} configs; no local Hugging Face "
                     "tokenizer was found, so tokenization uses the synthetic vocabulary (prompts are "
                     "tokenized differently from the real model; memory and compute are the same)")
        log.warning(notes[-1])
    check_kind(detect_kind(pipe), kind, role, source)
    info = {"source": source, "path": str(path), "how": how}
    return LoadedModel(pipe, detect_kind(pipe), source, _describe(pipe, info, t0), notes)


def _describe(pipe: Any, info: dict, t0: float) -> dict:
    import torch

    params: dict[str, int] = {}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        mod = getattr(pipe, name, None)
        if isinstance(mod, torch.nn.Module):
            params[name] = sum(p.numel() for p in mod.parameters())
    info = dict(info)
    info.update({"pipeline": type(pipe).__name__, "params": params, "load_s": round(time.perf_counter() - t0, 3)})
    return info
