"""Image transforms: the functions on images, and the steps on feature dicts that pipelines
compose (their draw budgets, features they do not know passing through)."""

import io

import numpy as np
import pytest
from PIL import Image

from jaxformer.data import transforms
from jaxformer.data.transforms import (
    ClassLabel,
    Compose,
    Decode,
    Draws,
    Flip,
    Normalize,
    PadAndRandomCrop,
    Resize,
)


def test_pad_and_random_crop_matches_numpy_pad():
    image = np.arange(5 * 5 * 2, dtype=np.uint8).reshape(5, 5, 2)
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
    for top in range(5):
        for left in range(5):
            # Draws mapping to offsets (top, left) in [0, 5): u = (offset + 0.5) / 5.
            draws = Draws(np.array([(top + 0.5) / 5, (left + 0.5) / 5]))
            crop = transforms.pad_and_random_crop(image, 5, 2, draws)
            np.testing.assert_array_equal(crop, padded[top:top + 5, left:left + 5])


def test_draws_are_budgeted():
    draws = Draws(np.array([0.25, 0.999]))
    assert draws.integers(4) == 1 and draws.integers(3) == 2
    with pytest.raises(RuntimeError, match="declared"):
        draws.random()
    with pytest.raises(RuntimeError, match="declared"):
        Flip()({"image": np.zeros((2, 2, 1), np.uint8)}, transforms.no_draws())


def test_inception_crop_and_center_crop_shapes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(60, 90, 3), dtype=np.uint8)
    for _ in range(5):
        draws = Draws(rng.random(transforms.InceptionCrop.num_draws))
        view = transforms.inception_crop(image, 32, draws)
        assert view.shape == (32, 32, 3) and view.dtype == np.uint8
    assert transforms.resize_shorter(image, 36).shape == (36, 54, 3)
    np.testing.assert_array_equal(transforms.center_crop(image, 30), image[15:45, 30:60])
    with pytest.raises(ValueError, match="cannot crop 64x64"):
        transforms.center_crop(image, 64)


def test_decode_encoded_images_and_channels():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    np.testing.assert_array_equal(transforms.decode(buffer.getvalue(), 3), rgb)
    gray = transforms.decode(rgb[:, :, 0], 3)
    assert gray.shape == (5, 7, 3) and np.array_equal(gray[:, :, 2], rgb[:, :, 0])
    assert transforms.decode(rgb, 1).shape == (5, 7, 1)
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(transforms.decode(rgba, 3), rgb)
    with pytest.raises(ValueError, match="cannot decode"):
        transforms.decode(b"not an image", 3)
    with pytest.raises(ValueError, match="uint8"):
        transforms.decode(rgb.astype(np.float32), 3)


def test_flip_takes_its_draw_even_when_off():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    np.testing.assert_array_equal(Flip()({"image": image}, Draws(np.array([0.2])))["image"],
                                  image[:, ::-1])
    np.testing.assert_array_equal(Flip()({"image": image}, Draws(np.array([0.7])))["image"],
                                  image)
    draws = Draws(np.array([0.2, 0.9]))
    np.testing.assert_array_equal(Flip(0.0)({"image": image}, draws)["image"], image)
    assert draws.next == 1


def test_steps_change_what_they_know_and_pass_the_rest_through():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 9, 3), dtype=np.uint8)
    tokens = np.array([5, 6, 7])
    steps = Compose((Decode(3), Resize(4, 6), PadAndRandomCrop(4, 1), Flip(),
                     Normalize((0.5,), (0.25,)), ClassLabel(3)))
    assert steps.num_draws == 3
    uniforms = np.array([0.1, 0.9, 0.3])
    out = steps({"image": rgb, "label": np.int64(2), "tokens": tokens, "name": b"cat.png"},
                Draws(uniforms))
    assert out.keys() == {"image", "label", "tokens", "name"}
    assert out["tokens"] is tokens and out["name"] == b"cat.png"
    assert out["label"] == 2 and out["label"].dtype == np.int32
    draws = Draws(uniforms)
    view = transforms.pad_and_random_crop(transforms.resize(rgb, 4, 6), 4, 1, draws)
    view = view[:, ::-1] if draws.random() < 0.5 else view
    assert out["image"].dtype == np.float32
    np.testing.assert_array_equal(out["image"], transforms.normalize(view, (0.5,), (0.25,)))


def test_class_label_checks_the_range():
    assert ClassLabel(3)({"label": 0}, transforms.no_draws())["label"] == 0
    for label in (3, -1):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
            ClassLabel(3)({"label": label}, transforms.no_draws())
