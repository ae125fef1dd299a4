"""The embedded emoji corpus (checked assets, captions, images) and its image-text data:
held-out subcategories, eval splits, Fashion-MNIST, tokenizer, spec and config errors."""

import itertools
import shutil

import ml_collections
import numpy as np
import pytest

from jaxformer import registry
from jaxformer.data import emoji
from jaxformer.data.image_text_pipeline import ImageTextSpec


def config(**overrides):
    return ml_collections.ConfigDict({"name": "emoji", **overrides})


@pytest.fixture(scope="module")
def data():
    return emoji.build(config(), workdir=None)


@pytest.fixture(scope="module")
def emoji_only():
    return emoji.build(config(fashion_mnist=False, holdout_subcategories=["food-fruit"],
                              vocab_size=1024, template_probability=0.0), workdir=None)


def test_corpus_is_read_and_checked():
    table, images = emoji.read_table(), emoji.read_images()
    assert len(table) == len(images) == 1911
    assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
    assert not images.flags.writeable
    by_name = {e.name: e for e in table}
    assert by_name["dog face"].captions == ("dog face", "dog, face, pet")
    assert by_name["red apple"].subcategory == "food-fruit"
    assert by_name["red apple"].codepoints == "1F34E"
    assert len(emoji.subcategories()) == 99 and "animal-mammal" in emoji.subcategories()
    assert all(1 <= len(e.captions) <= 5 for e in table)
    assert len({c.lower() for e in table for c in e.captions}) == sum(
        len(e.captions) for e in table)  # Each caption names one emoji.
    # Emoji are drawn on white: corners white, centres not.
    assert (images[:, 0, 0] == 255).all(axis=-1).mean() > 0.9
    assert (images[:, 16, 16] != 255).any(axis=-1).mean() > 0.9


@pytest.mark.parametrize("name,damage,message", [
    ("emoji.tsv.xz", b"not xz", "corrupt emoji corpus file .*emoji.tsv.xz"),
    ("emoji.png", b"not a png", "corrupt emoji corpus file .*emoji.png"),
    ("emoji.tsv.xz", None, "emoji.tsv.xz is missing; reinstall"),
])
def test_damaged_assets_are_clear_errors(tmp_path, monkeypatch, name, damage, message):
    for asset in ("emoji.tsv.xz", "emoji.png"):
        shutil.copy(emoji.ASSETS / asset, tmp_path / asset)
    if damage is None:
        (tmp_path / name).unlink()
    else:
        (tmp_path / name).write_bytes(damage)
    monkeypatch.setattr(emoji, "TABLE_PATH", tmp_path / "emoji.tsv.xz")
    monkeypatch.setattr(emoji, "SHEET_PATH", tmp_path / "emoji.png")
    emoji.read_table.cache_clear()
    emoji.read_images.cache_clear()
    try:
        with pytest.raises(ValueError, match=message):
            emoji.read_table()
            emoji.read_images()
    finally:
        emoji.read_table.cache_clear()
        emoji.read_images.cache_clear()


def test_other_content_fails_the_sha256(tmp_path, monkeypatch):
    from PIL import Image

    sheet = np.array(Image.open(emoji.SHEET_PATH).convert("RGB"))
    sheet[0, 0] = 0
    Image.fromarray(sheet).save(tmp_path / "emoji.png")
    monkeypatch.setattr(emoji, "SHEET_PATH", tmp_path / "emoji.png")
    emoji.read_images.cache_clear()
    try:
        with pytest.raises(ValueError, match="its content has sha256 .*, expected b4c3"):
            emoji.read_images()
    finally:
        emoji.read_images.cache_clear()


def test_held_out_subcategories_never_train(data):
    table = emoji.read_table()
    held = [e for e in table if e.subcategory in emoji.HOLDOUT]
    assert len(held) == 144
    train_emoji = data.train_source.sources[0]
    assert len(train_emoji) == len(table) - len(held)
    held_captions = {c for e in held for c in e.captions}
    assert not held_captions & {c for group in train_emoji.features["captions"] for c in group}
    # The held-out images are not among the training ones.
    train_images = {image.tobytes() for image in train_emoji.features["image"]}
    assert not any(emoji.read_images()[e.index].tobytes() in train_images for e in held)


def test_emoji_eval_splits(data):
    assert data.eval_splits == ("zeroshot", "retrieval", "fashion_mnist", "fashion_mnist_train")
    held = [e for e in emoji.read_table() if e.subcategory in emoji.HOLDOUT]
    for split in ("zeroshot", "retrieval"):
        assert data.class_names(split) == tuple(e.name for e in held)
        assert data.captions(split) == [list(e.captions) for e in held]
        assert data.templates(split) == emoji.EMOJI_TEMPLATES
    batches = list(data.eval_iter(batch_size=50, num_batches=-1, split="zeroshot"))
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels, list(range(144)) + [-1] * 6)
    decoded = [data.tokenizer.decode(row) for row in batches[0]["text"][:3]]
    assert decoded == [e.name for e in held[:3]]
    assert batches[0]["image"].shape == (50, 32, 32, 3)
    assert data.templates() == emoji.EMOJI_TEMPLATES  # The default split is zeroshot.
    assert all("{}" in t for t in emoji.EMOJI_TEMPLATES + emoji.FASHION_TEMPLATES)


def test_fashion_mnist_splits(data):
    assert data.class_names("fashion_mnist") == emoji.FASHION_CLASS_NAMES
    assert data.templates("fashion_mnist")[0] == "a photo of a {}."
    batch = next(data.eval_iter(batch_size=8, num_batches=1, split="fashion_mnist"))
    assert batch["image"].shape == (8, 32, 32, 3)  # Grayscale, as RGB at the emoji's size.
    np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])
    names = [emoji.FASHION_CLASS_NAMES[y] for y in batch["label"]]
    assert [data.tokenizer.decode(r) for r in batch["text"]] == [
        f"a photo of a {n}." for n in names]
    assert len(data.captions("fashion_mnist")) == 2000
    assert len(data.captions("fashion_mnist_train")) == 10000
    fashion_train = data.train_source.sources[1]
    assert len(fashion_train) == 2000 and not fashion_train.features["wrap"].any()
    assert len(data.train_source) == 1911 - 144 + 2000


def test_training_batches_mix_both_and_draw_captions(data, emoji_only):
    seen = set()
    for batch in itertools.islice(data.train_iter(batch_size=64, seed=0), 8):
        assert batch["image"].shape == (64, 32, 32, 3) and batch["text"].shape == (64, 77)
        assert (batch["text"][:, 0] == 1).all() and ((batch["text"] == 2).sum(1) == 1).all()
        seen.update(data.tokenizer.decode(r) for r in batch["text"])
    assert any(t.startswith("a photo of") for t in seen)
    assert any(t.startswith(("an emoji of", "a ", "an icon of")) and "photo" not in t
               for t in seen)
    # Without templates or Fashion-MNIST, every text is one of the image's own captions;
    # over steps an emoji shows several of them.
    batches = list(itertools.islice(emoji_only.train_iter(batch_size=128, seed=0), 40))
    captions = {c.lower() for e in emoji.read_table() for c in e.captions}
    assert all(emoji_only.tokenizer.decode(row) in captions for row in batches[0]["text"])
    per_image: dict[bytes, set[bytes]] = {}
    for batch in batches:
        for image, row in zip(batch["image"], batch["text"]):
            per_image.setdefault(image.tobytes(), set()).add(row.tobytes())
    assert sum(len(texts) >= 3 for texts in per_image.values()) > 100


def test_same_seed_and_step_same_batch_over_processes(emoji_only):
    whole = list(itertools.islice(emoji_only.train_iter(batch_size=8, seed=3), 3))
    again = list(itertools.islice(emoji_only.train_iter(batch_size=8, seed=3), 3))
    halves = [list(itertools.islice(emoji_only.train_iter(
        batch_size=4, seed=3, process_index=p, process_count=2), 3)) for p in range(2)]
    for step in range(3):
        for key in ("image", "text"):
            np.testing.assert_array_equal(whole[step][key], again[step][key])
            np.testing.assert_array_equal(
                whole[step][key], np.concatenate([halves[0][step][key], halves[1][step][key]]))


def test_tokenizer_is_saved_and_reloaded(tmp_path):
    values = config(fashion_mnist=False, vocab_size=600)
    first = emoji.build(values, workdir=str(tmp_path))
    saved = tmp_path / "assets" / "caption_bpe.json"
    assert saved.exists() and first.vocab_size == first.tokenizer.vocab_size == 600
    second = emoji.build(values, workdir=str(tmp_path))
    assert second.tokenizer.encode("grinning face") == first.tokenizer.encode("grinning face")
    assert saved.read_text() == (tmp_path / "assets" / "caption_bpe.json").read_text()


@pytest.mark.parametrize("values", [{}, {"image_size": 48, "context_length": 32,
                                         "vocab_size": 700, "fashion_mnist": False}])
def test_spec_matches_the_data(tmp_path, values):
    spec = emoji.spec(config(**values, data_dir=str(tmp_path)))
    assert isinstance(spec, ImageTextSpec) and not any(tmp_path.iterdir())
    data = emoji.build(config(**values), workdir=None)
    assert spec.vocab_size == data.vocab_size == data.tokenizer.vocab_size
    assert spec.image_shape == data.image_shape and spec.context_length == data.context_length
    assert (spec.pad_id, spec.bos_id, spec.eot_id) == (data.pad_id, data.bos_id, data.eot_id)
    assert spec.tokenizer.eos_id == data.tokenizer.eos_id == data.eot_id


def test_registered():
    assert "emoji" in registry.available("data")


@pytest.mark.parametrize("values,message", [
    ({"holdout_subcategories": ["animal-mammal", "dinosaurs"]},
     r"unknown emoji subcategories \['dinosaurs'\].*available: face-smiling, "),
    ({"holdout_subcategories": "food-fruit"}, "must be a list of subcategory names"),
    ({"holdout_subcategories": ["animal-amphibian"]}, "hold out 1 of 1911 emoji"),
    ({"vocab_size": 100}, "data.vocab_size must be an integer >= 260"),
    ({"context_length": 2}, "data.context_length must be an integer >= 3"),
    ({"template_probability": 1.5}, r"template_probability must be in \[0, 1\]"),
    ({"fashion_mnist": "yes"}, "data.fashion_mnist must be true or false"),
    ({"fashion_mnist_examples": 0}, "must be -1 .all. or positive"),
    ({"fashion_mnist_examples": 20000}, "Fashion-MNIST .subset. has 10000 training images"),
    ({"fashion_mnist_source": "web"}, "unknown data.fashion_mnist_source 'web'"),
    ({"crop": "zoom"}, "bad image preprocessing"),
    ({"vocab_size": 9000, "fashion_mnist": False}, "support at most .* BPE tokens"),
])
def test_bad_settings(values, message):
    with pytest.raises(ValueError, match=message):
        emoji.build(config(**values), workdir=None)
