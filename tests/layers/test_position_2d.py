"""DETR's 2-D sine positional encoding against a NumPy transcription of the reference."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.layers.position_2d import sine_position_encoding_2d


def flatten3(a):
    """torch's `.flatten(3)`."""
    return a.reshape(*a.shape[:3], -1)


def reference(mask, num_pos_feats, temperature=10000, normalize=False, scale=2 * math.pi):
    """`PositionEmbeddingSine.forward` of facebookresearch/detr (models/position_encoding.py)
    in NumPy: `mask` `[b, h, w]` true on padding -> `[b, 2 * num_pos_feats, h, w]`."""
    not_mask = ~mask
    y_embed = not_mask.cumsum(1, dtype=np.float32)
    x_embed = not_mask.cumsum(2, dtype=np.float32)
    if normalize:
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = np.arange(num_pos_feats, dtype=np.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = flatten3(np.stack((np.sin(pos_x[:, :, :, 0::2]), np.cos(pos_x[:, :, :, 1::2])), 4))
    pos_y = flatten3(np.stack((np.sin(pos_y[:, :, :, 0::2]), np.cos(pos_y[:, :, :, 1::2])), 4))
    return np.concatenate((pos_y, pos_x), axis=3).transpose(0, 3, 1, 2)


def padding_mask(extents, shape):
    """`[b, h, w]`, true on padding: image i covers the top-left `extents[i]` cells."""
    mask = np.ones((len(extents), *shape), bool)
    for i, (height, width) in enumerate(extents):
        mask[i, :height, :width] = False
    return mask


@pytest.mark.parametrize("normalize", [True, False])
def test_matches_the_reference_on_a_padded_mask(normalize):
    mask = padding_mask([(5, 7), (8, 10), (1, 3)], (8, 10))
    ours = sine_position_encoding_2d(jnp.asarray(~mask), 16, normalize=normalize)
    assert ours.shape == (3, 8, 10, 32) and ours.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2),
                               reference(mask, 16, normalize=normalize), atol=2e-5)


def test_detr_settings():
    """d_model 256: 128 features per axis; rows first, sin/cos interleaved; the last real
    row and column sit at 2 pi."""
    mask = padding_mask([(3, 4)], (5, 6))
    pos = np.asarray(sine_position_encoding_2d(jnp.asarray(~mask), 128))
    np.testing.assert_allclose(pos.transpose(0, 3, 1, 2), reference(mask, 128, normalize=True),
                               atol=2e-5)
    corner = pos[0, 2, 3]  # The last real cell: y = x = 2 pi (minus eps).
    np.testing.assert_allclose(corner[[0, 1, 128, 129]], [0, 1, 0, 1], atol=1e-5)
    np.testing.assert_allclose(pos[0, 0, 0, [0, 1]], [np.sin(2 * np.pi / 3), np.cos(2 * np.pi / 3)],
                               atol=1e-5)


def test_real_cells_ignore_extra_padding():
    mask = padding_mask([(4, 5)], (4, 5))
    padded = padding_mask([(4, 5)], (9, 12))
    small = sine_position_encoding_2d(jnp.asarray(~mask), 8)
    large = sine_position_encoding_2d(jnp.asarray(~padded), 8)
    np.testing.assert_allclose(large[:, :4, :5], small, atol=1e-6)


def test_dtype_and_odd_features():
    valid = jnp.ones((1, 2, 2), bool)
    assert sine_position_encoding_2d(valid, 4, dtype=jnp.bfloat16).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="num_pos_feats must be even"):
        sine_position_encoding_2d(valid, 3)
