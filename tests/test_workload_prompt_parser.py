"""SD.Next's native prompt parser, TE2: splitting and the pooled-width rule, through the real
PromptEncoder on the built-in tiny models (compel + diffusers).

Each case names the fragments and weights SD.Next's ``modules/prompt_parser.py`` (native mode)
makes, checks that the encoder hands exactly those to each text encoder, and that its embeddings
are those of the expected fragments encoded directly with compel."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stress.scenario import load_scenario
from stress.workload.models import load_model
from stress.workload.prompts import (
    CLIP_L_WIDTH,
    PromptEncoder,
    attention_mode,
    clip_l_width_for,
    parse_prompt_attention,
    resolve_prompt_text,
)

ROOT = Path(__file__).resolve().parent.parent
TE1, TE2 = 32, 64
TINY_CLIP_L = clip_l_width_for([TE1, TE2])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipes(model_cache: Path):
    common = dict(base_dir=Path("."), cache_dir=model_cache, device="cpu", dtype=torch.float32)
    return {name: load_model(f"builtin:tiny-{name}", kind, role="base", **common).pipe
            for name, kind in (("sdxl", "sdxl"), ("sdxl-refiner", "sdxl-refiner"), ("sd15", "sd15"))}


@pytest.fixture(scope="module")
def enc(pipes):
    return PromptEncoder(pipes["sdxl"], "sdxl", device="cpu", clip_l_width=TINY_CLIP_L)


def _direct(provider, sections) -> torch.Tensor:
    """compel's embeddings of the given (fragments, weights) sections, concatenated on the token axis."""
    with torch.no_grad():
        return torch.cat([provider.get_embeddings_for_weighted_prompt_fragments(
            text_batch=[list(f)], fragment_weights_batch=[list(w)], device="cpu") for f, w in sections], dim=1)


# prompt -> BREAK sections (fragments, weights) that both SDXL encoders get in native mode
NATIVE_CASES = {
    "[fog]": [(["fog"], [0.909])],
    "((fog))": [(["fog"], [1.21])],
    "[[[fog]]]": [(["fog"], [0.751])],                        # rounded at every step: .909 -> .826 -> .751
    "(red:1.3), castle": [(["red", "castle"], [1.3, 1.0])],  # the comma token is gone
    "(red: 1.3)": [(["red 1.3"], [1.1])],                     # a space before the weight breaks it
    "a cat\na dog": [(["a cat"], [1.0]), (["a dog"], [1.0])],  # newline -> BREAK
    "a cat ## a dog": [(["a cat"], [1.0]), (["a dog"], [1.0])],  # ## -> BREAK
    "a   lighthouse,\t(on a cliff:1.2)": [(["a lighthouse,", "on a cliff"], [1.0, 1.2])],
    "a cat BREAK": [(["a cat"], [1.0])],                      # the empty section is skipped
}


@pytest.mark.parametrize("prompt", list(NATIVE_CASES))
def test_native_fragments_and_weights_reach_both_encoders(enc, prompt):
    expected = NATIVE_CASES[prompt]
    plan = enc.plan(prompt, "")
    assert plan.positive[0] == expected and plan.positive[1] == expected
    e = enc.encode(prompt, "")
    want = torch.cat([_direct(enc.providers[0], expected), _direct(enc.providers[1], expected)], dim=-1)
    assert e.prompt_embeds.shape == want.shape
    assert torch.equal(e.prompt_embeds, want)
    assert e.prompt_chunks == len(expected)
    assert e.info["attention"] == "native"


def test_native_differs_from_the_webui_where_sdnext_does(pipes, enc):
    webui = PromptEncoder(pipes["sdxl"], "sdxl", device="cpu", attention="webui", clip_l_width=TINY_CLIP_L)
    # [fog]: 0.909 against 1/1.1; the embeddings differ (by ~1e-4 on real SDXL, less here) but only just.
    assert webui.plan("[fog]", "").positive[0] == [(["fog"], [1 / 1.1])]
    a, b = enc.encode("[fog]", ""), webui.encode("[fog]", "")
    diff = (a.prompt_embeds - b.prompt_embeds).abs().max().item()
    assert 0 < diff < 1e-2
    # The comma survives in the webui's fragment: one token more.
    assert webui.encode("(red:1.3), castle", "").prompt_tokens == enc.encode("(red:1.3), castle", "").prompt_tokens + 1
    # The webui reads "(red: 1.3)" as a weight.
    assert webui.plan("(red: 1.3)", "").positive[0] == [(["red"], [1.3])]
    # No BREAK at a newline in the webui, nor in SD.Next's a1111 mode.
    assert webui.encode("a cat\na dog", "").prompt_chunks == 1
    a1111 = PromptEncoder(pipes["sdxl"], "sdxl", device="cpu", attention="a1111", clip_l_width=TINY_CLIP_L)
    assert a1111.plan("a cat\na dog", "").positive[0] == [(["a cat\na dog"], [1.0])]
    assert a1111.plan("[fog]", "").positive[0] == [(["fog"], [0.909])]   # a1111 mode rounds too


def test_linebreak_option_off_joins_lines():
    assert parse_prompt_attention("a cat\na dog", "native", linebreak=False) == [["a cat a dog", 1.0]]


def test_te2_splits_the_prompt_between_the_encoders(enc):
    e = enc.encode("a red fox TE2: a blue bird", "")
    cat, dog = [(["a red fox"], [1.0])], [(["a blue bird"], [1.0])]
    assert enc.plan("a red fox TE2: a blue bird", "").positive == [cat, dog]
    assert torch.equal(e.prompt_embeds[..., :TE1], _direct(enc.providers[0], cat))
    assert torch.equal(e.prompt_embeds[..., TE1:], _direct(enc.providers[1], dog))
    # The pooled embedding is of the second part's text.
    with torch.no_grad():
        pooled_dog = enc.providers[1].get_pooled_embeddings(texts=["a blue bird"], device="cpu")
        pooled_all = enc.providers[1].get_pooled_embeddings(texts=["a red fox TE2: a blue bird"], device="cpu")
    assert torch.equal(e.pooled_prompt_embeds, pooled_dog)
    assert not torch.equal(e.pooled_prompt_embeds, pooled_all)
    # Tokens are counted on the first encoder's part.
    assert e.prompt_tokens == 3


def test_te2_split_on_the_refiner_follows_sdnext(pipes):
    # SD.Next hands provider i the i-th part: the refiner's only encoder (text_encoder_2) gets the
    # first part; its pooled embedding is still of the second.
    ref = PromptEncoder(pipes["sdxl-refiner"], "sdxl-refiner", device="cpu", clip_l_width=TINY_CLIP_L)
    e = ref.encode("a red fox TE2: a blue bird", "")
    assert torch.equal(e.prompt_embeds, _direct(ref.providers[0], [(["a red fox"], [1.0])]))
    with torch.no_grad():
        pooled = ref.providers[0].get_pooled_embeddings(texts=["a blue bird"], device="cpu")
    assert torch.equal(e.pooled_prompt_embeds, pooled)


def test_te2_in_the_negative_only_is_ignored_for_the_second_encoder(enc):
    # SD.Next: when the prompt's two parts are equal, both encoders get the negative's first part.
    plan = enc.plan("a red fox", "blurry TE2: dark")
    assert plan.negative[0] == plan.negative[1] == [(["blurry"], [1.0])]
    assert plan.negative_pooled_text == "dark"


def test_two_te2_markers_are_one_clear_error(enc):
    from stress.errors import StressError

    with pytest.raises(StressError, match="'TE2:' appears 2 times"):
        enc.plan("a TE2: b TE2: c", "")


def test_pooled_only_when_the_last_encoder_is_wider_than_clip_l(pipes):
    assert CLIP_L_WIDTH == 768 and TINY_CLIP_L == TE1
    sdxl = PromptEncoder(pipes["sdxl"], "sdxl", device="cpu", clip_l_width=TINY_CLIP_L).encode("a fox", "dark")
    assert sdxl.pooled_prompt_embeds.shape == sdxl.negative_pooled_prompt_embeds.shape == (1, TE2)
    # The same tiny SDXL measured against the real 768: its 64-wide encoder is not wider, no pooled.
    narrow = PromptEncoder(pipes["sdxl"], "sdxl", device="cpu", clip_l_width=CLIP_L_WIDTH).encode("a fox", "dark")
    assert narrow.pooled_prompt_embeds is None and narrow.negative_pooled_prompt_embeds is None
    sd15 = PromptEncoder(pipes["sd15"], "sd15", device="cpu", clip_l_width=TINY_CLIP_L).encode("a fox", "dark")
    assert sd15.prompt_embeds.shape[-1] == TE1 and sd15.pooled_prompt_embeds is None
    # Real widths are measured against ViT-L's 768 (SD 1.5: 768, SDXL: 768 + 1280); the encoder
    # picks the threshold from its own encoders' widths when not told.
    assert clip_l_width_for([768]) == clip_l_width_for([768, 1280]) == clip_l_width_for([1280]) == 768
    assert PromptEncoder(pipes["sdxl-refiner"], "sdxl-refiner").clip_l_width == TINY_CLIP_L
    assert PromptEncoder(pipes["sd15"], "sd15").encode("a fox", "").pooled_prompt_embeds is None


def test_demo_embeddings_unchanged_by_the_native_parser(pipes):
    sc = load_scenario(ROOT / "scenarios" / "demo.yaml")
    assert attention_mode(sc) == "native"
    tok = pipes["sdxl"].tokenizer
    prompt = resolve_prompt_text(sc.prompt, ROOT / "scenarios", tok)
    negative = resolve_prompt_text(sc.negative_prompt, ROOT / "scenarios", tok)
    native = PromptEncoder(pipes["sdxl"], "sdxl", device="cpu", clip_l_width=TINY_CLIP_L)
    old = PromptEncoder(pipes["sdxl"], "sdxl", device="cpu", attention="webui", clip_l_width=TINY_CLIP_L)
    assert native.plan(prompt, negative).positive[0] == [([prompt], [1.0])]
    assert old.plan(prompt, negative).positive == native.plan(prompt, negative).positive
    a, b = native.encode(prompt, negative), old.encode(prompt, negative)
    assert a.prompt_tokens == 2400 and a.negative_tokens == 150
    for name in ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    # And the old pooled input (the raw prompt) is the new one (the stripped second part).
    with torch.no_grad():
        raw = native.providers[1].get_pooled_embeddings(texts=[prompt], device="cpu")
    assert torch.equal(a.pooled_prompt_embeds, raw)


def test_scenario_selects_the_parser(tmp_path):
    base = (ROOT / "scenarios" / "demo.yaml").read_text()
    for extra, want in (("", "native"), ("prompt_attention: a1111\n", "a1111"),
                        ("prompt_attention: webui\n", "webui")):
        p = tmp_path / "s.yaml"
        p.write_text(base + extra)
        assert attention_mode(load_scenario(p, check_files=False)) == want
    p.write_text(base.replace("semantics: sdnext", "semantics: diffusers"))
    assert attention_mode(load_scenario(p, check_files=False)) == "webui"
