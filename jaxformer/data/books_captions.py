"""Books and image captions as text, for the language model of a Flamingo-style model.

The frozen language model of a Flamingo-style model is a GPT pretrained on text alone: the
embedded books (`books.embedded_documents()`: Shakespeare's plays, Austen's chapters, the
chapters of the King James Bible; every paragraph a line) and caption lines, so that it
already knows the language of the captions it will later read and write next to images.

Caption lines, each ending with `END_OF_CHUNK` (as every text chunk of an interleaved
image-text sequence does, "an emoji of grinning face.<|endofchunk|>"):
  * every distinct caption of the training emoji (`emoji.read_table()` less the
    subcategories `holdout_subcategories`, default `emoji.HOLDOUT`: held-out classes are
    never seen in caption form), once as is and once put into one of `emoji.EMOJI_TEMPLATES`
    (the template turns with each repeat, so that over 8 repeats a caption meets all 8);
  * with `fashion_mnist` (default true), each Fashion-MNIST class name put into each of
    `emoji.FASHION_TEMPLATES` (class names only: no images are read).
Every `HELD_OUT_EVERY`-th caption (every form of it) and Fashion-MNIST line, from the middle
one, is held out for validation. The train stream repeats the other caption lines
`caption_repeats` times; with the default of 8 they are 18% of its tokens (with the
4096-piece vocabulary of configs/flamingo/lm.py: 4.19M tokens, 0.76M of them in caption lines,
newlines included; 17% with 512 pieces). The caption lines are shuffled with a fixed seed and
scattered, in runs (about 50 lines each), over the gaps between the books' documents (the
documents stay whole and in order), so that a window holds book text, a run of consecutive
captions, or both. The validation stream is the books' validation documents (every 64th,
`books.split_documents`) with the held-out caption lines, once each, scattered likewise:
88K tokens, 9% of them captions.

The tokenizer is a SentencePiece BPE of `vocab_size` pieces trained on the train stream, with
`MEDIA_TOKEN` and `END_OF_CHUNK` as pieces of their own (one id each, split out of any text
they occur in); it is kept in `<workdir>/assets` and reused from there. `MEDIA_TOKEN` never
occurs in this text: a model that reads images places it. Token ids are cached under
`<data_dir>/books_captions/tokens/`, keyed by the tokenizer and the text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
from etils import epath

from jaxformer.data import bible_enes, books, common, emoji, lm_pipeline, shakespeare, tokenizers
from jaxformer.data.common import DataSpec, TokenizerSpec
from jaxformer.data.lm_pipeline import LMData
from jaxformer.data.tokenizers import Tokenizer

MEDIA_TOKEN = "<image>"
END_OF_CHUNK = "<|endofchunk|>"
SPECIAL_SYMBOLS = (MEDIA_TOKEN, END_OF_CHUNK)
# Their ids in a tokenizer trained here (after `<unk>` 0 and the newline 1).
MEDIA_ID, END_OF_CHUNK_ID = 2, 3
HELD_OUT_EVERY = books.HELD_OUT_EVERY
MIX_SEED = 0
SPLITS = ("train", "validation")
DEFAULTS = {"tokenizer": "bpe", "holdout_subcategories": emoji.HOLDOUT, "fashion_mnist": True,
            "caption_repeats": 8, "data_dir": ""}
KEYS = ("name", "vocab_size", "block_size", *DEFAULTS)
CORPUS_FILES = (books.AUSTEN_PATH, books.PLAYS_PATH, shakespeare.CORPUS_PATH,
                bible_enes.CORPUS_PATH, emoji.TABLE_PATH)


# --- Text ----------------------------------------------------------------------------------

def chunk(text: str) -> str:
    """A caption as a chunk of interleaved text: `text` followed by `END_OF_CHUNK`."""
    return text + END_OF_CHUNK


def emoji_captions(held_out: Sequence[str] = emoji.HOLDOUT) -> list[str]:
    """Every distinct caption of the emoji outside the subcategories `held_out`, in the
    table's order."""
    return list(dict.fromkeys(c for e in emoji.read_table() if e.subcategory not in held_out
                              for c in e.captions))


def _is_held_out(index: int) -> bool:
    return index % HELD_OUT_EVERY == HELD_OUT_EVERY // 2


def caption_lines(held_out: Sequence[str] = emoji.HOLDOUT, *, fashion_mnist: bool = True,
                  repeats: int = DEFAULTS["caption_repeats"]) -> dict[str, list[str]]:
    """The caption lines of each split, in order (see the module docstring), without newlines.

    "train": for each of `repeats` repeats, each training caption as is and in a template
    (the `r`-th repeat of the `i`-th caption takes template `(i + r) % 8`), then the
    Fashion-MNIST lines. "validation": each held-out caption as is and in every template,
    then the held-out Fashion-MNIST lines.
    """
    captions = emoji_captions(held_out)
    templates = emoji.EMOJI_TEMPLATES
    fashion = [t.format(name) for name in emoji.FASHION_CLASS_NAMES
               for t in emoji.FASHION_TEMPLATES] if fashion_mnist else []
    train = [(i, c) for i, c in enumerate(captions) if not _is_held_out(i)]
    lines = {"train": [], "validation": []}
    for r in range(repeats):
        for i, caption in train:
            template = templates[(i + r) % len(templates)]
            lines["train"] += [chunk(caption), chunk(template.format(caption))]
        lines["train"] += [chunk(f) for j, f in enumerate(fashion) if not _is_held_out(j)]
    for i, caption in enumerate(captions):
        if _is_held_out(i):
            lines["validation"] += [chunk(caption)] + [chunk(t.format(caption))
                                                       for t in templates]
    lines["validation"] += [chunk(f) for j, f in enumerate(fashion) if _is_held_out(j)]
    return lines


def mix(documents: Sequence[books.Document], captions: Sequence[str], *,
        seed: int = MIX_SEED) -> list[str]:
    """The documents' paragraphs, in order, with the caption lines shuffled and scattered over
    the `len(documents) + 1` gaps before, between and after the documents."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(captions))
    gaps = rng.integers(len(documents) + 1, size=len(captions))
    runs: list[list[str]] = [[] for _ in range(len(documents) + 1)]
    for index, gap in zip(order, gaps, strict=True):
        runs[gap].append(captions[index])
    lines = []
    for run, document in zip(runs[:-1], documents, strict=True):
        lines += run
        lines += document.paragraphs
    return lines + runs[-1]


def corpus(held_out: Sequence[str] = emoji.HOLDOUT, *, fashion_mnist: bool = True,
           caption_repeats: int = DEFAULTS["caption_repeats"]) -> dict[str, str]:
    """The text of each split: its lines (book paragraphs and caption lines), each ending
    with a newline."""
    documents = books.split_documents(books.embedded_documents())
    captions = caption_lines(held_out, fashion_mnist=fashion_mnist, repeats=caption_repeats)
    return {name: "".join(line + "\n" for line in mix(documents[name], captions[name]))
            for name in SPLITS}


def special_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    """(`MEDIA_TOKEN`'s id, `END_OF_CHUNK`'s id): each symbol must be a single id of its own,
    also inside other text, or this raises ValueError."""
    ids = []
    for symbol in SPECIAL_SYMBOLS:
        try:
            encoded = [int(i) for i in tokenizer.encode(symbol)]
            inside = [int(i) for i in tokenizer.encode(f"a{symbol}a")]
        except ValueError:  # A character tokenizer without the symbol's characters.
            encoded = inside = []
        if len(encoded) != 1 or encoded[0] not in inside or tokenizer.decode(encoded) != symbol:
            raise ValueError(
                f"the tokenizer has no id of its own for {symbol!r} (it encodes to "
                f"{len(encoded) or 'no'} ids); it must be a BPE tokenizer trained with "
                f"extra_symbols={SPECIAL_SYMBOLS}, as the books_captions data makes")
        ids.append(encoded[0])
    return ids[0], ids[1]


# --- The data module -------------------------------------------------------------------------

def _get(config: ml_collections.ConfigDict, key: str):
    return config.get(key, DEFAULTS[key])


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, reading only the emoji table."""
    _check_text_config(config)
    common.require_int(config, "block_size", minimum=1)
    common.check_data_dir(_get(config, "data_dir"), default_must_exist=False)


def _check_text_config(config: ml_collections.ConfigDict) -> None:
    """Checks the keys that the text and the tokenizer depend on (and that no key is unknown)."""
    unknown = sorted(set(config.keys()) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown data keys {unknown} for books_captions; known: "
                         f"{', '.join(KEYS)}")
    common.require_choice(config, "tokenizer", ("bpe",), default=DEFAULTS["tokenizer"])
    common.require_int(config, "vocab_size", minimum=tokenizers.min_bpe_vocab_size(
        extra_symbols=len(SPECIAL_SYMBOLS)))
    common.require_int(config, "caption_repeats", minimum=1,
                       default=DEFAULTS["caption_repeats"])
    if not isinstance(_get(config, "fashion_mnist"), bool):
        raise ValueError(f"data.fashion_mnist must be true or false, got "
                         f"{_get(config, 'fashion_mnist')!r}")
    for path in CORPUS_FILES:
        if not path.is_file():
            raise ValueError(f"the embedded corpus file {path} is missing; reinstall jaxformer")
    emoji.holdout(config)  # Subcategory names that exist, and emoji left on both sides.


def _texts(config: ml_collections.ConfigDict) -> dict[str, str]:
    return corpus(emoji.holdout(config), fashion_mnist=_get(config, "fashion_mnist"),
                  caption_repeats=_get(config, "caption_repeats"))


def _tokenizer(config: ml_collections.ConfigDict, workdir: str | None,
               texts: Callable[[], dict[str, str]]) -> Tokenizer:
    result = lm_pipeline.tokenizer_for(
        "bpe", assets_dir=common.assets_dir(workdir), corpus=lambda: "".join(texts().values()),
        train_text=lambda: texts()["train"], vocab_size=config.vocab_size,
        extra_symbols=SPECIAL_SYMBOLS)
    special_ids(result)  # A reused tokenizer must have them too.
    return result


def tokenizer(config: ml_collections.ConfigDict, workdir: str | None) -> Tokenizer:
    """The tokenizer `build` gives (and keeps in `<workdir>/assets`), without tokenizing the
    text: the one saved there, else one trained on the train text. `config` needs only
    `vocab_size`; the keys the text depends on default as in `build`. Raises ValueError for a
    saved tokenizer without the special symbols."""
    _check_text_config(config)
    return _tokenizer(config, workdir, lambda: _texts(config))


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """`vocab_size` BPE pieces, without reading the books or training a tokenizer."""
    check_config(config)
    return DataSpec(vocab_size=config.vocab_size, tokenizer=TokenizerSpec(config.vocab_size))


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> LMData:
    """Books and captions as language-model data.

    Args:
        config: the `data` part of the experiment config: `vocab_size`, `block_size`,
            `tokenizer` ("bpe", the only kind), `holdout_subcategories` (emoji
            subcategories whose captions are never used; default `emoji.HOLDOUT`),
            `fashion_mnist` (true: add the Fashion-MNIST caption lines), `caption_repeats`
            (8: times the train stream holds each training caption line) and `data_dir`
            (where token ids are cached: "" means $TFDS_DATA_DIR or ~/tensorflow_datasets).
        workdir: the experiment's directory; the tokenizer is kept in its `assets/` and
            reused from there. None builds the tokenizer afresh in memory.
    """
    check_config(config)
    texts = _texts(config)
    lm_tokenizer = _tokenizer(config, workdir, lambda: texts)
    data_dir = common.resolve_data_dir(_get(config, "data_dir"), create=True)
    cache_dir = (epath.Path(data_dir) / "books_captions" / "tokens"
                 / tokenizers.fingerprint(lm_tokenizer))
    tokens = {
        name: lm_pipeline.cached_tokens(
            cache_dir / f"{name}-{common.digest([text])}.npy",
            lambda text=text: lm_pipeline.tokenize(lm_tokenizer, shakespeare.chunk_text(text)),
            lm_tokenizer.vocab_size)
        for name, text in texts.items()
    }
    return LMData(tokenizer=lm_tokenizer, train_tokens=tokens["train"],
                  eval_tokens=tokens["validation"], block_size=config.block_size)
