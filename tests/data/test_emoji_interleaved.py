"""The emoji corpus as interleaved sequences for the Flamingo-style model: splits, held-out emoji
kept out of training, the held-out subcategories as few-shot classes, the language model's
tokenizer taken from its run and kept in this run's assets, config errors."""

import itertools
import os
import shutil

import ml_collections
import numpy as np
import pytest

from jaxformer.data import books_captions, emoji, emoji_interleaved, tokenizers

VOCAB = 512


def config(**overrides):
    return ml_collections.ConfigDict({"name": "emoji_interleaved", "vocab_size": VOCAB,
                                      "fashion_mnist_examples": 100, "seq_length": 32,
                                      "max_images": 3, **overrides})


def lm_run(path, vocab_size=VOCAB):
    """A directory standing for a books_captions GPT run: its tokenizer in assets/."""
    books_captions.tokenizer(ml_collections.ConfigDict({"vocab_size": vocab_size}), str(path))
    return str(path)


@pytest.fixture(scope="module")
def lm_workdir(tmp_path_factory):
    return lm_run(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="module")
def data(lm_workdir):
    return emoji_interleaved.build(config(tokenizer_workdir=lm_workdir), workdir=None)


def held_out_emoji(held_out=emoji.HOLDOUT):
    return [e for e in emoji.read_table() if e.subcategory in held_out]


def test_splits_sizes_and_special_ids(data):
    assert data.eval_splits == ("heldout", "fashion_mnist", "fashion_mnist_train")
    assert tuple(data.few_shot_splits) == ("heldout_groups", "fashion_mnist")
    assert len(held_out_emoji()) == 144
    assert len(data.train_source) == 1911 - 144 + 100
    assert len(data.split("heldout").source) == 144
    assert (data.seq_length, data.max_images, data.vocab_size) == (32, 3, VOCAB)
    assert data.image_shape == (32, 32, 3)
    assert data.tokenizer.encode("<image>") == [data.media_id]
    assert data.tokenizer.encode("<|endofchunk|>") == [data.end_of_chunk_id]
    fashion = data.few_shot("fashion_mnist")
    assert len(fashion.queries) == 2000 and len(fashion.support) == 10000
    assert fashion.caption(3) == "a photo of a dress."


def test_training_rows_are_captioned_training_images(data):
    batch = next(data.train_iter(batch_size=16, seed=0))
    assert batch["images"].shape == (16, 3, 32, 32, 3)
    assert batch["inputs"].shape == (16, 32)
    media = (batch["inputs"] == data.media_id).sum(axis=1)
    slots = batch["images"].any(axis=(2, 3, 4)).sum(axis=1)
    assert (media >= 1).all() and (media <= slots).all() and (slots <= 3).all()
    text = data.tokenizer.decode(batch["inputs"][0])
    assert text.startswith("<image>") and "<|endofchunk|>" in text


def test_no_training_image_is_a_held_out_emoji(data):
    heldout = {image.tobytes() for b in data.eval_iter(batch_size=64, num_batches=-1,
                                                       split="heldout")
               for image, w in zip(b["images"][:, 0], b["weights"].any(1)) if w}
    assert len(heldout) > 100  # Distinct images (a few emoji look alike).
    train = data.train_source
    trained = {data.eval_image(train[i]).tobytes() for i in range(len(train))}
    assert not heldout & trained
    seen = set()
    for batch in itertools.islice(data.train_iter(batch_size=64, seed=0), 4):
        for row in batch["images"]:
            seen.update(image.tobytes() for image in row if image.any())
    assert len(seen) > 200 and seen <= trained and not seen & heldout
    # The raw pixels too, and the captions.
    raw = {image.tobytes() for image in train.sources[0].features["image"]}
    assert not any(emoji.read_images()[e.index].tobytes() in raw for e in held_out_emoji())
    captions = {c for group in train.sources[0].features["captions"] for c in group}
    assert not captions & {c for e in held_out_emoji() for c in e.captions}


def test_heldout_split_has_the_canonical_names(data):
    batch = next(data.eval_iter(batch_size=4, num_batches=1, split="heldout"))
    assert batch["images"].shape == (4, 1, 32, 32, 3)
    names = [e.name for e in held_out_emoji()[:4]]
    assert [data.tokenizer.decode(row).split("<|endofchunk|>")[0] for row in batch["inputs"]
            ] == ["<image>" + name for name in names]
    for row, name in zip(batch["inputs"], names):
        ids = [data.media_id, *data.tokenizer.encode(name), data.end_of_chunk_id]
        np.testing.assert_array_equal(row[:len(ids)], ids)
        assert not row[len(ids):].any()


def test_heldout_groups_are_the_subcategories(data):
    split = data.few_shot("heldout_groups")
    held = held_out_emoji()
    labels = np.asarray(split.queries.features["label"])
    assert labels.tolist() == [emoji.HOLDOUT.index(e.subcategory) for e in held]
    assert np.bincount(labels).tolist() == [
        sum(e.subcategory == s for e in held) for s in emoji.HOLDOUT]
    images = split.queries.features["image"]
    for i in (0, 50, 143):
        np.testing.assert_array_equal(images[i], emoji.read_images()[held[i].index])
    assert split.class_names == ("a mammal", "a bird", "a sea animal", "a fruit",
                                 "a vegetable")
    assert split.caption(2) == emoji.EMOJI_TEMPLATES[0].format("a sea animal")
    assert split.support is split.queries
    shots = split.shots(7, 8, seed=0)
    assert 7 not in shots and len(set(shots)) == 8 and shots == split.shots(7, 8, seed=0)
    other = emoji_interleaved.heldout_groups(
        ("food-fruit", "animal-reptile"), [{"image": emoji.read_images()[e.index]}
                                           for e in held_out_emoji(("food-fruit",
                                                                    "animal-reptile"))])
    assert other.class_names == ("a fruit", "a reptile")
    reptile = [e for e in emoji.read_table() if e.subcategory == "animal-reptile"]
    assert int((np.asarray(other.queries.features["label"]) == 1).sum()) == len(reptile)


@pytest.mark.parametrize("overrides,message", [
    (dict(seq_length=1), "data.seq_length must be an integer >= 2, got 1"),
    (dict(max_images=0), "data.max_images must be an integer >= 1, got 0"),
    (dict(template_probability=1.5), "template_probability must be in \\[0, 1\\]"),
    (dict(holdout_subcategories=("animal-mammal", "animal-unicorn")),
     "unknown emoji subcategories \\['animal-unicorn'\\]"),
])
def test_bad_config_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        emoji_interleaved.check_config(config(**overrides))
    with pytest.raises(ValueError, match=message):
        emoji_interleaved.build(config(**overrides), workdir=None)


def test_tokenizer_workdir_must_hold_a_tokenizer(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="is not a language-model run: no assets/"):
        emoji_interleaved.build(config(tokenizer_workdir=str(tmp_path / "run")), workdir=None)
    with pytest.raises(ValueError, match="is not a language-model run"):
        emoji_interleaved.build(config(tokenizer_workdir=str(tmp_path / "missing")),
                                workdir=str(tmp_path / "flamingo"))
    assert not (tmp_path / "flamingo").exists()
    (tmp_path / "run" / "assets").mkdir()
    with pytest.raises(ValueError, match="cannot read the tokenizer of data.tokenizer_workdir"):
        emoji_interleaved.build(config(tokenizer_workdir=str(tmp_path / "run")), workdir=None)


def test_tokenizer_without_the_special_symbols_is_refused(tmp_path):
    plain = tokenizers.SentencePieceTokenizer.train("an emoji of a cat\na dog\n" * 10, 280)
    (tmp_path / "assets").mkdir()
    plain.save(tmp_path / "assets" / tokenizers.BPE_FILENAME)
    with pytest.raises(ValueError, match="no id of its own for '<image>'"):
        emoji_interleaved.build(config(tokenizer_workdir=str(tmp_path), vocab_size=280),
                                workdir=None)


def test_tokenizer_is_copied_into_the_run_and_reused(tmp_path, lm_workdir):
    source = tmp_path / "lm"
    shutil.copytree(lm_workdir, source)
    run = tmp_path / "run"
    first = emoji_interleaved.build(config(tokenizer_workdir=str(source)), workdir=str(run))
    copy = run / "assets" / tokenizers.BPE_FILENAME
    source_file = source / "assets" / tokenizers.BPE_FILENAME
    assert copy.read_bytes() == source_file.read_bytes()
    assert os.listdir(run) == ["assets"]
    # The language model's run changes (retrained): this run keeps reading its own copy.
    lm_run(tmp_path / "other", vocab_size=600)
    shutil.copy(tmp_path / "other" / "assets" / tokenizers.BPE_FILENAME, source_file)
    again = emoji_interleaved.build(config(tokenizer_workdir=str(source)), workdir=str(run))
    assert again.vocab_size == VOCAB and copy.read_bytes() != source_file.read_bytes()
    caption = "an emoji of a grinning face."
    assert again.tokenizer.encode(caption) == first.tokenizer.encode(caption)
    assert (again.media_id, again.end_of_chunk_id) == (first.media_id, first.end_of_chunk_id)
    # Without a run of its own, the source's is read and nothing is written.
    fresh = emoji_interleaved.build(config(tokenizer_workdir=str(source), vocab_size=600),
                                    workdir=None)
    assert fresh.vocab_size == 600


def test_without_a_language_model_run_a_tokenizer_is_trained_and_kept(tmp_path, lm_workdir):
    run = tmp_path / "run"
    data = emoji_interleaved.build(config(), workdir=str(run))
    kept = run / "assets" / tokenizers.BPE_FILENAME
    assert data.vocab_size == VOCAB and kept.is_file()
    # The same books_captions tokenizer the language model's run has.
    assert kept.read_bytes() == (
        tmp_path.joinpath(lm_workdir, "assets", tokenizers.BPE_FILENAME).read_bytes())


def test_spec_matches_the_built_data(data, lm_workdir):
    spec = emoji_interleaved.spec(config(tokenizer_workdir=lm_workdir))
    assert (spec.vocab_size, spec.media_id, spec.end_of_chunk_id) == (
        data.vocab_size, data.media_id, data.end_of_chunk_id)
    assert (spec.seq_length, spec.max_images, spec.image_shape) == (
        data.seq_length, data.max_images, data.image_shape)
