"""DETR: the reference parameter counts and freezing rule, outputs, padding masks, build."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxformer import registry
from jaxformer.models import detr, resnet
from jaxformer.train import transfer


def init_shapes(model, image_size=64):
    images = jnp.zeros((1, image_size, image_size, 3))
    return jax.eval_shape(model.init, jax.random.key(0), images,
                          jnp.ones(images.shape[:3], bool))["params"]


def test_r50_counts_match_the_references():
    """Hugging Face's DetrForObjectDetection (ResNet-50, 91 classes): 41,524,768 parameters
    with frozen BatchNorm as buffers, 41,577,888 counting BatchNorm's scale and shift; the
    original DETR trains 41,302,368 (not the BatchNorm, conv1 or layer1)."""
    params = init_shapes(detr.DETR(num_classes=91, **detr.VARIANTS["r50"]))
    counts = detr.parameter_counts(params)
    assert counts == {"total": 41_631_008, "without_statistics": 41_577_888,
                      "without_batchnorm": 41_524_768, "trainable": 41_302_368}
    # The trainer's freezing (`config.freeze = detr.FREEZE`) counts the same.
    assert transfer.count_frozen(params, detr.FREEZE) == (41_302_368, 41_631_008 - 41_302_368)
    transfer.check_freeze(params, detr.FREEZE)
    assert transfer.count_frozen(params, detr.FREEZE_BACKBONE)[0] == 41_631_008 - 23_561_152


def transformer_count(d, channels, queries, encoder, decoder, mlp, classes):
    """Everything but the backbone: input projection, queries, encoder blocks (attention
    4d^2 + 4d, FFN 2dm + m + d, two LayerNorms), decoder blocks (two attentions, FFN, three
    LayerNorms), the shared decoder LayerNorm, class head, 3-layer box MLP."""
    attention, ffn = 4 * d * d + 4 * d, 2 * d * mlp + mlp + d
    return (channels * d + d + queries * d + encoder * (attention + ffn + 4 * d)
            + decoder * (2 * attention + ffn + 6 * d) + 2 * d + d * (classes + 1) + classes + 1
            + 2 * (d * d + d) + 4 * d + 4)


@pytest.mark.parametrize("variant", list(detr.VARIANTS))
def test_every_variant_is_backbone_plus_transformer(variant):
    sizes = detr.VARIANTS[variant]
    params = init_shapes(detr.DETR(num_classes=20, **sizes))
    backbone = resnet.resnet(sizes["backbone"])
    backbone_params = jax.eval_shape(backbone.init, jax.random.key(0),
                                     jnp.zeros((1, 64, 64, 3)))["params"]
    assert jax.tree.map(lambda x: x.shape, params["backbone"]) == jax.tree.map(
        lambda x: x.shape, backbone_params)
    backbone_count = sum(x.size for x in jax.tree.leaves(backbone_params))
    expected = backbone_count + transformer_count(
        sizes["d_model"], backbone.num_features, sizes["num_queries"],
        sizes["num_encoder_layers"], sizes["num_decoder_layers"], sizes["mlp_dim"], 20)
    assert detr.parameter_counts(params)["total"] == expected


@pytest.fixture(scope="module")
def cpu():
    """The CPU variant with three decoder layers, its parameters and a jitted `apply`."""
    model = detr.DETR(num_classes=20, **{**detr.VARIANTS["cpu"], "num_decoder_layers": 3})
    images = jnp.zeros((1, 64, 64, 3))
    variables = jax.jit(model.init)(jax.random.key(1), images, jnp.ones((1, 64, 64), bool))
    return model, variables, jax.jit(model.apply, static_argnames="train")


@pytest.mark.slow
def test_outputs_of_every_decoder_layer(cpu):
    _, variables, apply = cpu
    assert sorted(variables["params"]["decoder"]) == ["block_0", "block_1", "block_2",
                                                      "final_norm"]
    images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    mask = jnp.ones((2, 64, 64), bool).at[1].set(False)  # The second image is all padding.
    out = apply(variables, images, mask)
    assert out["logits"].shape == (3, 2, 10, 21) and out["logits"].dtype == jnp.float32
    assert out["boxes"].shape == (3, 2, 10, 4)
    assert bool(((out["boxes"] > 0) & (out["boxes"] < 1)).all())
    assert bool(jnp.isfinite(out["logits"]).all())
    assert not np.allclose(out["logits"][0], out["logits"][-1], atol=1e-3)

    dropped = apply(variables, images, mask, train=True, rngs={"dropout": jax.random.key(2)})
    assert bool(jnp.isfinite(dropped["logits"]).all())
    assert not np.allclose(dropped["logits"], out["logits"], atol=1e-4)


@pytest.mark.slow
def test_padding_does_not_change_the_predictions(cpu):
    """A 24x32 image on a 96x96 canvas, and on a 128x144 one whose padding holds noise from
    row 104 or column 112 on: the same predictions. As in DETR, the backbone sees the padded
    pixels, so the noise lies beyond the receptive field (99 pixels) of the image's feature
    cells, and the canvases extend far enough that the image's activations (zero at the
    initial BatchNorm where the input is zero) never reach their edge; what differs between
    the two is the transformer's view, which the mask and the mask-normalised positions
    make the same. Without the mask, the predictions differ."""
    _, variables, apply = cpu
    content = jax.random.normal(jax.random.key(0), (1, 24, 32, 3))

    def canvas(height, width, background):
        image = background.at[:, :24, :32].set(content)
        return image, jnp.zeros((1, height, width), bool).at[:, :24, :32].set(True)

    noise = jax.random.normal(jax.random.key(1), (1, 128, 144, 3))
    noise = noise.at[:, :104, :112].set(0.0)
    small, large = canvas(96, 96, jnp.zeros((1, 96, 96, 3))), canvas(128, 144, noise)
    reference = apply(variables, *small)
    for name, value in apply(variables, *large).items():
        np.testing.assert_allclose(value, reference[name], atol=1e-5, err_msg=name)
    unmasked = apply(variables, large[0], jnp.ones_like(large[1]))
    assert not np.allclose(unmasked["logits"], reference["logits"], atol=1e-3)


def test_resize_mask_is_nearest():
    mask = np.zeros((1, 10, 7), bool)
    mask[0, :6, :3] = True
    resized = np.asarray(detr.resize_mask(jnp.asarray(mask), (4, 3)))
    rows, cols = np.arange(4) * 10 // 4, np.arange(3) * 7 // 3  # floor(i * in / out)
    np.testing.assert_array_equal(resized, mask[:, rows][:, :, cols])
    np.testing.assert_array_equal(resized[0], [[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 0]])


def config(**fields):
    base = dict(name="detr", variant="", backbone="tiny", d_model=32, num_heads=2,
                num_encoder_layers=1, num_decoder_layers=2, mlp_dim=64, num_queries=5,
                dropout_rate=0.0)
    return ml_collections.ConfigDict({**base, **fields})


def test_build_variants_and_explicit_sizes():
    assert registry.lookup("models", "detr") is detr
    model = detr.build(config(variant="r50"), num_classes=91)
    assert (model.backbone, model.d_model, model.num_queries, model.num_encoder_layers,
            model.num_decoder_layers, model.mlp_dim, model.num_heads) == (
        "resnet50", 256, 100, 6, 6, 2048, 8)
    assert model.dropout_rate == 0.0 and model.num_classes == 91
    model = detr.build(config(), num_classes=3, dtype=jnp.bfloat16, remat=True)
    assert (model.d_model, model.num_queries, model.dtype, model.remat) == (
        32, 5, jnp.bfloat16, True)
    images = jnp.zeros((1, 32, 32, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    out = jax.eval_shape(model.apply, variables, images)
    assert out["logits"].shape == (2, 1, 5, 4) and out["logits"].dtype == jnp.float32
    default = ml_collections.ConfigDict(dict(variant="cpu"))
    assert detr.build(default, num_classes=3).dropout_rate == 0.1


@pytest.mark.parametrize("fields,message", [
    (dict(variant="r152"), "unknown DETR variant 'r152'"),
    (dict(backbone="resnet152"), "unknown DETR backbone 'resnet152'"),
    (dict(d_model=30, num_heads=4), "not divisible by 4 heads"),
    (dict(d_model=30, num_heads=3), "multiple of 4"),
    (dict(num_queries=0), "num_queries must be a positive integer"),
    (dict(num_encoder_layers=-1), "num_encoder_layers must be >= 0"),
    (dict(dropout_rate=1.0), r"dropout_rate must be in \[0, 1\)"),
])
def test_build_rejects_bad_configs(fields, message):
    with pytest.raises(ValueError, match=message):
        detr.build(config(**fields), num_classes=3)
