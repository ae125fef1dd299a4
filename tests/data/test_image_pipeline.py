"""Image pipeline: determinism, exact resume, process shards, eval padding and splits, features
of any name, and the tfds-backed data sets (CIFAR-10, ImageNet) on tfds' mock examples."""

import hashlib
import itertools

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer.data import cifar10, common, imagenet2012, transforms
from jaxformer.data.image_pipeline import ArraySource, ImageData, Preprocess
from jaxformer.data.transforms import Draws
from jaxformer.errors import UserError


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def assert_same(first, second):
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


@pytest.fixture(scope="module")
def numbered():
    """13 images 8x8 whose pixels all hold the example's number (so a batch shows which
    examples it holds), with labels number % 5."""
    images = np.repeat(np.arange(13, dtype=np.uint8) * 10, 64).reshape(13, 8, 8, 1)
    return ArraySource({"image": images, "label": np.arange(13) % 5})


def numbered_data(source, crop="none", flip=False, read_threads=0, **kwargs):
    preprocess = Preprocess(image_size=8, channels=1, crop=crop, crop_padding=2, flip=flip,
                            mean=(0.0,), std=(1 / 255,))  # Normalised value = pixel value.
    return ImageData(train_source=source, eval_sources={"test": source},
                     class_names=tuple("abcde"), preprocess=preprocess,
                     read_threads=read_threads, **kwargs)


def example_ids(batch):
    return np.round(batch["image"][:, 0, 0, 0] / 10).astype(int)


def test_epochs_visit_every_example_once_in_a_new_order(numbered):
    data = numbered_data(numbered)
    batches = take(data.train_iter(batch_size=13, seed=3), 3)
    epochs = [example_ids(b) for b in batches]
    for ids, batch in zip(epochs, batches):
        assert sorted(ids) == list(range(13))
        np.testing.assert_array_equal(batch["label"], ids % 5)
        assert batch["label"].dtype == np.int32 and batch["image"].dtype == np.float32
    assert not np.array_equal(epochs[0], epochs[1])
    # Batches that straddle epochs: positions 0..25 are epochs 0 and 1 in order.
    straddling = take(data.train_iter(batch_size=5, seed=3), 5)
    stream = np.concatenate([example_ids(b) for b in straddling])
    np.testing.assert_array_equal(stream[:13], epochs[0])
    np.testing.assert_array_equal(stream[13:25], epochs[1][:12])


def test_same_seed_same_batches_other_seed_other_batches(numbered):
    data = numbered_data(numbered, crop="pad", flip=True)
    first = take(data.train_iter(batch_size=4, seed=7), 6)
    assert_same(first, take(data.train_iter(batch_size=4, seed=7), 6))
    other = take(data.train_iter(batch_size=4, seed=8), 6)
    assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(first, other))


@pytest.mark.parametrize("read_threads", [0, 2])
def test_resume_from_saved_state_is_exact(numbered, read_threads):
    data = numbered_data(numbered, crop="pad", flip=True, read_threads=read_threads)
    iterator = data.train_iter(batch_size=4, seed=1)
    take(iterator, 3)
    state = iterator.get_state()
    expected = take(iterator, 4)
    resumed = data.train_iter(batch_size=4, seed=1)
    resumed.set_state(state)
    assert_same(take(resumed, 4), expected)


def test_processes_take_blocks_of_the_global_batch(numbered):
    data = numbered_data(numbered, crop="pad", flip=True)
    whole = take(data.train_iter(batch_size=6, seed=5), 4)
    shards = [take(data.train_iter(batch_size=3, seed=5, process_index=p, process_count=2), 4)
              for p in range(2)]
    for step, batch in enumerate(whole):
        for key in ("image", "label"):
            joined = np.concatenate([shards[0][step][key], shards[1][step][key]])
            np.testing.assert_array_equal(joined, batch[key])
    with pytest.raises(ValueError, match="process_index 2"):
        data.train_iter(batch_size=3, seed=5, process_index=2, process_count=2)


def test_eval_reads_the_split_once_and_pads_the_last_batch(numbered):
    data = numbered_data(numbered, crop="pad", flip=True)  # Eval ignores augmentation.
    batches = list(data.eval_iter(batch_size=5, num_batches=-1))
    assert len(batches) == 3
    ids = np.concatenate([example_ids(b) for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(ids[:13], np.arange(13))
    np.testing.assert_array_equal(labels, list(np.arange(13) % 5) + [-1, -1])
    np.testing.assert_array_equal(batches[-1]["image"][3:], 0.0)
    assert_same(batches, list(data.eval_iter(batch_size=5, num_batches=-1)))
    assert len(list(data.eval_iter(batch_size=5, num_batches=2))) == 2
    assert len(list(data.eval_iter(batch_size=5, num_batches=10))) == 3  # The split, once.
    assert list(data.eval_iter(batch_size=5, num_batches=0)) == []
    with pytest.raises(ValueError, match="num_batches"):
        data.eval_iter(batch_size=5, num_batches=-2)


def test_eval_shards_over_processes_with_the_same_number_of_batches(numbered):
    data = numbered_data(numbered)
    shards = [list(data.eval_iter(batch_size=3, num_batches=-1, process_index=p,
                                  process_count=2)) for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3  # ceil(13 / 6): collectives stay in step.
    labels = np.concatenate([np.concatenate([shards[0][i]["label"], shards[1][i]["label"]])
                             for i in range(3)])
    np.testing.assert_array_equal(labels, list(np.arange(13) % 5) + [-1] * 5)
    np.testing.assert_array_equal(shards[1][2]["label"], [-1, -1, -1])  # All padding.


def test_normalisation():
    preprocess = Preprocess(image_size=2, channels=3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    pixels = np.array([[[0, 255, 51]]], np.uint8)
    np.testing.assert_allclose(preprocess.normalize(pixels), [[[-1.0, 1.0, -0.6]]], atol=1e-6)
    per_channel = Preprocess(image_size=2, channels=3, mean=(0.1, 0.2, 0.3), std=(1, 2, 4))
    np.testing.assert_allclose(per_channel.normalize(np.full((1, 1, 3), 255, np.uint8)),
                               [[[0.9, 0.4, 0.175]]], atol=1e-6)


def digest(batches):
    hashed = hashlib.sha256()
    for batch in batches:
        hashed.update(batch["image"].tobytes())
        hashed.update(batch["label"].tobytes())
    return hashed.hexdigest()[:16]


def test_batches_are_those_of_earlier_versions():
    """Digests of batches made by the pipeline before it worked on feature dicts: the same
    examples, in the same order, with the same random crops and flips."""
    rng = np.random.default_rng(1)
    source = ArraySource({"image": rng.integers(0, 256, size=(29, 24, 24, 3), dtype=np.uint8),
                          "label": rng.integers(0, 7, size=29)})
    preprocess = Preprocess(image_size=24, channels=3, crop="pad", crop_padding=4, flip=True,
                            mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    data = ImageData(train_source=source, eval_sources={"test": source},
                     class_names=tuple("abcdefg"), preprocess=preprocess)
    assert digest(take(data.train_iter(batch_size=6, seed=11), 3)) == "d4025716dfbfd6c6"
    assert digest(data.eval_iter(batch_size=4, num_batches=-1, process_index=1,
                                 process_count=2)) == "a4a8e0afd0847e9c"


def test_train_transforms_and_their_draws():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    preprocess = Preprocess(image_size=4, channels=1, crop="none", flip=True,
                            mean=(0.0,), std=(1 / 255,))
    steps = preprocess.train_transforms()
    kept = steps({"image": image}, Draws(np.array([0.7])))["image"]
    flipped = steps({"image": image}, Draws(np.array([0.2])))["image"]
    np.testing.assert_allclose(kept, image, atol=1e-4)
    np.testing.assert_allclose(flipped, image[:, ::-1], atol=1e-4)
    budgets = {crop: Preprocess(image_size=4, channels=1, crop=crop).train_transforms().num_draws
               for crop in ("none", "pad", "inception")}
    assert budgets == {"none": 1, "pad": 3, "inception": 23}  # The crop's, then the flip's.


def test_crops_do_not_depend_on_flips(numbered):
    """The flip's draw is reserved without flips: turning them on only mirrors some rows."""
    plain = take(numbered_data(numbered, crop="pad").train_iter(batch_size=13, seed=2), 2)
    flips = take(numbered_data(numbered, crop="pad", flip=True).train_iter(batch_size=13, seed=2),
                 2)
    mirrored = 0
    for a, b in zip(plain, flips, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
        for x, y in zip(a["image"], b["image"], strict=True):
            same = np.array_equal(x, y)
            assert same or np.array_equal(x[:, ::-1], y)
            mirrored += not same
    assert mirrored > 0


def test_eval_view_is_the_central_crop_of_the_resized_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(60, 90, 3), dtype=np.uint8)
    preprocess = Preprocess(image_size=32, channels=3, resize_size=36)
    expected = transforms.center_crop(transforms.resize_shorter(image, 36), 32)
    np.testing.assert_array_equal(preprocess.eval_view(image), expected)
    evaluated = preprocess.eval_transforms()({"image": image}, transforms.no_draws())["image"]
    np.testing.assert_array_equal(evaluated, preprocess.normalize(expected))


def test_preprocess_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown crop"):
        Preprocess(image_size=8, channels=1, crop="random")
    with pytest.raises(ValueError, match="resize_size"):
        Preprocess(image_size=8, channels=1, resize_size=4)
    with pytest.raises(ValueError, match="std"):
        Preprocess(image_size=8, channels=1, std=(0.0,))
    with pytest.raises(ValueError, match="crop_padding"):
        Preprocess(image_size=8, channels=1, crop="pad", crop_padding=-1)


# Features and splits.

def test_features_of_any_name_ride_along(numbered):
    ids = np.arange(13) * 100
    tokens = np.arange(13 * 3).reshape(13, 3)
    source = ArraySource({**numbered.features, "id": ids, "tokens": tokens,
                          "file_name": np.array([b"x"] * 13)})
    data = numbered_data(source, flip=True, features=("image", "label", "id", "tokens"))
    batch = next(data.train_iter(batch_size=5, seed=0))
    assert set(batch) == {"image", "label", "id", "tokens"}  # file_name is not read.
    rows = example_ids(batch)
    np.testing.assert_array_equal(batch["id"], ids[rows])
    np.testing.assert_array_equal(batch["tokens"], tokens[rows])
    evaluation = list(data.eval_iter(batch_size=5, num_batches=-1))
    np.testing.assert_array_equal(evaluation[-1]["id"], [1000, 1100, 1200, 0, 0])
    np.testing.assert_array_equal(evaluation[-1]["tokens"][3:], 0)
    np.testing.assert_array_equal(evaluation[-1]["label"], [0, 1, 2, -1, -1])
    unlabelled = numbered_data(source, features=("image", "id"))
    assert set(next(unlabelled.train_iter(batch_size=2, seed=0))) == {"image", "id"}


def test_labels_outside_the_classes_are_errors(numbered):
    source = ArraySource({"image": numbered.features["image"], "label": np.arange(13)})
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\), got 5"):
        list(numbered_data(source).eval_iter(batch_size=13, num_batches=-1))


def test_eval_splits(numbered):
    first_six = ArraySource({key: values[:6] for key, values in numbered.features.items()})
    data = ImageData(train_source=numbered, eval_sources={"test": numbered, "minival": first_six},
                     class_names=tuple("abcde"), preprocess=numbered_data(numbered).preprocess)
    assert data.eval_splits == ("test", "minival")
    default = list(data.eval_iter(batch_size=4, num_batches=-1))
    assert_same(default, list(data.eval_iter(batch_size=4, num_batches=-1, split="test")))
    assert len(default) == 4
    minival = list(data.eval_iter(batch_size=4, num_batches=-1, split="minival"))
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in minival]),
                                  [0, 1, 2, 3, 4, 0, -1, -1])
    with pytest.raises(ValueError, match="unknown split 'train'; available: test, minival"):
        data.eval_iter(batch_size=4, num_batches=1, split="train")
    empty = ArraySource({key: values[:0] for key, values in numbered.features.items()})
    with pytest.raises(ValueError, match="the minival split is empty"):
        ImageData(train_source=numbered, eval_sources={"minival": empty},
                  class_names=tuple("abcde"), preprocess=data.preprocess)


def test_array_source_checks_lengths():
    with pytest.raises(ValueError, match="different lengths"):
        ArraySource({"image": np.zeros((3, 2, 2, 1), np.uint8), "label": np.zeros(4)})


def tfds_config(**overrides):
    return ml_collections.ConfigDict({"data_dir": "", "crop": "inception", "flip": True,
                                      "resize_size": 0, "mean": (0.5,) * 3, "std": (0.5,) * 3,
                                      **overrides})


@pytest.mark.parametrize("module,classes,size,first_name,eval_split", [
    (cifar10, 10, 32, "airplane", "test"), (imagenet2012, 1000, 224, "n01440764", "validation")])
def test_tfds_data_sets_on_mock_examples(module, classes, size, first_name, eval_split):
    with tfds.testing.mock_data(num_examples=7):
        data = module.build(tfds_config(), workdir=None)
        assert data.num_classes == classes and data.class_names[0] == first_name
        assert data.image_shape == (size, size, 3)
        assert data.eval_splits == (eval_split,)
        batch = next(data.train_iter(batch_size=3, seed=0))
        assert batch.keys() == {"image", "label"}  # Not tfds's ids or file names.
        assert batch["image"].shape == (3, size, size, 3)
        assert np.all((0 <= batch["label"]) & (batch["label"] < classes))
        assert np.abs(batch["image"]).max() <= 1.0
        evaluation = list(data.eval_iter(batch_size=3, num_batches=-1))
        assert [len(b["label"]) for b in evaluation] == [3, 3, 3]
        np.testing.assert_array_equal(evaluation[-1]["label"][1:], [-1, -1])


@pytest.mark.parametrize("module,name", [(cifar10, "cifar10"), (imagenet2012, "imagenet2012")])
def test_tfds_data_sets_not_prepared_build_and_fail_when_read(tmp_path, module, name):
    """Built without the files (a model then classifies single images); reading a split is
    one line, as is the trainer's opening of every split before it writes anything."""
    data = module.build(tfds_config(data_dir=str(tmp_path)), workdir=None)
    assert data.num_classes in (10, 1000) and not any(tmp_path.iterdir())
    for read in (lambda: data.train_iter(batch_size=1, seed=0),
                 lambda: data.eval_iter(batch_size=1, num_batches=1),
                 lambda: common.open_lazy_sources(data)):
        with pytest.raises(UserError, match=f"cannot read {name}.*tfds build {name}") as error:
            read()
        assert "\n" not in str(error.value)


def test_tfds_eval_split_is_the_configured_one():
    with tfds.testing.mock_data(num_examples=7):
        data = cifar10.build(tfds_config(eval_split="train"), workdir=None)
        assert data.eval_splits == ("train",)
        with pytest.raises(ValueError, match="unknown split 'test'; available: train"):
            data.eval_iter(batch_size=3, num_batches=1, split="test")
