"""Prompts and the synthetic tokenizer: token-exact generation, BREAK, A1111 attention parsing.

These need only the tokenizer (no model weights), so they are fast."""
from __future__ import annotations

import hashlib
import json

import pytest

from stress.errors import StressError
from stress.workload import tokenizer as models   # the synthetic vocabulary lives in workload/tokenizer.py
from stress.workload.prompts import (
    TokenCounter,
    generate_prompt,
    parse_prompt_attention,
    resolve_prompt_text,
    sections_with_weights,
    split_breaks,
    truncate_for_metadata,
    vocabulary_words,
)


@pytest.fixture(scope="module")
def tok():
    return models.synthetic_tokenizer()


def test_synthetic_vocab_has_clip_layout_and_is_deterministic(tok):
    vocab, merges = models.synthetic_vocab()
    assert len(vocab) == 49408 == models.VOCAB_SIZE
    assert len(merges) == 49408 - 512 - 2
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!"] == 0  # SDXL's tokenizer_2 pads with "!", id 0, as the real one
    # Every merge joins two tokens that exist before it, and makes a new one.
    for rank, (a, b) in enumerate(merges[:2000]):
        assert vocab[a] < 512 + rank and vocab[b] < 512 + rank and vocab[a + b] == 512 + rank
    again = models.synthetic_vocab()
    digest = lambda vm: hashlib.sha256(json.dumps([sorted(vm[0].items()), vm[1]]).encode()).hexdigest()
    assert digest(again) == digest((vocab, merges))
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407 and tok.pad_token_id == 49407
    assert models.synthetic_tokenizer(pad_token="!").pad_token_id == 0
    assert tok.model_max_length == 77


def test_synthetic_tokenizer_handles_any_text(tok):
    counter = TokenCounter(tok)
    # Words the generator uses are single tokens, as common words are in CLIP's vocabulary.
    words = vocabulary_words()
    assert len(words) > 500
    assert all(counter.count_word(w) == 1 for w in words)
    ids = tok("Zürich xylophone 1152x1536 naïve 日本 ✓!!")["input_ids"]
    assert ids[0] == 49406 and ids[-1] == 49407
    assert len(ids) > 10 and max(ids) <= 49407
    assert tok.decode(tok("a lighthouse on a cliff")["input_ids"], skip_special_tokens=True) == "a lighthouse on a cliff"


@pytest.mark.parametrize("n", [0, 1, 2, 74, 75, 76, 77, 150, 2400])
def test_generated_prompt_has_exact_token_count(tok, n):
    text = generate_prompt(tok, n, seed=7)
    ids = tok(text, add_special_tokens=False)["input_ids"] if text else []
    assert len(ids) == n
    assert "BREAK" not in text


def test_generated_prompt_is_deterministic_and_seeded(tok):
    a = generate_prompt(tok, 2400, seed=1)
    assert a == generate_prompt(tok, 2400, seed=1)
    assert a != generate_prompt(tok, 2400, seed=2)
    # Reads like a Stable Diffusion prompt: comma-separated phrases.
    assert a.count(",") > 300


def test_breaks_every_makes_sections_of_exactly_n_tokens(tok):
    text = generate_prompt(tok, 2400, seed=3, breaks_every=75)
    sections = split_breaks(text)
    assert len(sections) == 32
    counts = [len(tok(s, add_special_tokens=False)["input_ids"]) for s in sections]
    assert counts == [75] * 32
    # A remainder section when N does not divide the total; BREAK itself is not counted.
    text = generate_prompt(tok, 250, seed=3, breaks_every=100)
    assert [TokenCounter(tok).count(s) for s in split_breaks(text)] == [100, 100, 50]
    assert TokenCounter(tok).count_prompt(text) == 250


def test_webui_parser_matches_a1111():
    def parse(t):
        return parse_prompt_attention(t, "webui")

    assert parse("normal text") == [["normal text", 1.0]]
    assert parse("an (important) word") == [["an ", 1.0], ["important", 1.1], [" word", 1.0]]
    got = parse("(unbalanced")
    assert got[0][0] == "unbalanced" and got[0][1] == pytest.approx(1.1)
    assert parse("\\(literal\\]") == [["(literal]", 1.0]]
    got = parse("(unnecessary)(parens)")
    assert got[0][0] == "unnecessaryparens" and got[0][1] == pytest.approx(1.1)
    got = parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    expected = [["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1],
                ["hill", 0.55], [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[1] for g in got] == pytest.approx([e[1] for e in expected])
    assert parse("") == [["", 1.0]]
    assert parse("a cat BREAK a dog") == [["a cat", 1.0], ["BREAK", -1], ["a dog", 1.0]]
    # The webui allows spaces around the weight; a weight that is no number is one clear error.
    assert parse("(red: 1.3 )") == [["red", 1.3]]
    with pytest.raises(StressError, match="is not a number"):
        parse("(red:1.2.3)")


def test_sections_follow_sdnext_break_walk():
    # webui: a leading or trailing BREAK leaves an empty fragment, encoded as an empty chunk.
    assert sections_with_weights("a cat BREAK a dog", "webui") == [(["a cat"], [1.0]), (["a dog"], [1.0])]
    assert sections_with_weights("a cat BREAK", "webui") == [(["a cat"], [1.0]), ([""], [1.0])]
    assert sections_with_weights("BREAK a cat", "webui") == [([""], [1.0]), (["a cat"], [1.0])]
    # native drops empty fragments, so the empty section is skipped as SD.Next skips it.
    assert sections_with_weights("a cat BREAK") == [(["a cat"], [1.0])]
    assert sections_with_weights("BREAK a cat") == [(["a cat"], [1.0])]
    # "break" in lower case is an ordinary word.
    assert sections_with_weights("break a cat") == [(["break a cat"], [1.0])]
    frags, weights = sections_with_weights("(red:1.5) fox BREAK blue")[0]
    assert frags == ["red", "fox"] and weights == [1.5, 1.0]


def test_resolve_prompt_text_sources(tmp_path, tok):
    from stress.scenario import PromptSpec

    assert resolve_prompt_text(PromptSpec(text="a cat"), tmp_path, None) == "a cat"
    (tmp_path / "p.txt").write_text("  a prompt from a file\n", encoding="utf-8")
    assert resolve_prompt_text(PromptSpec(file="p.txt"), tmp_path, None) == "a prompt from a file"
    with pytest.raises(StressError, match="cannot read prompt file"):
        resolve_prompt_text(PromptSpec(file="missing.txt"), tmp_path, None)
    text = resolve_prompt_text(PromptSpec(tokens=300, seed=5, breaks_every=100), tmp_path, tok)
    assert TokenCounter(tok).count_prompt(text) == 300 and text.count("BREAK") == 2
    with pytest.raises(StressError, match="tokenizer"):
        resolve_prompt_text(PromptSpec(tokens=10), tmp_path, None)


def test_truncate_for_metadata_keeps_short_text_and_marks_long_text():
    assert truncate_for_metadata("short", 100) == "short"
    long = "word " * 20000
    cut = truncate_for_metadata(long, 1000)
    assert len(cut.encode("utf-8")) <= 1000
    assert "truncated: 100000 characters" in cut and hashlib.sha256(long.encode()).hexdigest() in cut
    # Never splits a multi-byte character.
    cut = truncate_for_metadata("é" * 5000, 501)
    cut.encode("utf-8")
    assert len(cut.encode("utf-8")) <= 501
