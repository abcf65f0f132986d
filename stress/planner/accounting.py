"""Workload accounting: what a session will compute, per image and in total.

Counts come from the resolved plan (:mod:`stress.plan`: jobs, resolutions, steps as actually run)
and from the traced networks (:mod:`stress.planner.pipeline`: the attention calls each network
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
from typing import Any

from stress.planner.architectures import Architecture
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
            from stress.workload.models import synthetic_tokenizer  # the built-in models' vocabulary

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


def count_prompts(sc: Scenario, arch: Architecture, base_dir: Path | None) -> dict[str, Any]:
    """Tokens and chunks of prompt and negative, and the padded chunk count the UNet sees."""
    from stress.workload.prompts import parse_prompt_attention, sections_with_weights

    tokenizer = None
    tok_how = ""
    out: dict[str, PromptCount] = {}
    for role in ("prompt", "negative_prompt"):
        spec = getattr(sc, role)
        if spec.tokens is not None:
            sections = _generated_sections(spec.tokens, spec.breaks_every)
            if role == "negative_prompt" and len(sections) > 1:
                # The negative is one section; each BREAK keyword is one token of text there.
                sections = [sum(sections) + len(sections) - 1]
            out[role] = PromptCount(spec.tokens, sections if spec.tokens else [0], chunks_for(sections),
                                    "exact (generated to this many tokens)")
            continue
        text = _text_of(spec, base_dir)
        if tokenizer is None and not tok_how:
            tokenizer, tok_how = _tokenizer_for(arch, base_dir)

        def count(fragments: list[str]) -> int:
            if tokenizer is None:
                return sum(_estimate_tokens(f) for f in fragments)
            return sum(len(tokenizer(f, add_special_tokens=False, truncation=False)["input_ids"])
                       for f in fragments if f)

        if role == "prompt":
            sections = [count(frags) for frags, _ in sections_with_weights(text)] or [0]
        else:
            sections = [count([p[0] for p in parse_prompt_attention(text)])]
        how = f"exact (tokenizer: {tok_how})" if tokenizer is not None else f"estimate ({tok_how})"
        out[role] = PromptCount(sum(sections), sections, chunks_for(sections), how)
    padded = max(out["prompt"].chunks, out["negative_prompt"].chunks)
    return {"prompt": out["prompt"], "negative": out["negative_prompt"], "padded_chunks": padded,
            "cross_attention_keys": CHUNK * padded}


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
