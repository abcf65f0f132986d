"""Long-prompt encoding as SD.Next does it, on the real tiny-SDXL text encoders (compel + diffusers)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stress.workload.models import load_model
from stress.workload.prompts import CHUNK, PromptEncoder, generate_prompt

TE1, TE2 = 32, 64  # hidden sizes of the tiny text encoders (real SDXL: 768, 1280)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipes(model_cache: Path):
    common = dict(base_dir=Path("."), cache_dir=model_cache, device="cpu", dtype=torch.float32)
    base = load_model("builtin:tiny-sdxl", "sdxl", role="base", **common).pipe
    refiner = load_model("builtin:tiny-sdxl-refiner", "sdxl-refiner", role="refiner", **common).pipe
    return base, refiner


@pytest.fixture(scope="module")
def enc(pipes):
    return PromptEncoder(pipes[0], "sdxl", clip_skip=1, device="cpu")


@pytest.fixture(scope="module")
def long_prompt(pipes):
    return generate_prompt(pipes[0].tokenizer, 2400, seed=11)


def _chunk_tokens(enc: PromptEncoder, text: str) -> list[list[int]]:
    """The 77-token chunks compel builds for a one-section prompt."""
    ids, _w, _m = enc.providers[0].get_token_ids_and_expand_weights([text], [1.0], device="cpu")
    ids = ids.tolist()
    return [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)]


def test_2400_token_prompt_chunks_and_shapes(enc, long_prompt, pipes):
    e = enc.encode(long_prompt, "blurry, low quality")
    assert e.prompt_tokens == 2400
    tok = pipes[0].tokenizer
    chunks = _chunk_tokens(enc, long_prompt)
    assert e.prompt_chunks == len(chunks)
    # compel cuts at the last phrase boundary inside each 75-token window: never more than 75
    # tokens, so at least 32 chunks, and every chunk but the last ends at a comma.
    assert 32 <= e.prompt_chunks <= 36
    comma = tok.convert_tokens_to_ids(",</w>")
    for c in chunks:
        assert c[0] == tok.bos_token_id and len(c) == CHUNK
        body = c[1:c.index(tok.eos_token_id)]
        assert 0 < len(body) <= 75
    assert all(c[1:c.index(tok.eos_token_id)][-1] == comma for c in chunks[:-1])
    assert sum(len(c[1:c.index(tok.eos_token_id)]) for c in chunks) == 2400
    assert e.prompt_embeds.shape == (1, CHUNK * e.prompt_chunks, TE1 + TE2)
    # The negative is padded to the prompt's length with the empty prompt's embedding.
    assert e.negative_chunks == 1
    assert e.negative_tokens == len(tok("blurry, low quality", add_special_tokens=False)["input_ids"])
    assert e.negative_prompt_embeds.shape == e.prompt_embeds.shape and e.padded == "negative"
    empty = pipes[0].encode_prompt("", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
    tail = e.negative_prompt_embeds[:, CHUNK:]
    assert torch.equal(tail, empty.repeat(1, e.prompt_chunks - 1, 1))
    assert e.pooled_prompt_embeds.shape == (1, TE2) and e.negative_pooled_prompt_embeds.shape == (1, TE2)


def test_breaks_every_75_gives_one_chunk_per_section(enc, pipes):
    text = generate_prompt(pipes[0].tokenizer, 2400, seed=11, breaks_every=75)
    e = enc.encode(text, "")
    assert (e.prompt_tokens, e.prompt_chunks) == (2400, 32)
    assert e.prompt_embeds.shape == (1, 32 * CHUNK, TE1 + TE2)


def test_break_starts_a_new_chunk(enc):
    both = enc.encode("a red fox BREAK a blue bird", "")
    alone = enc.encode("a blue bird", "")
    first = enc.encode("a red fox", "")
    assert both.prompt_chunks == 2 and both.prompt_tokens == 6
    assert torch.equal(both.prompt_embeds[:, CHUNK:], alone.prompt_embeds)
    assert torch.equal(both.prompt_embeds[:, :CHUNK], first.prompt_embeds)
    # Without BREAK the same words share one chunk.
    assert enc.encode("a red fox a blue bird", "").prompt_chunks == 1


def test_embeddings_come_from_the_penultimate_layer_and_pooled_from_the_first_77(enc, pipes):
    base = pipes[0]
    e = enc.encode("a lighthouse on a rocky cliff", "")
    ids = base.tokenizer("a lighthouse on a rocky cliff", padding="max_length", max_length=77, return_tensors="pt").input_ids
    ids2 = base.tokenizer_2("a lighthouse on a rocky cliff", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        h1 = base.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        out2 = base.text_encoder_2(ids2, output_hidden_states=True)
    assert torch.allclose(e.prompt_embeds, torch.cat([h1, out2.hidden_states[-2]], dim=-1), atol=1e-5)
    assert torch.allclose(e.pooled_prompt_embeds, out2.text_embeds, atol=1e-5)
    # clip_skip 2 -> SD.Next's -(clip_skip + 1): hidden_states[-3], not normalized.
    e2 = PromptEncoder(base, "sdxl", clip_skip=2, device="cpu").encode("a lighthouse on a rocky cliff", "")
    with torch.no_grad():
        h1b = base.text_encoder(ids, output_hidden_states=True).hidden_states[-3]
    assert torch.allclose(e2.prompt_embeds[..., :TE1], h1b, atol=1e-5)


def test_pooled_embedding_ignores_tokens_past_77(enc, long_prompt):
    a = enc.encode(long_prompt, "")
    b = enc.encode(long_prompt + ", an extra phrase at the very end", "")
    assert b.prompt_tokens > a.prompt_tokens
    assert torch.equal(a.pooled_prompt_embeds, b.pooled_prompt_embeds)


def test_refiner_encodes_with_text_encoder_2_only(pipes, long_prompt):
    e = PromptEncoder(pipes[1], "sdxl-refiner", device="cpu").encode(long_prompt, "")
    assert e.prompt_tokens == 2400
    assert e.prompt_embeds.shape == (1, CHUNK * e.prompt_chunks, TE2)
    assert e.negative_prompt_embeds.shape == e.prompt_embeds.shape
    assert e.pooled_prompt_embeds.shape == (1, TE2)


def test_prompt_longer_than_negative_either_way(enc):
    e = enc.encode("a cat", "dark, " * 40)  # 80 tokens: two chunks
    assert e.negative_tokens == 80 and e.negative_chunks == 2 and e.prompt_chunks == 1 and e.padded == "prompt"
    assert e.prompt_embeds.shape == e.negative_prompt_embeds.shape == (1, 2 * CHUNK, TE1 + TE2)


def test_attention_weights_change_the_embedding_not_the_shape(enc):
    plain = enc.encode("a red fox", "")
    weighted = enc.encode("a (red:1.5) fox", "")
    assert weighted.prompt_tokens == plain.prompt_tokens == 3
    assert weighted.prompt_embeds.shape == plain.prompt_embeds.shape
    assert not torch.equal(weighted.prompt_embeds, plain.prompt_embeds)
