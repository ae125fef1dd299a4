"""Interleaved image-text sequences: token rows (shift, weights, padding, cut), training rows of
max_images chunks whose images and captions match, determinism per seed and step, process
shards, exact resume, eval rows, few-shot shots and bad settings."""

import itertools
import json

import numpy as np
import pytest

from jaxformer.data.image_pipeline import ArraySource, Preprocess
from jaxformer.data.image_text_pipeline import EvalSplit
from jaxformer.data.interleaved_pipeline import (
    PAD_ID,
    FewShotSplit,
    InterleavedData,
    sequence_row,
)

MEDIA, END = 2, 3
WORDS = "red green blue apple dog cat face heart star moon sun tree".split()
TEMPLATES = ("an emoji of {}", "a {} icon")
COUNT = 11  # Training examples.


class WordTokenizer:
    """One id per word: 0 padding, 1 unused, 2 `<image>`, 3 `<|endofchunk|>`, then the
    example numbers, the words and the templates' words."""

    def __init__(self):
        words = [str(i) for i in range(COUNT)] + WORDS + ["an", "emoji", "of", "a", "icon"]
        self.ids = {w: i + 4 for i, w in enumerate(words)}
        self.words = {i: w for w, i in self.ids.items()}
        self.words.update({MEDIA: "<image>", END: "<|endofchunk|>"})

    @property
    def vocab_size(self):
        return len(self.ids) + 4

    def encode(self, text):
        return [self.ids[w] for w in text.split()]

    def decode(self, ids):
        return " ".join(self.words[int(i)] for i in ids if i != PAD_ID)


def captions_of(i):
    return tuple(f"{i} {WORDS[(i + k) % len(WORDS)]}" for k in range(3))


def make_data(**options):
    """11 images 8x8 whose pixels hold (example number + 1) * 10 (never zero; the model input
    equals the pixel value), each with 3 captions "<number> <word>"; the odd ones may be put
    in templates. Eval split `test`: the first 5, with their first caption."""
    images = np.repeat((np.arange(COUNT, dtype=np.uint8) + 1) * 10, 64 * 3).reshape(
        COUNT, 8, 8, 3)
    train = ArraySource({"image": images, "captions": [captions_of(i) for i in range(COUNT)],
                         "wrap": np.arange(COUNT) % 2 == 1})
    test = ArraySource({"image": images[:5], "caption": [captions_of(i)[0] for i in range(5)],
                        "label": np.arange(5, dtype=np.int32)})
    preprocess = Preprocess(image_size=8, channels=3, crop="none", flip=False, mean=(0.0,),
                            std=(1 / 255,))
    names = [captions_of(i)[0] for i in range(5)]
    settings = dict(
        train_source=train, tokenizer=WordTokenizer(), media_id=MEDIA, end_of_chunk_id=END,
        eval_sources={"test": EvalSplit.of(test, names, [captions_of(i) for i in range(5)],
                                           TEMPLATES)},
        few_shot_splits={}, preprocess=preprocess, seq_length=32, max_images=3,
        train_templates=TEMPLATES, template_probability=0.5)
    return InterleavedData(**{**settings, **options})


@pytest.fixture(scope="module")
def data():
    return make_data()


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def full_ids(batch, row):
    """The row's seq_length + 1 token ids (inputs, then the last target)."""
    return np.concatenate([batch["inputs"][row], batch["targets"][row, -1:]])


def chunks(ids):
    """The id lists of each chunk (from an `<image>` to the next), padding dropped."""
    starts = list(np.flatnonzero(ids == MEDIA)) + [len(ids)]
    return [[int(i) for i in ids[a:b] if i != PAD_ID] for a, b in zip(starts, starts[1:])]


def forms(number):
    """Every caption example `number` may get in training."""
    return {*captions_of(number), *(t.format(c) for t in TEMPLATES for c in captions_of(number))}


def image_number(image):
    """The example number an image holds (-1: a zero slot)."""
    value = np.rint(image).astype(int)
    assert (value == value.flat[0]).all()
    return value.flat[0] // 10 - 1


def test_sequence_row_shifts_weights_and_pads():
    ids = [MEDIA, 5, 6, END, MEDIA, 7, END]
    row = sequence_row(ids, 10, MEDIA)
    assert row["inputs"].dtype == row["targets"].dtype == np.int32
    assert row["weights"].dtype == np.float32
    np.testing.assert_array_equal(row["inputs"], [MEDIA, 5, 6, END, MEDIA, 7, END, 0, 0, 0])
    np.testing.assert_array_equal(row["targets"], [5, 6, END, MEDIA, 7, END, 0, 0, 0, 0])
    # No weight where the target is `<image>` (position 3) or padding (6 on).
    np.testing.assert_array_equal(row["weights"], [1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    # Exactly seq_length + 1 tokens: every target real.
    row = sequence_row(ids, 6, MEDIA)
    np.testing.assert_array_equal(row["inputs"], ids[:6])
    np.testing.assert_array_equal(row["targets"], ids[1:])
    np.testing.assert_array_equal(row["weights"], [1, 1, 1, 0, 1, 1])
    # Longer: cut at seq_length + 1 tokens.
    row = sequence_row(ids, 4, MEDIA)
    np.testing.assert_array_equal(row["inputs"], [MEDIA, 5, 6, END])
    np.testing.assert_array_equal(row["targets"], [5, 6, END, MEDIA])
    np.testing.assert_array_equal(row["weights"], [1, 1, 1, 0])
    # A real token equal to the padding id still counts; a lone <image> has no target.
    np.testing.assert_array_equal(sequence_row([MEDIA, PAD_ID, END], 3, MEDIA)["weights"],
                                  [1, 1, 0])
    np.testing.assert_array_equal(sequence_row([MEDIA], 3, MEDIA)["weights"], [0, 0, 0])


def test_sequence_of_captions_is_their_chunks(data):
    tok = data.tokenizer
    row = data.sequence(["0 red", "an emoji of 3 cat"])
    expected = [MEDIA, *tok.encode("0 red"), END, MEDIA, *tok.encode("an emoji of 3 cat"), END]
    np.testing.assert_array_equal(row["inputs"][:len(expected)], expected)
    assert not row["inputs"][len(expected):].any()
    assert row["weights"].sum() == len(expected) - 2  # All but the second <image> target.


def test_training_batch_shapes_and_dtypes(data):
    batch = next(data.train_iter(batch_size=5, seed=0))
    assert batch.keys() == {"images", "inputs", "targets", "weights"}
    assert batch["images"].shape == (5, 3, 8, 8, 3) and batch["images"].dtype == np.float32
    for key, dtype in (("inputs", np.int32), ("targets", np.int32), ("weights", np.float32)):
        assert batch[key].shape == (5, 32) and batch[key].dtype == dtype, key
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])


def test_rows_hold_chunks_that_match_their_images(data):
    counts, templated, plain = [], 0, 0
    for batch in take(data.train_iter(batch_size=8, seed=3), 10):
        for row in range(8):
            ids = full_ids(batch, row)
            assert ids[0] == MEDIA  # A row starts with its first image.
            row_chunks = chunks(ids)
            numbers = [image_number(image) for image in batch["images"][row]]
            used = [n for n in numbers if n >= 0]
            # Nothing is cut at seq_length 32: one <image> per non-zero slot, in order, the
            # slots after them zero.
            assert len(row_chunks) == len(used) == 3
            counts.append(len(used))
            for chunk, number in zip(row_chunks, used):
                assert chunk[0] == MEDIA and chunk[-1] == END and END not in chunk[1:-1]
                caption = data.tokenizer.decode(chunk[1:-1])
                if caption in captions_of(number):
                    plain += 1
                else:  # Only odd examples are put in templates.
                    assert number % 2 == 1
                    assert caption in {t.format(c) for t in TEMPLATES
                                       for c in captions_of(number)}
                    templated += 1
            # Weight on every real target but the <image> ones.
            length = sum(len(c) for c in row_chunks)
            assert batch["weights"][row].sum() == length - 1 - (len(row_chunks) - 1)
            assert not batch["weights"][row, length - 1:].any()
            assert not batch["inputs"][row, length:].any()
    assert set(counts) == {3}
    assert templated > 0 and plain > 0


def test_rows_cut_at_seq_length_keep_their_images(data):
    short = make_data(seq_length=6)  # A chunk has 4 to 7 tokens: most rows are cut.
    cut = 0
    for batch in take(short.train_iter(batch_size=8, seed=0), 4):
        for row in range(8):
            ids = full_ids(batch, row)
            used = [n for n in map(image_number, batch["images"][row]) if n >= 0]
            media = int((ids == MEDIA).sum())
            assert 1 <= media <= len(used)
            cut += media < len(used)
            # The chunks that made it (the last perhaps in part) hold their image's caption.
            row_chunks = chunks(ids)
            for k, (chunk, number) in enumerate(zip(row_chunks, used)):
                words = short.tokenizer.decode(chunk[1:]).split()
                last = k == len(row_chunks) - 1
                assert any(form.split() + ["<|endofchunk|>"] == words
                           or (last and form.split()[:len(words)] == words)
                           for form in forms(number)), (number, words)
    assert cut > 0


def test_one_image_per_row_visits_an_epoch_in_each_batch():
    single = make_data(max_images=1)
    for batch in take(single.train_iter(batch_size=COUNT, seed=1), 2):
        numbers = [image_number(image) for image in batch["images"][:, 0]]
        assert sorted(numbers) == list(range(COUNT))
        assert ((batch["inputs"] == MEDIA).sum(axis=1) == 1).all()


def test_same_seed_and_step_same_batch(data):
    first = take(data.train_iter(batch_size=4, seed=7), 4)
    again = take(data.train_iter(batch_size=4, seed=7), 4)
    other = take(data.train_iter(batch_size=4, seed=8), 4)
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(first, other))
    assert not np.array_equal(first[0]["inputs"], first[1]["inputs"])  # Steps differ.


def test_two_processes_split_the_global_batch(data):
    whole = take(data.train_iter(batch_size=6, seed=5), 3)
    shards = [take(data.train_iter(batch_size=3, seed=5, process_index=p, process_count=2), 3)
              for p in range(2)]
    for step, batch in enumerate(whole):
        for key in batch:
            joined = np.concatenate([shards[0][step][key], shards[1][step][key]])
            np.testing.assert_array_equal(joined, batch[key])
    assert not np.array_equal(shards[0][0]["inputs"], shards[1][0]["inputs"])


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
    fresh = take(data.train_iter(batch_size=4, seed=2), 1)[0]
    assert not np.array_equal(fresh["inputs"], expected[0]["inputs"])


def test_eval_rows_are_one_chunk_with_the_canonical_caption(data):
    batches = list(data.eval_iter(batch_size=2, num_batches=-1))
    assert len(batches) == 3
    assert batches[0].keys() == {"images", "inputs", "targets", "weights"}
    assert batches[0]["images"].shape == (2, 1, 8, 8, 3)
    assert batches[0]["inputs"].shape == (2, 32)
    rows = [(b, r) for b in batches for r in range(2)]
    for i, (batch, row) in enumerate(rows[:5]):
        ids = full_ids(batch, row)
        tokens = [MEDIA, *data.tokenizer.encode(captions_of(i)[0]), END]
        np.testing.assert_array_equal(ids[:4], tokens)
        assert not ids[4:].any()
        np.testing.assert_array_equal(batch["weights"][row], [1, 1, 1] + [0] * 29)
        assert image_number(batch["images"][row, 0]) == i
    padding, row = rows[5]
    for key in ("images", "inputs", "targets", "weights"):
        assert not padding[key][row].any(), key
    assert sum(b["weights"].sum() for b in batches) == 5 * 3
    assert len(list(data.eval_iter(batch_size=2, num_batches=1))) == 1
    shards = [list(data.eval_iter(batch_size=1, num_batches=-1, process_index=p,
                                  process_count=2)) for p in range(2)]
    joined = np.concatenate([np.concatenate([a["inputs"], b["inputs"]])
                             for a, b in zip(*shards)])
    np.testing.assert_array_equal(joined, np.concatenate([b["inputs"] for b in batches]))


def few_shot_split(support=None):
    queries = ArraySource({"label": np.arange(6) % 3})
    return FewShotSplit(queries, queries if support is None else support,
                        ("a red", "a dog", "a star"), "an emoji of {}.")


def test_few_shot_shots_exclude_the_query_and_are_deterministic():
    split = few_shot_split()
    for query in range(6):
        for seed in range(5):
            shots = split.shots(query, 4, seed)
            assert len(shots) == len(set(shots)) == 4 and query not in shots
            assert all(0 <= s < 6 for s in shots)
            assert split.shots(query, 4, seed) == shots
    assert sorted(split.shots(2, 5, 0)) == [0, 1, 3, 4, 5]  # All but the query.
    assert len({tuple(split.shots(0, 3, seed)) for seed in range(10)}) > 1
    assert split.caption(1) == "an emoji of a dog."
    with pytest.raises(ValueError, match="6 shots but 5 support examples"):
        split.shots(0, 6, 0)
    # A separate support set: every support example may be shown, whatever the query's index.
    other = few_shot_split(support=ArraySource({"label": np.arange(4) % 3}))
    assert sorted(other.shots(2, 4, 0)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="5 shots but 4 support examples"):
        other.shots(0, 5, 0)


def test_bad_settings(data):
    with pytest.raises(ValueError, match="seq_length must be at least 2, got 1"):
        make_data(seq_length=1)
    with pytest.raises(ValueError, match="max_images must be positive, got 0"):
        make_data(max_images=0)
    with pytest.raises(ValueError, match="no eval split"):
        make_data(eval_sources={})
    with pytest.raises(ValueError, match="the train split is empty"):
        make_data(train_source=ArraySource({"image": np.zeros((0, 8, 8, 3), np.uint8)}))
    with pytest.raises(ValueError, match="unknown split 'val'; available: test"):
        data.split("val")
    assert data.eval_splits == ("test",) and data.vocab_size == 4 + COUNT + len(WORDS) + 5
