"""The built-in models' tokenizer: a synthetic CLIP BPE vocabulary of CLIP's exact size (49,408 ids:
256 bytes, their end-of-word forms, merges learned from a fixed word list, BOS and EOS), built offline
and deterministically, so the long-prompt chunking runs on real tokenizer code with no download."""
from __future__ import annotations

import hashlib
import heapq
import json
import os
from typing import Any

VOCAB_SIZE = 49408          # CLIP's
N_MERGES = VOCAB_SIZE - 512 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
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
    from stress.workload.models import default_cache_dir
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


