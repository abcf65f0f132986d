"""Prompts: token-exact generation, and SD.Next-style long-prompt encoding.

Three parts, in the order a prompt travels:

1. :func:`resolve_prompt_text` turns a scenario ``PromptSpec`` into text: literal, read from a file, or
   generated (:func:`generate_prompt`) to an exact token count as the model's own tokenizer counts it
   (BOS/EOS excluded), deterministic from ``prompt.seed``, optionally with ``BREAK`` every N tokens.
2. :mod:`stress.workload.prompt_parser` splits the text per text encoder (``TE2:``) and parses the
   attention syntax into (fragment, weight) pairs as SD.Next does (``native`` by default, ``a1111``
   and ``webui`` selectable).
3. :class:`PromptEncoder` encodes as SD.Next's ``modules/prompt_parser_diffusers.py``
   (``get_weighted_text_embeddings``) does: one compel ``EmbeddingsProvider`` per text encoder
   (``truncate=False``), each BREAK section encoded on its own (compel cuts it into 75-token chunks,
   each wrapped in BOS/EOS to 77), sections concatenated on the token axis, encoders concatenated on
   the feature axis; a pooled embedding from the last encoder's first 77 tokens, made only when that
   encoder is wider than CLIP ViT-L; the shorter of prompt/negative padded with the empty-prompt
   embedding.

Nothing here imports torch at module import time: the supervisor may import this module.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from stress.errors import StressError
from stress.workload.prompt_parser import (  # noqa: F401  (re-exported: the planner and tests import them here)
    MODES,
    break_sections,
    check_mode,
    negative_sections,
    parse_prompt_attention,
    sections_with_weights,
    split_prompts,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

# --------------------------------------------------------------------------------------------
# Vocabulary: the words generated prompts are made of. It is also the corpus the synthetic BPE
# vocabulary of the built-in models is trained on (stress.workload.models), so that these words are
# single tokens there, as common English words are in the real CLIP vocabulary.

QUALITY = """masterpiece|best quality|high quality|highly detailed|ultra detailed|intricate details|
sharp focus|award winning|professional|photorealistic|hyperrealistic|cinematic|dramatic|elegant|
stunning|beautiful|gorgeous|breathtaking|epic|majestic|detailed background|fine details|
high resolution|crisp|clean lines|perfect composition|balanced composition|rule of thirds|
depth of field|shallow depth of field|bokeh|film grain|subtle texture|soft gradients""".replace("\n", "")

STYLES = """oil painting|watercolor|gouache|charcoal sketch|pencil drawing|ink illustration|
digital painting|concept art|matte painting|illustration|photograph|portrait photograph|
landscape photograph|street photography|macro photograph|analog film|polaroid|engraving|woodcut|
linocut|etching|lithograph|mosaic|stained glass|fresco|tapestry|pastel drawing|acrylic painting|
impressionism|expressionism|surrealism|realism|romanticism|baroque|renaissance|art nouveau|
art deco|minimalism|cubism|pointillism|ukiyo|bauhaus|brutalism|gothic|rococo|neoclassical|
pop art|vaporwave|synthwave|cyberpunk|steampunk|solarpunk|dieselpunk|fantasy|science fiction|
noir|retro|vintage|futuristic|whimsical|dreamlike|ethereal|moody|atmospheric|painterly""".replace("\n", "")

ADJECTIVES = """ancient|old|young|tiny|small|large|huge|giant|tall|short|narrow|wide|deep|shallow|
bright|dark|dim|glowing|shining|sparkling|shimmering|gleaming|radiant|luminous|misty|foggy|hazy|
cloudy|rainy|snowy|frozen|icy|sunny|stormy|windy|calm|quiet|silent|peaceful|serene|tranquil|
busy|crowded|empty|abandoned|forgotten|hidden|secret|mysterious|magical|enchanted|haunted|
sacred|royal|noble|humble|rustic|weathered|worn|broken|ruined|overgrown|lush|green|verdant|
blooming|wild|tangled|twisted|curved|round|square|angular|geometric|symmetrical|delicate|fragile|
sturdy|heavy|light|soft|smooth|rough|jagged|sharp|polished|rusty|dusty|wet|dry|warm|cold|hot|
cool|gentle|fierce|proud|lonely|happy|joyful|melancholic|wistful|nostalgic|hopeful|curious|
playful|graceful|bold|vivid|muted|pale|faded|saturated|colorful|monochrome|ornate|simple|
elaborate|decorated|carved|painted|woven|embroidered|gilded|golden|silver|bronze|copper|crystal|
glass|wooden|stone|marble|granite|brick|iron|steel|velvet|silk|linen|leather|paper|floating|
flying|falling|rising|drifting|sleeping|dancing|running|walking|standing|sitting|reading|
singing|reflecting|towering|sprawling|winding|endless|distant|nearby|coastal|alpine|tropical|
desert|arctic|urban|rural|medieval|victorian|modern|industrial|celestial|cosmic|lunar|solar|
oceanic|volcanic|autumn|winter|spring|summer|morning|evening|midnight|twilight""".replace("\n", "")

COLORS = """red|crimson|scarlet|orange|amber|yellow|lemon|gold|olive|lime|emerald|jade|teal|cyan|
turquoise|azure|blue|cobalt|navy|indigo|violet|purple|lavender|magenta|pink|rose|coral|peach|
beige|ivory|cream|white|grey|gray|charcoal|black|brown|chocolate|rust|copper|bronze|silver|
pastel|neon|iridescent|opalescent|sepia""".replace("\n", "")

NOUNS = """lighthouse|castle|tower|cathedral|temple|shrine|palace|cottage|cabin|house|village|town|
city|harbor|bridge|gate|wall|fountain|garden|courtyard|library|market|street|alley|staircase|
balcony|window|door|roof|chimney|lantern|candle|clock|mirror|book|scroll|map|compass|telescope|
ship|boat|sailboat|airship|train|carriage|bicycle|car|robot|machine|engine|gear|statue|sculpture|
portrait|painting|vase|teapot|cup|bowl|basket|chair|table|bed|rug|curtain|flower|rose|tulip|lily|
orchid|sunflower|daisy|lotus|tree|oak|pine|willow|birch|maple|cherry|forest|meadow|field|hill|
mountain|valley|canyon|cliff|cave|river|stream|waterfall|lake|pond|sea|ocean|beach|shore|island|
reef|wave|cloud|sky|sun|moon|star|galaxy|nebula|planet|comet|aurora|rainbow|storm|lightning|
rain|snow|ice|fire|flame|smoke|dust|sand|rock|crystal|gem|pearl|feather|leaf|branch|root|vine|
moss|fern|mushroom|butterfly|moth|bee|dragonfly|bird|owl|raven|eagle|hawk|swan|heron|peacock|
fox|wolf|bear|deer|stag|horse|rabbit|cat|dog|lion|tiger|elephant|whale|dolphin|fish|turtle|
dragon|phoenix|unicorn|griffin|knight|king|queen|prince|princess|wizard|witch|sorcerer|warrior|
archer|sailor|traveler|wanderer|explorer|scholar|monk|merchant|farmer|dancer|musician|painter|
child|girl|boy|woman|man|figure|silhouette|face|eyes|hands|hair|dress|cloak|armor|crown|sword|
shield|staff|wand|helmet|mask|ribbon|jewel|necklace|ring|umbrella|kite|balloon|lamp|shadow|
reflection|portal|ruins|pillar|arch|dome|spire|throne|altar|bell|orb|vessel|chest|key|
landscape|seascape|cityscape|skyline|horizon|sunset|sunrise|dawn|dusk|night|season|journey|
dream|memory|story|legend|myth|song|silence""".replace("\n", "")

PLACES = """forest|meadow|valley|mountain|coast|harbor|village|city|desert|jungle|swamp|tundra|
glacier|island|canyon|plateau|prairie|garden|palace|cathedral|library|market|station|observatory|
lighthouse|castle|ruins|cave|river|lake|ocean|sky|clouds|countryside|kingdom|wilderness""".replace("\n", "")

LIGHTING = """golden hour|blue hour|soft|volumetric|rim|backlit|diffuse|ambient|moonlit|candlelit|
lamplit|sunlit|dappled|dramatic|studio|natural|warm|cool|overcast|neon|firelight|starlight|
twilight|morning|evening|harsh|glowing|shimmering|cinematic|chiaroscuro""".replace("\n", "")

CAMERA = """wide angle|telephoto|fisheye|macro lens|tilt shift|aerial view|bird eye view|
low angle|high angle|close up|extreme close up|medium shot|full body|establishing shot|
panoramic|symmetrical framing|centered composition|leading lines|long exposure|
motion blur|slow shutter|fast shutter|prime lens|anamorphic|isometric|top down view|side view|
three quarter view|dutch angle|over the shoulder""".replace("\n", "")

PREPOSITIONS = "in|on|under|over|above|below|beside|near|behind|beyond|across|along|through|among|between|inside|around|against|within"
DETERMINERS = "a|the|an|one|two|three|many|several|some|every|each|no|this|that|its|their|our|his|her"
VERBS = """holding|carrying|watching|facing|overlooking|surrounded|covered|filled|lit|framed|
reflected|guarded|crowned|wrapped|adorned|bathed|drenched|painted|carved|built|hidden|lost|
found|seen|made|shaped|woven|touched|kissed|embraced""".replace("\n", "")
CONNECTORS = "and|with|of|at|by|from|for|to|into|while|where|as|like|under"


def _split(s: str) -> list[str]:
    return [w.strip() for w in s.split("|") if w.strip()]


def vocabulary_words() -> list[str]:
    """Every distinct word the generator uses, in a fixed order (the BPE training corpus)."""
    seen: dict[str, None] = {}
    for group in (QUALITY, STYLES, ADJECTIVES, COLORS, NOUNS, PLACES, LIGHTING, CAMERA, PREPOSITIONS,
                  DETERMINERS, VERBS, CONNECTORS):
        for phrase in _split(group):
            for w in phrase.split():
                seen.setdefault(w.lower(), None)
    for extra in ("break", "lighting", "light", "style", "by", "art", "photo", "shot", "view", "detail"):
        seen.setdefault(extra, None)
    return list(seen)


# --------------------------------------------------------------------------------------------
# Token counting and token-exact prompt generation

BREAK_RE = re.compile(r"\s*\bBREAK\b\s*", re.S)


def split_breaks(text: str) -> list[str]:
    """Sections between ``BREAK`` keywords (case-sensitive, as A1111/SD.Next), empty ones dropped."""
    return [s for s in BREAK_RE.split(text) if s.strip()]


class TokenCounter:
    """Counts tokens as the model's tokenizer does, without BOS/EOS; caches per-word counts."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._cache: dict[str, int] = {}

    def count(self, text: str) -> int:
        if not text.strip():
            return 0
        ids = self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        return len(ids)

    def count_word(self, word: str) -> int:
        n = self._cache.get(word)
        if n is None:
            n = self._cache[word] = self.count(word)
        return n

    def count_prompt(self, text: str) -> int:
        """Tokens of a prompt as encoded: the sum over its BREAK sections."""
        return sum(self.count(s) for s in split_breaks(text))


@dataclass
class _Unit:
    text: str          # a word, or a punctuation mark that attaches to the previous word
    tokens: int
    attach: bool = False


class _PhraseMaker:
    """Stable-Diffusion-style prompt phrases ("intricate details", "a lighthouse on the cliff", ...)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.q, self.st, self.adj = _split(QUALITY), _split(STYLES), _split(ADJECTIVES)
        self.col, self.noun, self.place = _split(COLORS), _split(NOUNS), _split(PLACES)
        self.light, self.cam = _split(LIGHTING), _split(CAMERA)
        self.prep, self.det, self.verb = _split(PREPOSITIONS), _split(DETERMINERS), _split(VERBS)

    def phrase(self) -> str:
        r, c = self.rng, self.rng.choice
        kind = r.randrange(10)
        if kind == 0:
            return c(self.q)
        if kind == 1:
            return c(self.st)
        if kind == 2:
            return f"{c(self.adj)} {c(self.noun)}"
        if kind == 3:
            return f"{c(self.det)} {c(self.adj)} {c(self.noun)} {c(self.prep)} {c(['the', 'a'])} {c(self.place)}"
        if kind == 4:
            return f"{c(self.col)} {c(self.noun)}"
        if kind == 5:
            return f"{c(self.light)} lighting"
        if kind == 6:
            return c(self.cam)
        if kind == 7:
            return f"{c(self.noun)} {c(self.verb)} {c(['with', 'by', 'in'])} {c(self.col)} {c(self.noun)}"
        if kind == 8:
            return f"{c(self.adj)} {c(self.col)} {c(self.noun)}"
        return f"{c(self.noun)} {c(self.prep)} {c(self.det)} {c(self.adj)} {c(self.noun)}"


def _fill_section(target: int, maker: _PhraseMaker, counter: TokenCounter, fillers: list[str]) -> str:
    """Words and punctuation adding up to exactly ``target`` tokens.

    Phrases are comma-separated, as most Stable Diffusion prompts are (no periods: compel splits long
    prompts at the last period of a 75-token window first, which would shorten the chunks).
    CLIP's pre-tokenizer splits on whitespace and between letters and punctuation, so the token count
    of the joined text is the sum of the counts of its words and marks."""
    units: list[_Unit] = []
    used = 0
    comma = counter.count_word(",")
    while True:
        words = maker.phrase().split()
        cost = sum(counter.count_word(w) for w in words)
        sep_cost = comma if units else 0
        if used + sep_cost + cost > target:
            break
        if units:
            units.append(_Unit(",", comma, attach=True))
        units.extend(_Unit(w, counter.count_word(w)) for w in words)
        used += sep_cost + cost
    # Top up with one-token words (their choice is seeded too).
    while used < target:
        w = maker.rng.choice(fillers)
        units.append(_Unit(w, 1))
        used += 1
    out = ""
    for u in units:
        out += u.text if (u.attach or not out) else " " + u.text
    return out


def generate_prompt(tokenizer: Any, tokens: int, seed: int = 0, breaks_every: int | None = None) -> str:
    """A prompt of exactly ``tokens`` tokens as ``tokenizer`` counts them (BOS/EOS and ``BREAK``
    keywords excluded), deterministic from ``seed``. With ``breaks_every`` N, ``BREAK`` follows every
    N tokens, so each section is exactly N tokens (the last one the remainder)."""
    if tokens < 0:
        raise ValueError("tokens must be >= 0")
    if tokens == 0:
        return ""
    counter = TokenCounter(tokenizer)
    rng = random.Random(seed)
    maker = _PhraseMaker(rng)
    fillers = [w for w in vocabulary_words() if w.isalpha() and counter.count_word(w) == 1]
    if not fillers:  # every CLIP vocabulary has single letters as tokens
        fillers = [c for c in "abcdefghijklmnopqrstuvwxyz" if counter.count_word(c) == 1]
    if not fillers:
        raise StressError("the tokenizer has no single-token words; cannot generate an exact-length prompt")
    size = breaks_every or tokens
    sizes = [size] * (tokens // size) + ([tokens % size] if tokens % size else [])
    text = " BREAK ".join(_fill_section(n, maker, counter, fillers) for n in sizes)
    got = counter.count_prompt(text)
    if got != tokens:  # additivity failed: a tokenizer whose pre-tokenizer merges across spaces
        raise StressError(f"generated prompt has {got} tokens, wanted {tokens}: this tokenizer does not "
                          "count words independently; give the prompt as text or a file instead")
    return text


def resolve_prompt_text(spec: Any, base_dir: Path, tokenizer: Any | None) -> str:
    """The text of a scenario ``PromptSpec``: literal, a file (relative to ``base_dir``), or generated."""
    if spec.text is not None:
        return spec.text
    if spec.file is not None:
        p = Path(spec.file).expanduser()
        p = p if p.is_absolute() else base_dir / p
        try:
            return p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StressError(f"cannot read prompt file {p}: {exc.strerror or exc}") from None
    if tokenizer is None:
        raise StressError("a generated prompt (tokens: N) needs the model's tokenizer")
    return generate_prompt(tokenizer, spec.tokens, seed=spec.seed, breaks_every=spec.breaks_every)


def prompt_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# Encoding (torch, compel)

CHUNK = 77  # CLIP's context: 75 tokens + BOS + EOS
# SD.Next makes a pooled embedding only when the last encoder's embeddings are wider than this
# (prompt_parser_diffusers.py:702, ``prompt_embeds[-1].shape[-1] > 768``): CLIP ViT-L's width, so
# SDXL's and the refiner's OpenCLIP bigG (1280) get one and SD 1.5's ViT-L does not.
CLIP_L_WIDTH = 768


def clip_l_width_for(widths: Sequence[int]) -> int:
    """The width SD.Next's pooled rule compares with, for a model whose text encoders are ``widths``
    wide: 768 (CLIP ViT-L); for a model with every encoder narrower than that (the built-in tiny
    models, also loaded from their exported folders) the width of the tiny stand-in for ViT-L (their
    ``text_encoder``), so that the rule sorts them as it sorts the real architectures: tiny SDXL's
    and the tiny refiner's text_encoder_2 are wider, tiny SD 1.5's encoder is not."""
    if widths and max(widths) < CLIP_L_WIDTH:
        from stress.workload.models import builtin_component_configs

        return int(builtin_component_configs("builtin:tiny-sd15")["text_encoder"]["hidden_size"])
    return CLIP_L_WIDTH


def attention_mode(scenario: Any) -> str:
    """The scenario's prompt parser: ``prompt_attention`` when given, else SD.Next's default
    (``native``) under ``sdnext`` semantics and the A1111 webui's under ``diffusers`` semantics."""
    mode = getattr(scenario, "prompt_attention", None)
    if mode:
        return check_mode(mode)
    return "native" if scenario.refiner.semantics == "sdnext" else "webui"


@dataclass
class PromptPlan:
    """What each text encoder gets for one (prompt, negative) pair, before any tensor is made."""

    positive: list[list[tuple[list[str], list[float]]]]   # per provider: BREAK sections
    negative: list[list[tuple[list[str], list[float]]]]   # per provider: one section
    pooled_text: str                                       # the last encoder's pooled input
    negative_pooled_text: str


@dataclass
class EncodedPrompt:
    """Embeddings for one (prompt, negative) pair, ready for the pipeline's ``*_embeds`` arguments."""

    prompt_embeds: "torch.Tensor"
    negative_prompt_embeds: "torch.Tensor"
    pooled_prompt_embeds: "torch.Tensor | None"
    negative_pooled_prompt_embeds: "torch.Tensor | None"
    prompt_tokens: int
    prompt_chunks: int
    negative_tokens: int
    negative_chunks: int
    encode_s: float = 0.0
    padded: str | None = None            # "negative" / "prompt" when one was padded to the other
    info: dict = field(default_factory=dict)


def _provider_class():
    """compel's EmbeddingsProvider, extended with SD.Next's integer ``returned_embeddings_type``.

    compel 2.5 only understands its ``ReturnedEmbeddingsType`` enum (an int ends in ``assert False``);
    SD.Next monkeypatches ``_encode_token_ids_to_embeddings`` globally to accept ``-(clip_skip+1)``
    (SDXL: hidden_states[-(clip_skip+1)], not normalized) or ``clip_skip`` (SD 1.5: 1 = last hidden state,
    n > 1 = hidden_states[-n] through the final layer norm). We subclass instead of patching, and pass
    the enum where one means the same layer (so compel's own code runs in the default case)."""
    from compel.embeddings_provider import EmbeddingsProvider

    class SDNextEmbeddingsProvider(EmbeddingsProvider):
        def _encode_token_ids_to_embeddings(self, token_ids, attention_mask=None):  # noqa: ANN001, ANN202
            kind = self.returned_embeddings_type
            if not isinstance(kind, int):
                return super()._encode_token_ids_to_embeddings(token_ids, attention_mask)
            out = self.text_encoder(token_ids, attention_mask, output_hidden_states=kind != 1, return_dict=True)
            if kind == 1:
                return out.last_hidden_state
            layer = out.hidden_states[-abs(kind)]
            if kind > 0:
                layer = self.text_encoder.text_model.final_layer_norm(layer)
            return layer

    return SDNextEmbeddingsProvider


def embeddings_type(kind: str, clip_skip: int) -> Any:
    """What SD.Next passes as ``returned_embeddings_type`` (as compel's enum where it has one)."""
    from compel.embeddings_provider import ReturnedEmbeddingsType as R

    if kind in ("sdxl", "sdxl-refiner"):
        # SD.Next: -(clip_skip + 1): clip_skip 1 -> hidden_states[-2], not normalized.
        return R.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED if clip_skip == 1 else -(clip_skip + 1)
    if clip_skip == 1:
        return R.LAST_HIDDEN_STATES_NORMALIZED
    if clip_skip == 2:
        return R.PENULTIMATE_HIDDEN_STATES_NORMALIZED
    return clip_skip


class PromptEncoder:
    """Encodes prompts for one pipeline as SD.Next does (see the module docstring).

    ``kind``: ``sdxl`` (tokenizer + tokenizer_2), ``sdxl-refiner`` (tokenizer_2 only) or ``sd15``."""

    def __init__(self, pipe: Any, kind: str, clip_skip: int = 1, device: Any = None,
                 attention: str = "native", clip_l_width: int | None = None):
        self.pipe, self.kind, self.clip_skip = pipe, kind, clip_skip
        self.device = device
        self.attention = check_mode(attention)
        provider_cls = _provider_class()
        etype = embeddings_type(kind, clip_skip)
        self.providers = []
        for tok_name, te_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
            tok, te = getattr(pipe, tok_name, None), getattr(pipe, te_name, None)
            if tok is not None and te is not None:
                self.providers.append(provider_cls(tokenizer=tok, text_encoder=te, truncate=False,
                                                   returned_embeddings_type=etype, device=device))
        if not self.providers:
            raise StressError(f"the {kind} pipeline has no tokenizer/text encoder to encode prompts with")
        widths = [int(getattr(p.text_encoder.config, "hidden_size", 0) or 0) for p in self.providers]
        self.clip_l_width = clip_l_width if clip_l_width is not None else clip_l_width_for(widths)
        self._empty: Any = None

    def plan(self, prompt: str, negative: str) -> PromptPlan:
        """SD.Next's ``get_weighted_text_embeddings`` up to the encoders (prompt_parser_diffusers.py:
        616-647): split at ``TE2:``; when the first two parts are equal, both encoders get the first
        part of the prompt *and of the negative*; else each its own. Provider i takes part i, so the
        refiner's only encoder (text_encoder_2) takes the first part, as in SD.Next. The pooled
        embedding is always of the second part."""
        p1, p2, _, _ = split_prompts(prompt)
        n1, n2, _, _ = split_prompts(negative)
        pos_texts, neg_texts = ([p1, p2], [n1, n2]) if p1 != p2 else ([p1, p1], [n1, n1])
        pos_cache: dict[str, list] = {}
        neg_cache: dict[str, list] = {}
        positive, neg = [], []
        for i in range(len(self.providers)):
            pt, nt = pos_texts[i], neg_texts[i]
            if pt not in pos_cache:
                pos_cache[pt] = sections_with_weights(pt, self.attention)
            if nt not in neg_cache:
                neg_cache[nt] = negative_sections(nt, self.attention)
            positive.append(pos_cache[pt])
            neg.append(neg_cache[nt])
        return PromptPlan(positive, neg, p2, n2)

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens of the prompt as the first encoder encodes it (BOS/EOS/pad excluded)."""
        return sum(self.count_tokens(f) for f, _ in self.plan(prompt, "").positive[0])

    def count_tokens(self, fragments: Sequence[str]) -> int:
        """Tokens compel will encode for these fragments (BOS/EOS/pad excluded)."""
        ids = self.providers[0].get_token_ids(list(fragments), include_start_and_end_markers=False)
        return sum(len(x) for x in ids)

    def _encode_sections(self, provider: Any, sections: list[tuple[list[str], list[float]]]) -> "torch.Tensor":
        import torch

        if not sections:  # SD.Next fails here too (torch.cat of nothing)
            raise StressError("the prompt has no text outside BREAK markers: give it some words, or drop the BREAKs")
        embeds = []
        for frags, weights in sections:
            emb, _tokens = provider.get_embeddings_for_weighted_prompt_fragments(
                text_batch=[frags], fragment_weights_batch=[weights], device=self.device,
                should_return_tokens=True)
            embeds.append(emb)
        return torch.cat(embeds, dim=1)

    def empty_embedding(self) -> "torch.Tensor":
        """The empty prompt's embedding (77 tokens), computed by the pipeline's own ``encode_prompt``
        as SD.Next's ``pad_to_same_length`` does."""
        if self._empty is None:
            if self.kind == "sd15":
                self._empty = self.pipe.encode_prompt("", self.device, 1, False)[0]
            else:
                self._empty = self.pipe.encode_prompt("", device=self.device, num_images_per_prompt=1,
                                                      do_classifier_free_guidance=False)[0]
        return self._empty

    def encode(self, prompt: str, negative: str) -> EncodedPrompt:
        import time

        import torch

        t0 = time.perf_counter()
        plan = self.plan(prompt, negative)
        with torch.no_grad():
            pos, neg = [], []
            for i, provider in enumerate(self.providers):
                pos.append(self._encode_sections(provider, plan.positive[i]))
                neg.append(self._encode_sections(provider, plan.negative[i]))
            pooled = neg_pooled = None
            if pos[-1].shape[-1] > self.clip_l_width and self.kind != "sd15":
                # SD.Next's default (te_pooled_embeds off): the last encoder's pooled output for the
                # raw text of the second part, truncated to its first 77 tokens. (An SD 1.5 pipeline
                # with a wider encoder would get one too, and not accept it: it is not made.)
                pooled = self.providers[-1].get_pooled_embeddings(texts=[plan.pooled_text], device=self.device)
                if neg[-1].shape[-1] > self.clip_l_width:
                    neg_pooled = self.providers[-1].get_pooled_embeddings(texts=[plan.negative_pooled_text],
                                                                          device=self.device)
            prompt_embeds = torch.cat(pos, dim=-1) if len(pos) > 1 else pos[0]
            negative_embeds = torch.cat(neg, dim=-1) if len(neg) > 1 else neg[0]
            prompt_chunks = prompt_embeds.shape[1] // CHUNK
            negative_chunks = negative_embeds.shape[1] // CHUNK
            padded = None
            if prompt_embeds.shape[1] != negative_embeds.shape[1]:
                prompt_embeds, negative_embeds, padded = self._pad_to_same_length(prompt_embeds, negative_embeds)
        prompt_tokens = sum(self.count_tokens(f) for f, _ in plan.positive[0])
        negative_tokens = sum(self.count_tokens(f) for f, _ in plan.negative[0])
        return EncodedPrompt(prompt_embeds, negative_embeds, pooled, neg_pooled, prompt_tokens, prompt_chunks,
                             negative_tokens, negative_chunks, encode_s=time.perf_counter() - t0, padded=padded,
                             info={"attention": self.attention})

    def _pad_to_same_length(self, a: "torch.Tensor", b: "torch.Tensor") -> tuple:
        import torch

        empty = self.empty_embedding().to(a.device, a.dtype)
        longest = max(a.shape[1], b.shape[1])
        repeats = (longest - min(a.shape[1], b.shape[1])) // empty.shape[1]
        filler = empty.repeat(a.shape[0], repeats, 1)
        if a.shape[1] < longest:
            return torch.cat([a, filler], dim=1), b, "prompt"
        return a, torch.cat([b, filler], dim=1), "negative"


def repeat_batch(encoded: EncodedPrompt, n: int) -> dict[str, Any]:
    """Pipeline keyword arguments for a batch of ``n`` images sharing one prompt."""
    import torch

    def rep(x: Any) -> Any:
        return None if x is None else torch.cat([x] * n, dim=0)

    kw = {"prompt_embeds": rep(encoded.prompt_embeds), "negative_prompt_embeds": rep(encoded.negative_prompt_embeds)}
    if encoded.pooled_prompt_embeds is not None:
        kw["pooled_prompt_embeds"] = rep(encoded.pooled_prompt_embeds)
        kw["negative_pooled_prompt_embeds"] = rep(encoded.negative_pooled_prompt_embeds)
    return kw


def truncate_for_metadata(text: str, limit_bytes: int, note: Callable[[str], str] | None = None) -> str:
    """``text`` if it fits in ``limit_bytes`` of UTF-8, else a prefix plus a line naming its length and hash."""
    data = text.encode("utf-8")
    if len(data) <= limit_bytes:
        return text
    tail = (note(text) if note else
            f" ... [truncated: {len(text)} characters, sha256 {prompt_digest(text)}]")
    keep = max(0, limit_bytes - len(tail.encode("utf-8")))
    return data[:keep].decode("utf-8", errors="ignore") + tail
