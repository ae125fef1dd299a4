"""Image pipeline: per-image operations, determinism, exact resume, process shards, eval padding,
and the tfds-backed data sets (CIFAR-10, ImageNet) on tfds' mock examples."""

import io
import itertools

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxformer.data import cifar10, image_pipeline, imagenet2012
from jaxformer.data.image_pipeline import ArraySource, Draws, ImageData, Preprocess


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
    return ArraySource(images, np.arange(13) % 5)


def numbered_data(source, crop="none", flip=False, read_threads=0):
    preprocess = Preprocess(image_size=8, channels=1, crop=crop, crop_padding=2, flip=flip,
                            mean=(0.0,), std=(1 / 255,))  # Normalised value = pixel value.
    return ImageData(train_source=source, eval_source=source,
                     class_names=tuple("abcde"), preprocess=preprocess,
                     read_threads=read_threads)


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


def test_pad_and_random_crop_matches_numpy_pad():
    image = np.arange(5 * 5 * 2, dtype=np.uint8).reshape(5, 5, 2)
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
    for top in range(5):
        for left in range(5):
            # Draws mapping to offsets (top, left) in [0, 5): u = (offset + 0.5) / 5.
            draws = Draws(np.array([(top + 0.5) / 5, (left + 0.5) / 5]))
            crop = image_pipeline.pad_and_random_crop(image, 5, 2, draws)
            np.testing.assert_array_equal(crop, padded[top:top + 5, left:left + 5])


def test_draws_are_budgeted():
    draws = Draws(np.array([0.25, 0.999]))
    assert draws.integers(4) == 1 and draws.integers(3) == 2
    with pytest.raises(RuntimeError, match="declared"):
        draws.random()


def test_train_views_and_flip():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    preprocess = Preprocess(image_size=4, channels=1, crop="none", flip=True)
    kept = preprocess.train_view(image, Draws(np.array([0.7])))
    flipped = preprocess.train_view(image, Draws(np.array([0.2])))
    np.testing.assert_array_equal(kept, image)
    np.testing.assert_array_equal(flipped, image[:, ::-1])


def test_inception_crop_and_center_crop_shapes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(60, 90, 3), dtype=np.uint8)
    preprocess = Preprocess(image_size=32, channels=3, crop="inception", flip=True,
                            resize_size=36)
    for _ in range(5):
        view = preprocess.train_view(image, Draws(rng.random(preprocess.num_draws)))
        assert view.shape == (32, 32, 3) and view.dtype == np.uint8
    # Evaluation: shorter side 60 -> 36 (90 -> 54), then the central 32 x 32.
    assert image_pipeline.resize_shorter(image, 36).shape == (36, 54, 3)
    view = preprocess.eval_view(image)
    expected = image_pipeline.center_crop(image_pipeline.resize_shorter(image, 36), 32)
    np.testing.assert_array_equal(view, expected)
    np.testing.assert_array_equal(image_pipeline.center_crop(image, 30), image[15:45, 30:60])


def test_decode_encoded_images_and_channels():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    np.testing.assert_array_equal(image_pipeline.decode(buffer.getvalue(), 3), rgb)
    gray = image_pipeline.decode(rgb[:, :, 0], 3)
    assert gray.shape == (5, 7, 3) and np.array_equal(gray[:, :, 2], rgb[:, :, 0])
    assert image_pipeline.decode(rgb, 1).shape == (5, 7, 1)
    with pytest.raises(ValueError, match="cannot decode"):
        image_pipeline.decode(b"not an image", 3)
    with pytest.raises(ValueError, match="uint8"):
        image_pipeline.decode(rgb.astype(np.float32), 3)


def test_preprocess_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown crop"):
        Preprocess(image_size=8, channels=1, crop="random")
    with pytest.raises(ValueError, match="resize_size"):
        Preprocess(image_size=8, channels=1, resize_size=4)
    with pytest.raises(ValueError, match="std"):
        Preprocess(image_size=8, channels=1, std=(0.0,))


def tfds_config(**overrides):
    return ml_collections.ConfigDict({"data_dir": "", "crop": "inception", "flip": True,
                                      "resize_size": 0, "mean": (0.5,) * 3, "std": (0.5,) * 3,
                                      **overrides})


@pytest.mark.parametrize("module,classes,size,first_name", [
    (cifar10, 10, 32, "airplane"), (imagenet2012, 1000, 224, "n01440764")])
def test_tfds_data_sets_on_mock_examples(module, classes, size, first_name):
    with tfds.testing.mock_data(num_examples=7):
        data = module.build(tfds_config(), workdir=None)
        assert data.num_classes == classes and data.class_names[0] == first_name
        assert data.image_shape == (size, size, 3)
        batch = next(data.train_iter(batch_size=3, seed=0))
        assert batch["image"].shape == (3, size, size, 3)
        assert np.all((0 <= batch["label"]) & (batch["label"] < classes))
        assert np.abs(batch["image"]).max() <= 1.0
        evaluation = list(data.eval_iter(batch_size=3, num_batches=-1))
        assert [len(b["label"]) for b in evaluation] == [3, 3, 3]
        np.testing.assert_array_equal(evaluation[-1]["label"][1:], [-1, -1])


def test_tfds_data_sets_not_prepared(tmp_path):
    with pytest.raises(ValueError, match="cannot read cifar10.*tfds build cifar10"):
        cifar10.build(tfds_config(data_dir=str(tmp_path)), workdir=None)
