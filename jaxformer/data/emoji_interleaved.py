"""The emoji corpus (and captioned Fashion-MNIST) as interleaved image-text sequences, tokenized
for a frozen language model (the Flamingo-style model's data).

Training pairs and eval splits are CLIP's (`data.emoji`: the same held-out subcategories, the
same captions and templates, the same image preprocessing), chunked into sequences by
`interleaved_pipeline`. Eval splits: `heldout` (the held-out emoji, each its own class named
by its name, with all its captions), and with `fashion_mnist` `fashion_mnist` (test) and
`fashion_mnist_train`. Few-shot classification splits: `heldout_groups` (each held-out
emoji classified into its held-out subcategory, "an emoji of a mammal.", the shots drawn from
the other held-out emoji: classes never trained on) and `fashion_mnist` (the test images into
the 10 classes, the shots drawn from the training images).

The tokenizer is the language model's: read from the run named by `tokenizer_workdir` (a
`books_captions` GPT run, whose vocabulary holds `<image>` and `<|endofchunk|>`) and kept in
this run's assets; without one, the `books_captions` tokenizer of `vocab_size` is trained
here (smoke tests).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from jaxformer.data import (
    books_captions,
    common,
    emoji,
    fashion_mnist,
    image_pipeline,
    tokenizers,
)
from jaxformer.data.common import TokenizerSpec
from jaxformer.data.image_pipeline import ArraySource
from jaxformer.data.image_text_pipeline import Concat
from jaxformer.data.interleaved_pipeline import FewShotSplit, InterleavedData, InterleavedSpec

# Class names of the held-out subcategories for few-shot classification (others: the
# subcategory's last part, "animal-reptile" -> "reptile").
GROUP_NAMES = {"animal-mammal": "mammal", "animal-bird": "bird", "animal-marine": "sea animal",
               "food-fruit": "fruit", "food-vegetable": "vegetable"}
DEFAULTS = {"tokenizer_workdir": "", "vocab_size": 4096, "seq_length": 64, "max_images": 4,
            "template_probability": 0.5, **emoji.DEFAULTS}


def _get(config: ml_collections.ConfigDict, key: str):
    return config.get(key, DEFAULTS[key])


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject."""
    image_pipeline.check_image_config(config, channels=emoji.CHANNELS,
                                      image_size=emoji.IMAGE_SIZE)
    common.require_int(config, "seq_length", minimum=2, default=DEFAULTS["seq_length"])
    common.require_int(config, "max_images", minimum=1, default=DEFAULTS["max_images"])
    probability = _get(config, "template_probability")
    if not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        raise ValueError(f"data.template_probability must be in [0, 1], got {probability!r}")
    if not isinstance(_get(config, "tokenizer_workdir"), str):
        raise ValueError("data.tokenizer_workdir must be a path (or empty)")
    emoji.holdout(config)
    source = _get(config, "fashion_mnist_source")
    if _get(config, "fashion_mnist"):
        fashion_mnist.resolve(source, _get(config, "data_dir"))


def tokenizer(config: ml_collections.ConfigDict, workdir: str | None
              ) -> tokenizers.SentencePieceTokenizer:
    """The language model's tokenizer: this run's own copy, else `tokenizer_workdir`'s (then
    copied here), else a new `books_captions` one."""
    assets = common.assets_dir(workdir)
    own = assets and os.path.join(assets, tokenizers.BPE_FILENAME)
    source = _get(config, "tokenizer_workdir")
    if own and os.path.isfile(own):
        result = tokenizers.load_tokenizer(own)
    elif source:
        if not os.path.isdir(os.path.join(source, "assets")):
            raise ValueError(f"data.tokenizer_workdir {source!r} is not a language-model run: "
                             "no assets/ with its tokenizer")
        try:
            result = tokenizers.load_tokenizer(source)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read the tokenizer of data.tokenizer_workdir {source}: "
                             f"{e}") from e
        if assets:
            os.makedirs(assets, exist_ok=True)
            result.save(own)
    else:
        result = books_captions.tokenizer(
            ml_collections.ConfigDict({"vocab_size": _get(config, "vocab_size"),
                                       "holdout_subcategories": emoji.holdout(config)}),
            workdir)
    books_captions.special_ids(result)
    if result.vocab_size != _get(config, "vocab_size"):
        raise ValueError(f"the language model's tokenizer has {result.vocab_size} tokens, "
                         f"data.vocab_size says {_get(config, 'vocab_size')}")
    return result


def group_name(subcategory: str) -> str:
    return GROUP_NAMES.get(subcategory, subcategory.split("-")[-1].replace("-", " "))


def heldout_groups(held_out: tuple[str, ...], source: Sequence) -> FewShotSplit:
    """The held-out emoji (`source`, in `emoji_splits` order) labelled by subcategory."""
    table = [e for e in emoji.read_table() if e.subcategory in held_out]
    labels = np.array([held_out.index(e.subcategory) for e in table], np.int32)
    queries = ArraySource({"image": np.stack([source[i]["image"] for i in range(len(source))]),
                           "label": labels})
    names = tuple(f"a {group_name(s)}" for s in held_out)
    return FewShotSplit(queries, queries, names, emoji.EMOJI_TEMPLATES[0])


def spec(config: ml_collections.ConfigDict) -> InterleavedSpec:
    """Shapes and token ids without reading images or a tokenizer (a `books_captions`
    tokenizer's special ids)."""
    check_config(config)
    vocab_size = _get(config, "vocab_size")
    return InterleavedSpec(
        vocab_size=vocab_size, tokenizer=TokenizerSpec(vocab_size),
        image_shape=emoji.preprocess(config).shape, seq_length=_get(config, "seq_length"),
        max_images=_get(config, "max_images"), media_id=books_captions.MEDIA_ID,
        end_of_chunk_id=books_captions.END_OF_CHUNK_ID)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> InterleavedData:
    """Interleaved sequences of the emoji pairs (and Fashion-MNIST's).

    Args:
        config: the `data` part of the experiment config: `tokenizer_workdir` (the frozen
            language model's run), `vocab_size` (without one), `seq_length` (64),
            `max_images` (4 chunks per training sequence), `template_probability`,
            the keys of `data.emoji` (`holdout_subcategories`, `fashion_mnist`, ...) and the
            image preprocessing keys (`image_size` 32, `mean`, `std`: the CLIP run's).
        workdir: where the tokenizer is kept (`<workdir>/assets`).
    """
    check_config(config)
    lm_tokenizer = tokenizer(config, workdir)
    media_id, end_id = books_captions.special_ids(lm_tokenizer)
    train, emoji_evals = emoji.emoji_splits(emoji.holdout(config))
    held_out = emoji.holdout(config)
    evals = {"heldout": emoji_evals["zeroshot"]}
    few_shot = {"heldout_groups": heldout_groups(held_out, emoji_evals["zeroshot"].source)}
    sources = [train]
    if _get(config, "fashion_mnist"):
        fashion_train, fashion_evals = emoji.fashion_splits(config)
        sources.append(fashion_train)
        evals.update(fashion_evals)
        few_shot["fashion_mnist"] = FewShotSplit(
            fashion_evals["fashion_mnist"].source, fashion_evals["fashion_mnist_train"].source,
            emoji.FASHION_CLASS_NAMES, emoji.FASHION_TEMPLATES[0])
    return InterleavedData(
        train_source=Concat(sources), eval_sources=evals, few_shot_splits=few_shot,
        tokenizer=lm_tokenizer,
        media_id=media_id, end_of_chunk_id=end_id, preprocess=emoji.preprocess(config),
        seq_length=_get(config, "seq_length"), max_images=_get(config, "max_images"),
        train_templates=emoji.EMOJI_TEMPLATES,
        template_probability=_get(config, "template_probability"),
        read_threads=_get(config, "read_threads"))
