"""Workload accounting: what a session will compute, per image and in total.

Counts come from the resolved plan (:mod:`stress.plan`: jobs, resolutions, steps as actually run)
and from the traced networks (:mod:`stress.memory.pipeline`: the attention calls each network
really makes, with their query and key lengths, and FLOPs counted by ``torch.utils.flop_counter``'s
formulas on every matmul, convolution and attention op).

Prompt chunks follow the worker's encoder (SD.Next through compel, ``stress.workload.prompts``): each
``BREAK`` section of the prompt is cut into 75-token chunks (77 with BOS/EOS), at least one per
section; the negative prompt is one section (SD.Next passes its ``BREAK`` through as text); the
shorter of the two is padded with empty chunks to the same count. Cross-attention keys are
``77 x chunks``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stress.memory.architectures import Architecture
from stress.scenario import Scenario

CHUNK_TOKENS = 75
CHUNK = 77


@dataclass
class PromptCount:
    tokens: int
    sections: list[int]          # tokens per BREAK section
    chunks: int
    how: str                     # "exact (generated)", "exact (tokenizer: ...)", "estimate (...)"

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "sections": self.sections, "chunks": self.chunks, "how": self.how}


def chunks_for(section_tokens: list[int]) -> int:
    return sum(max(1, math.ceil(t / CHUNK_TOKENS)) for t in section_tokens) if section_tokens else 1


def _generated_sections(tokens: int, breaks_every: int | None) -> list[int]:
    size = breaks_every or tokens or 1
    return [size] * (tokens // size) + ([tokens % size] if tokens % size else [])


_WORDISH = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def _estimate_tokens(text: str) -> int:
    """Without the model's tokenizer: CLIP's pre-tokenizer splits words, digits and punctuation;
    common English words are one token each, rarer ones more. A lower bound, labelled estimate."""
    return len(_WORDISH.findall(text))


def _tokenizer_for(arch: Architecture, base_dir: Path | None) -> tuple[Any, str]:
    """The tokenizer the worker would count with, or (None, why not)."""
    src = arch.source
    try:
        if src.startswith("builtin:") or Path(src).suffix == ".safetensors":
            from stress.workload.tokenizer import synthetic_tokenizer  # the built-in models' vocabulary

            return synthetic_tokenizer(), "synthetic CLIP BPE of the built-in models"
        folder = Path(src).expanduser()
        if not folder.is_absolute() and base_dir is not None:
            folder = base_dir / folder
        sub = "tokenizer" if (folder / "tokenizer").is_dir() else "tokenizer_2"
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(folder / sub)), f"{folder / sub}"
    except Exception as exc:  # noqa: BLE001 - no tokenizer: the count becomes an estimate
        return None, f"no tokenizer ({type(exc).__name__}: {exc})"


def _text_of(spec: Any, base_dir: Path | None) -> str:
    if spec.text is not None:
        return spec.text
    p = Path(spec.file).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p.read_text(encoding="utf-8").strip()


def _compel_embeddings_provider() -> Any:
    """compel's ``embeddings_provider`` module, the same file the worker runs, without the package's
    ``__init__``: that imports ``compel.convenience_wrappers``, which imports diffusers' Flux pipeline and
    scipy (3.5 s of the plan's start-up, docs/benchmarks.md). The module imports only torch and
    transformers, so it loads on its own, under a private name (``compel`` itself stays untouched)."""
    import importlib.util
    import sys

    name = "stress.memory._compel_embeddings_provider"
    mod = sys.modules.get(name)
    if mod is None:
        full = sys.modules.get("compel.embeddings_provider")
        if full is not None:      # compel already imported in this process: use it
            return full
        spec = importlib.util.find_spec("compel")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("compel is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / "embeddings_provider.py"
        file_spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(file_spec)
        sys.modules[name] = mod
        try:
            file_spec.loader.exec_module(mod)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    return mod


def _compel_counter(tokenizer: Any) -> Callable[[list[str], list[float]], tuple[int, int]]:
    """(tokens, chunks) of one section, split exactly as the worker's compel provider splits it:
    compel cuts long text at sentence / phrase / word ends, so a chunk can hold fewer than 75
    tokens and the count is not ``ceil(tokens / 75)``."""
    provider = _compel_embeddings_provider().EmbeddingsProvider(tokenizer=tokenizer, text_encoder=None, truncate=False, device="cpu")

    def count(fragments: list[str], weights: list[float]) -> tuple[int, int]:
        ids, _w, _m = provider.get_token_ids_and_expand_weights(list(fragments), list(weights), device="cpu")
        tokens = sum(len(x) for x in provider.get_token_ids(list(fragments) or [""],
                                                            include_start_and_end_markers=False))
        return tokens, int(ids.shape[0]) // CHUNK
    return count


def one_torch_thread() -> None:
    """For a child forked to count or trace (``Background(..., in_child=one_torch_thread)``): no
    OpenMP pool across a fork; meta tensors and token counts compute nothing that needs one."""
    import torch

    torch.set_num_threads(1)


def import_counters() -> None:
    """Import what :func:`count_prompts` uses (compel's provider, which loads transformers' CLIP
    modules, and the tokenizers), so that a process forked to count (make_plan) does not import
    them a second time beside its parent, which builds the CLIP text encoders from the same modules.
    A missing package is left for count_prompts to report (its counts become estimates)."""
    try:
        from stress.workload import tokenizer  # noqa: F401
        from transformers import CLIPTokenizer  # noqa: F401

        _compel_embeddings_provider()
    except Exception:  # noqa: BLE001 - see count_prompts
        pass


def count_prompts(sc: Scenario, arch: Architecture, base_dir: Path | None) -> dict[str, Any]:
    """Tokens and chunks of prompt and negative as the worker encodes them, and the padded chunk
    count the UNet sees. The prompt text is the worker's: generated prompts (``tokens: N``) are
    generated here the same way, with the same tokenizer and seed."""
    from stress.memory.pipeline import quiet_libraries
    from stress.workload.prompts import parse_prompt_attention, resolve_prompt_text, sections_with_weights

    with quiet_libraries():
        return _count_prompts(sc, arch, base_dir, parse_prompt_attention, resolve_prompt_text, sections_with_weights)


def _count_prompts(sc: Scenario, arch: Architecture, base_dir: Path | None, parse_prompt_attention: Any,
                   resolve_prompt_text: Any, sections_with_weights: Any) -> dict[str, Any]:
    tokenizer, tok_how = _tokenizer_for(arch, base_dir)
    out: dict[str, PromptCount] = {}
    counter = _compel_counter(tokenizer) if tokenizer is not None else None
    for role in ("prompt", "negative_prompt"):
        spec = getattr(sc, role)
        if counter is None:
            out[role] = _estimated(spec, role, base_dir, tok_how)
            continue
        text = resolve_prompt_text(spec, base_dir or Path("."), tokenizer)
        if role == "prompt":
            sections = sections_with_weights(text)
        else:   # SD.Next: the negative has no keywords; all its fragments, BREAK included, at once
            pairs = parse_prompt_attention(text)
            sections = [([p[0] for p in pairs], [float(p[1]) for p in pairs])]
        counts = [counter(frags, weights) for frags, weights in sections] or [(0, 1)]
        out[role] = PromptCount(sum(t for t, _ in counts), [t for t, _ in counts], sum(c for _, c in counts),
                                f"exact (compel's chunking with the {tok_how})")
    padded = max(out["prompt"].chunks, out["negative_prompt"].chunks)
    return {"prompt": out["prompt"], "negative": out["negative_prompt"], "padded_chunks": padded,
            "cross_attention_keys": CHUNK * padded}


def _estimated(spec: Any, role: str, base_dir: Path | None, why: str) -> PromptCount:
    """Without the tokenizer: token counts from the spec or a word count, chunks as ceil(tokens/75)
    per section (compel may need more when it splits at sentence ends)."""
    if spec.tokens is not None:
        sections = _generated_sections(spec.tokens, spec.breaks_every)
        if role == "negative_prompt" and len(sections) > 1:
            sections = [sum(sections) + len(sections) - 1]
    else:
        from stress.workload.prompts import split_breaks

        text = _text_of(spec, base_dir)
        parts = split_breaks(text) if role == "prompt" else [text]
        sections = [_estimate_tokens(p) for p in parts] or [0]
    return PromptCount(sum(sections), sections, chunks_for(sections), f"estimate ({why})")


def img2img_steps_run(steps: int, strength: float) -> int:
    """diffusers' img2img ``get_timesteps``: the last ``steps * strength`` steps of the schedule."""
    init = min(steps * strength, steps)
    t_start = int(max(steps - init, 0))
    return steps - t_start


@dataclass
class AttentionTotals:
    """Per UNet (or VAE) evaluation of one sample: sums over the network's attention calls."""

    self_calls: int = 0
    cross_calls: int = 0
    self_qk: int = 0             # sum of query x key positions
    cross_qk: int = 0
    self_scores: int = 0         # sum of heads x queries x keys: the score matrix math would build
    cross_scores: int = 0
    largest: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"self_calls": self.self_calls, "cross_calls": self.cross_calls, "self_qk": self.self_qk,
                "cross_qk": self.cross_qk, "self_score_elements": self.self_scores,
                "cross_score_elements": self.cross_scores, "largest": self.largest}


def attention_totals(calls: list[Any], forwards: int = 1) -> AttentionTotals:
    """Sum the attention calls of one network forward (the trace ran ``forwards`` of them); query
    and key lengths are per sample, so the sums are per sample too."""
    t = AttentionTotals()
    calls = calls[:len(calls) // max(1, forwards)]
    best = 0
    for c in calls:
        per_sample_scores = c.heads * c.queries * c.keys
        if c.kind == "cross":
            t.cross_calls += 1
            t.cross_qk += c.queries * c.keys
            t.cross_scores += per_sample_scores
        else:
            t.self_calls += 1
            t.self_qk += c.queries * c.keys
            t.self_scores += per_sample_scores
        if per_sample_scores > best:
            best = per_sample_scores
            t.largest = {"module": c.module, "kind": c.kind, "heads": c.heads, "queries": c.queries,
                         "keys": c.keys}
    return t
