"""Image-text pipeline: token rows, the caption BPE (determinism, saving, special ids), caption
and template draws, determinism per seed and step, process shards, exact resume, eval
padding and splits."""

import itertools
import json
import re

import numpy as np
import pytest

from jaxformer.data import caption_bpe
from jaxformer.data.caption_bpe import CaptionTokenizer
from jaxformer.data.image_pipeline import ArraySource, Preprocess
from jaxformer.data.image_text_pipeline import (
    ChooseCaption,
    Concat,
    EvalSplit,
    ImageTextData,
)
from jaxformer.data.transforms import Draws

WORDS = "red green blue apple dog cat face heart star moon sun tree".split()
TEMPLATES = ("an emoji of {}.", "a {} icon.")


def take(iterator, n):
    return list(itertools.islice(iterator, n))


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"{a} {b}" for a in WORDS for b in WORDS] + [t.format("") for t in TEMPLATES]
    return CaptionTokenizer.train(texts, 300)


@pytest.fixture(scope="module")
def data(tokenizer):
    """11 images 8x8 whose pixels hold the example's number, each with 3 captions
    "<number> <word> ..." (so a row shows its image and caption); the odd ones may be put in
    templates."""
    count = 11
    images = np.repeat(np.arange(count, dtype=np.uint8) * 10, 64 * 3).reshape(count, 8, 8, 3)
    captions = [tuple(f"{i} {WORDS[(i + k) % len(WORDS)]}" for k in range(3))
                for i in range(count)]
    train = ArraySource({"image": images, "captions": captions,
                         "wrap": np.arange(count) % 2 == 1})
    test = ArraySource({"image": images[:5], "caption": [c[0] for c in captions[:5]],
                        "label": np.arange(5, dtype=np.int32)})
    names = [c[0] for c in captions[:5]]
    preprocess = Preprocess(image_size=8, channels=3, crop="pad", crop_padding=2, flip=True,
                            mean=(0.0,), std=(1 / 255,))  # Normalised value = pixel value.
    return ImageTextData(
        train_source=train, tokenizer=tokenizer, preprocess=preprocess, context_length=16,
        eval_sources={"test": EvalSplit.of(test, names, captions[:5], TEMPLATES)},
        train_templates=TEMPLATES, template_probability=0.5)


def texts(data, batch):
    return [data.tokenizer.decode(row) for row in batch["text"]]


def number(text):
    """The example number a caption holds."""
    return int(re.search(r"\d+", text).group())


def test_token_rows_start_end_and_zero_padding(tokenizer):
    rows = caption_bpe.token_rows(tokenizer, ["red dog", "", " ".join(WORDS * 3)], 8)
    assert rows.dtype == np.int32 and rows.shape == (3, 8)
    ids = tokenizer.encode("red dog")
    np.testing.assert_array_equal(rows[0, :len(ids) + 2], [1, *ids, 2])
    assert not rows[0, len(ids) + 2:].any()
    np.testing.assert_array_equal(rows[1], [1, 2, 0, 0, 0, 0, 0, 0])
    assert rows[2, 0] == 1 and rows[2, -1] == 2 and 0 not in rows[2]  # Cut, the end kept.
    assert (rows[:, 1:] != 1).all() and (rows == 2).sum(axis=1).tolist() == [1, 1, 1]


def test_tokenizer_lowercases_round_trips_and_keeps_specials_out_of_text(tokenizer):
    assert tokenizer.vocab_size == 300
    assert tokenizer.encode("Red DOG") == tokenizer.encode("red dog")
    assert tokenizer.decode([1, *tokenizer.encode("a green star"), 2, 0, 0]) == "a green star"
    ids = tokenizer.encode("<|endoftext|><pad>")
    assert min(ids) > 2


def test_tokenizer_training_is_deterministic_saved_and_sized(tmp_path, tokenizer):
    texts = [f"{a} {b}" for a in WORDS for b in WORDS] + [t.format("") for t in TEMPLATES]
    path, again = tmp_path / "bpe.json", tmp_path / "again.json"
    tokenizer.save(path)
    CaptionTokenizer.train(texts, 300).save(again)
    assert path.read_text() == again.read_text()
    assert CaptionTokenizer.load(path).encode("blue moon") == tokenizer.encode("blue moon")
    with pytest.raises(ValueError, match="support at most .* tokens; lower data.vocab_size"):
        CaptionTokenizer.train(["a b"], 400)
    with pytest.raises(ValueError, match="at least 260"):
        CaptionTokenizer.train(texts, 100)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read caption tokenizer"):
        CaptionTokenizer.load(tmp_path / "bad.json")


def test_tokenizer_is_kept_in_the_workdir_assets(tmp_path):
    calls = []

    def texts():
        calls.append(1)
        return [f"{a} {b}" for a in WORDS for b in WORDS]

    first = caption_bpe.tokenizer_for_workdir(str(tmp_path), texts, 280)
    assert (tmp_path / caption_bpe.ASSET_NAME).exists()
    second = caption_bpe.tokenizer_for_workdir(str(tmp_path), texts, 280)
    assert len(calls) == 1 and second.encode("sun tree") == first.encode("sun tree")
    with pytest.raises(ValueError, match="has 280 tokens, but data.vocab_size is 290"):
        caption_bpe.tokenizer_for_workdir(str(tmp_path), texts, 290)


def test_choose_caption_draws_caption_and_template():
    choose = ChooseCaption(TEMPLATES, 0.5)
    features = {"captions": ("a", "b", "c"), "wrap": True, "image": 0}

    def caption(*uniforms):
        return choose(features, Draws(np.array(uniforms)))["caption"]

    assert caption(0.0, 0.9, 0.0) == "a" and caption(0.5, 0.9, 0.0) == "b"
    assert caption(0.99, 0.1, 0.0) == "an emoji of c." and caption(0.0, 0.1, 0.7) == "a a icon."
    assert ChooseCaption(TEMPLATES, 0.5)({**features, "wrap": False},
                                         Draws(np.array([0.0, 0.1, 0.0])))["caption"] == "a"
    assert choose(features, Draws(np.zeros(3))).keys() == {"image", "caption"}


def test_batches_pair_images_with_their_captions(data):
    batch = take(data.train_iter(batch_size=11, seed=0), 1)[0]
    assert batch.keys() == {"image", "text"}
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (11, 8, 8, 3)
    assert batch["text"].dtype == np.int32 and batch["text"].shape == (11, 16)
    numbers = [number(t) for t in texts(data, batch)]
    assert sorted(numbers) == list(range(11))  # One epoch: every image, with its own caption.
    np.testing.assert_array_equal(batch["image"].max(axis=(1, 2, 3)), np.array(numbers) * 10)


def test_caption_sampling_covers_every_caption_and_the_templates(data):
    seen = {}
    for batch in take(data.train_iter(batch_size=11, seed=1), 30):
        for text in texts(data, batch):
            seen.setdefault(text, 0)
            seen[text] += 1
    for i in range(11):
        for k in range(3):
            assert f"{i} {WORDS[(i + k) % len(WORDS)]}" in seen
    wrapped = [t for t in seen if t.startswith(("an emoji of", "a "))]
    assert {t.split()[0] for t in wrapped} == {"an", "a"}  # Both templates.
    assert all(number(t) % 2 == 1 for t in wrapped)  # Only examples with `wrap`.
    assert 0.3 < sum(seen[t] for t in wrapped) / (30 * 11 / 2) < 0.7


def test_same_seed_and_step_same_batch(data):
    first = take(data.train_iter(batch_size=4, seed=7), 5)
    again = take(data.train_iter(batch_size=4, seed=7), 5)
    other = take(data.train_iter(batch_size=4, seed=8), 5)
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a["text"], b["text"]) for a, b in zip(first, other))


def test_processes_take_blocks_of_the_global_batch(data):
    whole = take(data.train_iter(batch_size=6, seed=5), 3)
    shards = [take(data.train_iter(batch_size=3, seed=5, process_index=p, process_count=2), 3)
              for p in range(2)]
    for step, batch in enumerate(whole):
        for key in ("image", "text"):
            joined = np.concatenate([shards[0][step][key], shards[1][step][key]])
            np.testing.assert_array_equal(joined, batch[key])


def test_resume_from_saved_state_is_exact(data):
    iterator = data.train_iter(batch_size=4, seed=2)
    take(iterator, 3)
    state = json.loads(json.dumps(iterator.get_state()))  # As a checkpoint stores it.
    expected = take(iterator, 3)
    resumed = data.train_iter(batch_size=4, seed=2)
    resumed.set_state(state)
    for a, b in zip(take(resumed, 3), expected, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_eval_reads_in_order_with_canonical_captions_and_padding(data):
    batches = list(data.eval_iter(batch_size=2, num_batches=-1))
    assert len(batches) == 3 and batches[0].keys() == {"image", "text", "label"}
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 4, -1])
    assert labels.dtype == np.int32
    assert [texts(data, b) for b in batches][:2] == [["0 red", "1 green"], ["2 blue", "3 apple"]]
    assert not batches[-1]["text"][1].any() and not batches[-1]["image"][1].any()
    np.testing.assert_array_equal(batches[0]["image"][1], 10.0)  # The central view.
    shards = [list(data.eval_iter(batch_size=1, num_batches=-1, process_index=p,
                                  process_count=2)) for p in range(2)]
    np.testing.assert_array_equal(
        np.concatenate([[a["label"][0], b["label"][0]] for a, b in zip(*shards)]), labels)


def test_split_descriptions(data):
    assert data.eval_splits == ("test",)
    assert data.class_names() == data.class_names("test") == tuple(
        f"{i} {WORDS[i]}" for i in range(5))
    assert data.captions("test")[4] == ["4 dog", "4 cat", "4 face"]
    assert data.templates() == TEMPLATES
    assert (data.pad_id, data.bos_id, data.eot_id, data.vocab_size) == (0, 1, 2, 300)
    assert data.tokenize(["0 red"]).shape == (1, 16)
    with pytest.raises(ValueError, match="unknown split 'val'; available: test"):
        data.captions("val")


def test_eval_split_descriptions_are_read_once_when_asked_for():
    calls = []

    def describe():
        calls.append(1)
        return ("a", "b"), [["a"], ["b", "bb"]]

    split = EvalSplit(ArraySource({"label": np.arange(2)}), ("{}",), describe)
    assert not calls
    assert split.class_names == ("a", "b") and split.captions[1] == ["b", "bb"]
    assert len(calls) == 1


def test_concat_reads_sources_one_after_another():
    source = Concat([ArraySource({"x": np.arange(3)}), ArraySource({"x": np.zeros(0)}),
                     ArraySource({"x": np.arange(10, 12)})])
    assert len(source) == 5 and [source[i]["x"] for i in range(5)] == [0, 1, 2, 10, 11]
    with pytest.raises(IndexError):
        source[5]


def test_bad_settings(data, tokenizer):
    with pytest.raises(ValueError, match="context_length must be at least 3"):
        ImageTextData(train_source=data.train_source, eval_sources=data.eval_sources,
                      tokenizer=tokenizer, preprocess=data.preprocess, context_length=2)
    with pytest.raises(ValueError, match="template 'emoji' has no"):
        ImageTextData(train_source=data.train_source, eval_sources=data.eval_sources,
                      tokenizer=tokenizer, preprocess=data.preprocess,
                      train_templates=("emoji",))
