"""Attention maps: rollout arithmetic, [class]-token maps, and the PNG of a trained run."""

import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from PIL import Image

from jaxformer import config as config_lib
from jaxformer.data import fashion_mnist
from jaxformer.errors import UserError
from jaxformer.inference import attention_map
from jaxformer.inference.workdir import load_run
from jaxformer.train import trainer

pytestmark = pytest.mark.slow  # Trains or launches runs.

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def row_stochastic(rng, shape):
    weights = rng.random(shape)
    return weights / weights.sum(-1, keepdims=True)


def test_rollout_of_one_layer_is_half_attention_half_identity():
    weights = row_stochastic(np.random.default_rng(0), (2, 3, 5, 5))
    rollout = attention_map.attention_rollout([weights])
    np.testing.assert_allclose(rollout, 0.5 * weights.mean(1) + 0.5 * np.eye(5), atol=1e-6)


def test_rollout_multiplies_later_layers_on_the_left():
    rng = np.random.default_rng(1)
    layers = [row_stochastic(rng, (1, 2, 4, 4)) for _ in range(3)]
    mixed = [0.5 * w.mean(1)[0] + 0.5 * np.eye(4) for w in layers]
    expected = mixed[2] @ mixed[1] @ mixed[0]
    rollout = attention_map.attention_rollout(layers)[0]
    np.testing.assert_allclose(rollout, expected, atol=1e-6)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-6)
    # Known numbers: two layers where every token attends only to token 0.
    only_first = np.zeros((1, 1, 3, 3))
    only_first[..., 0] = 1.0
    rolled = attention_map.attention_rollout([only_first, only_first])[0]
    np.testing.assert_allclose(rolled[1], [0.75, 0.25, 0.0], atol=1e-6)
    np.testing.assert_allclose(rolled[0], [1.0, 0.0, 0.0], atol=1e-6)


def test_token_map_takes_the_class_row_or_the_mean():
    attention = np.array([[0.1, 0.2, 0.3, 0.0, 0.4],
                          [0.2, 0.2, 0.2, 0.2, 0.2],
                          [0.0, 0.5, 0.0, 0.5, 0.0],
                          [0.0, 0.0, 0.0, 1.0, 0.0],
                          [0.25, 0.25, 0.25, 0.25, 0.0]])
    with_class = attention_map.token_map(attention, (2, 2), 1)
    np.testing.assert_allclose(with_class, [[2 / 9, 3 / 9], [0.0, 4 / 9]], atol=1e-6)
    without = attention_map.token_map(attention[1:, 1:], (2, 2), 0)
    column_means = attention[1:, 1:].mean(0)
    np.testing.assert_allclose(without, (column_means / column_means.sum()).reshape(2, 2),
                               atol=1e-6)


def test_heatmap_colours_low_and_high_ends():
    values = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    colors = attention_map.heatmap(values, 2)
    assert colors.shape == (2, 2, 3) and colors.dtype == np.uint8
    np.testing.assert_array_equal(colors[0, 0], [0, 0, 96])
    np.testing.assert_array_equal(colors[0, 1], [160, 0, 0])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vit_run")
    config = config_lib.load_config(
        os.path.join(ROOT, "configs/vit/fashion_mnist.py:runlocal,source=subset"))
    config_lib.apply_overrides(config, ["train.num_steps=2"])
    trainer.train(config, str(workdir))
    return load_run(str(workdir))


def test_png_of_a_trained_run(trained_run, tmp_path):
    images, labels = fashion_mnist.load_split(fashion_mnist.SUBSET_DIR, "test")
    image_path = tmp_path / "sneaker.png"
    index = int(np.flatnonzero(labels == 7)[0])
    Image.fromarray(images[index, :, :, 0]).save(image_path)
    out_path = tmp_path / "maps" / "attention.png"
    maps = attention_map.write_attention_map(trained_run, str(image_path), str(out_path))
    assert maps.class_name in fashion_mnist.CLASS_NAMES
    assert 0.1 <= maps.probability <= 1.0
    for values in (maps.last_layer, maps.rollout):
        assert values.shape == (4, 4)  # 28 x 28 in 7 x 7 patches (the runlocal model).
        np.testing.assert_allclose(values.sum(), 1.0, atol=1e-5)
    with Image.open(out_path) as figure:
        assert figure.format == "PNG" and figure.mode == "RGB"
        assert figure.size == (3 * 224 + 4 * 8, 8 + 20 + 224 + 28 + 8) == (704, 288)
        pixels = np.asarray(figure)
    top, panel = 8 + 20, 224
    panels = [pixels[top:top + panel, 8 + i * 232:8 + i * 232 + panel] for i in range(3)]
    source = panels[0][::8, ::8, 0]  # The 28 x 28 input, upscaled 8x without smoothing.
    np.testing.assert_array_equal(source, images[index, :, :, 0])
    assert np.abs(panels[1].astype(int) - panels[0]).mean() > 10  # Overlays are drawn.


def test_rgb_image_is_converted_for_a_grayscale_model(trained_run, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    image_path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(image_path)
    out_path = tmp_path / "attention.png"
    attention_map.write_attention_map(trained_run, str(image_path), str(out_path))
    with Image.open(out_path) as figure:
        assert figure.size == (704, 288)


def test_errors(trained_run, tmp_path):
    with pytest.raises(UserError, match="image not found"):
        attention_map.write_attention_map(trained_run, str(tmp_path / "none.png"),
                                          str(tmp_path / "out.png"))
    with pytest.raises(UserError, match="no config.json"):
        load_run(str(tmp_path))


class _KnownAttention(nn.Module):
    """Stands in for a ViT whose attention is known: 2 layers over [class] + a 2 x 3 patch
    grid, the [class] token attending to one patch per layer; logits favour class 2."""

    patch_size: int = 7
    pool_type: str = "tok"

    @nn.compact
    def __call__(self, images):
        weights = np.zeros((1, 2, 7, 7), np.float32)  # [batch, heads, q, k]
        weights[..., 0, 6] = 1.0  # Layer 0: [class] -> patch (1, 2), bottom right.
        weights[..., 1:, 0] = 1.0  # Every patch -> [class].
        last = np.zeros_like(weights)
        last[..., 0, 2] = 1.0  # Layer 1: [class] -> patch (0, 1), top middle.
        last[..., 1:, 1] = 1.0
        self.sow("intermediates", "attention_weights", jnp.asarray(weights),
                 reduce_fn=lambda _, x: (x,), init_fn=tuple)
        Layer1(name="block_1")(last)
        return jnp.tile(jnp.array([[0.0, 1.0, 3.0]]), (images.shape[0], 1))


class Layer1(nn.Module):
    @nn.compact
    def __call__(self, weights):
        self.sow("intermediates", "attention_weights", jnp.asarray(weights),
                 reduce_fn=lambda _, x: (x,), init_fn=tuple)


def test_compute_maps_places_the_attended_patch_in_row_major_order():
    model = _KnownAttention()
    maps = attention_map.compute_maps(model, {}, np.zeros((14, 21, 1), np.float32),
                                      ("a", "b", "c"))
    assert maps.class_name == "c"
    assert maps.probability == pytest.approx(np.exp(3) / (1 + np.e + np.exp(3)), rel=1e-6)
    expected_last = np.zeros((2, 3))
    expected_last[0, 1] = 1.0
    np.testing.assert_allclose(maps.last_layer, expected_last, atol=1e-6)
    # Rollout, by hand: with the residual, each layer is 0.5 * attention + 0.5 * identity.
    # [class]'s row after layer 1 is 0.5 [class] + 0.5 patch (0, 1); through layer 0,
    # [class] -> 0.5 [class] + 0.5 patch (1, 2) and patch (0, 1) -> 0.5 itself + 0.5 [class]:
    # 0.5 [class] + 0.25 patch (0, 1) + 0.25 patch (1, 2), i.e. half of the patch map each.
    expected_rollout = np.zeros((2, 3))
    expected_rollout[0, 1] = expected_rollout[1, 2] = 0.5
    np.testing.assert_allclose(maps.rollout, expected_rollout, atol=1e-6)
