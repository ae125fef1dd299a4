"""CLIP: parameter counts, the temperature, pooling at the end-of-text token, unit-norm
embeddings, the SigLIP bias, and build's checks."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from jaxformer.models import clip
from jaxformer.models.clip import eot_positions

VOCAB, CONTEXT, EOT, IMAGE = 50, 12, 49, (8, 8, 3)


def config(**overrides):
    fields = dict(name="clip", variant="tiny/4", embed_dim=16, patch_size=4, vision_layers=1,
                  vision_width=16, vision_heads=2, vision_mlp_dim=32, text_layers=1,
                  text_width=16, text_heads=2, text_mlp_dim=32, pool_type="tok",
                  dropout_rate=0.0, activation="quick_gelu", loss="softmax")
    return ml_collections.ConfigDict(dict(fields, **overrides))


def build(image_shape=IMAGE, vocab=VOCAB, context=CONTEXT, eot=EOT, **overrides):
    return clip.build(config(**overrides), vocab_size=vocab, context_length=context,
                      eot_id=eot, image_shape=image_shape, dtype=jnp.float32, remat=False)


def shapes(model, image_shape, context):
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image_shape)),
                          jnp.zeros((1, context), jnp.int32))["params"]


def count(params):
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


# Hugging Face CLIPModel checkpoints (vocab 49,408, context 77, logit scale included).
@pytest.mark.parametrize("variant, side, wanted", [
    ("B/32", 224, 151_277_313),  # openai/clip-vit-base-patch32
    ("B/16", 224, 149_620_737),  # openai/clip-vit-base-patch16
    ("L/14", 224, 427_616_513),  # openai/clip-vit-large-patch14
])
def test_openai_parameter_counts(variant, side, wanted):
    model = build((side, side, 3), vocab=49_408, context=77, eot=49_407, variant=variant)
    assert count(shapes(model, (side, side, 3), 77)) == wanted


def test_b32_sizes_and_parameter_tree():
    sizes = clip.parse_variant("B/32")
    assert sizes == dict(embed_dim=512, vision_width=768, vision_layers=12, vision_heads=12,
                         vision_mlp_dim=3072, text_width=512, text_layers=12, text_heads=8,
                         text_mlp_dim=2048, patch_size=32)
    params = traverse_util.flatten_dict(shapes(
        build((224, 224, 3), vocab=49_408, context=77, eot=49_407, variant="B/32"),
        (224, 224, 3), 77))
    names = {"/".join(k): v.shape for k, v in params.items()}
    assert "image_encoder/embedding/bias" not in names  # CLIP's patch conv has no bias.
    assert names["image_encoder/pre_norm/scale"] == (768,)
    assert names["image_encoder/pos_embedding"] == (1, 50, 768)
    assert names["image_projection/kernel"] == (768, 512)
    assert names["text_encoder/position_embedding/embedding"] == (77, 512)
    assert names["text_projection/kernel"] == (512, 512)
    assert names["log_scale"] == ()
    assert not any("bias" in n for n in names if "projection" in n)
    assert "logit_bias" not in names


@functools.cache
def tiny(**overrides):
    """(model, params, jitted apply) of a small CLIP, built once per module."""
    model = build(variant="", **overrides)
    images = jnp.zeros((1, *IMAGE))
    tokens = jnp.zeros((1, CONTEXT), jnp.int32).at[:, 1].set(EOT)
    params = jax.jit(model.init)(jax.random.key(0), images, tokens)["params"]
    apply = jax.jit(lambda params, images, tokens: model.apply({"params": params}, images,
                                                                tokens))
    return model, params, apply


def inputs(seed=0, batch=3):
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.normal(size=(batch, *IMAGE)), jnp.float32)
    tokens = rng.integers(1, EOT, size=(batch, CONTEXT))
    tokens[0, 4:], tokens[0, 4] = 0, EOT  # EOT at 4, padding after it.
    tokens[1, 7:], tokens[1, 7] = 0, EOT
    tokens[2, -1] = EOT  # Full row.
    return images, jnp.asarray(tokens, jnp.int32)


@pytest.mark.slow
def test_temperature_init_and_clip():
    model, params, apply = tiny()
    images, tokens = inputs()
    assert float(apply(params, images, tokens)[2]) == pytest.approx(1 / 0.07, rel=1e-5)
    params = dict(params, log_scale=jnp.float32(math.log(200.0)))
    assert float(apply(params, images, tokens)[2]) == pytest.approx(100.0)
    # Above the clip the scale gets no gradient (it stays at 100).
    grad = jax.grad(lambda p: model.apply({"params": p}, method="logit_scale"))(params)
    assert float(grad["log_scale"]) == 0.0


@pytest.mark.slow
def test_sigmoid_loss_adds_only_a_bias():
    _, softmax_params, apply = tiny()
    _, params, sigmoid_apply = tiny(loss="sigmoid")
    assert count(params) == count(softmax_params) + 1
    outputs = sigmoid_apply(params, *inputs())
    assert len(outputs) == 4
    assert float(outputs[2]) == pytest.approx(10.0, rel=1e-5)
    assert float(outputs[3]) == -10.0
    assert len(apply(softmax_params, *inputs())) == 3


def test_eot_positions():
    tokens = jnp.array([[5, 9, EOT, 0], [EOT, 3, EOT, 0], [1, 2, 3, 4]])
    np.testing.assert_array_equal(eot_positions(tokens, EOT), [2, 0, 3])


def test_text_embedding_is_read_at_the_eot_token():
    model, params, _ = tiny()
    _, tokens = inputs()
    embed = jax.jit(lambda t: model.apply({"params": params}, t, method="encode_text"))
    base = np.asarray(embed(tokens))
    # Tokens after the EOT (row 0: position 9; row 1: position 8) change nothing...
    after = tokens.at[0, 9].set(7).at[1, 8].set(3)
    np.testing.assert_allclose(embed(after), base, atol=1e-6)
    # ...a token before it changes that row only.
    before = tokens.at[1, 2].set((tokens[1, 2] % (EOT - 1)) + 1)
    changed = np.asarray(embed(before))
    assert np.abs(changed[1] - base[1]).max() > 1e-4
    np.testing.assert_allclose(changed[[0, 2]], base[[0, 2]], atol=1e-6)

    # By hand: the final-LN features at the EOT index, projected and normalised.
    _, state = jax.jit(lambda t: model.apply(
        {"params": params}, t, method="encode_text", capture_intermediates=True,
        mutable=["intermediates"]))(tokens)
    features = state["intermediates"]["text_encoder"]["__call__"][0]  # [batch, L, width]
    picked = np.asarray(features)[np.arange(3), [4, 7, CONTEXT - 1]]
    projected = picked @ np.asarray(params["text_projection"]["kernel"])
    np.testing.assert_allclose(base, projected / np.linalg.norm(projected, axis=-1,
                                                                keepdims=True), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{}, dict(pool_type="gap", activation="gelu")])
def test_embeddings_have_unit_norm(overrides):
    _, params, apply = tiny(**overrides)
    assert ("cls" in params["image_encoder"]) == (overrides.get("pool_type", "tok") == "tok")
    images, texts, _ = apply(params, *inputs())
    for x in (images, texts):
        assert x.shape == (3, 16) and x.dtype == jnp.float32
        np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, atol=1e-5)
    assert np.abs(np.asarray(images[0] - images[1])).max() > 1e-4


def test_tiny_variant_builds_with_its_sizes():
    model = build(variant="tiny/4")
    assert (model.vision_width, model.text_width, model.embed_dim, model.patch_size) == (
        128, 128, 128, 4)
    assert model.activation is clip.quick_gelu


@pytest.mark.parametrize("overrides, message", [
    (dict(variant="M/4"), "unknown CLIP variant"),
    (dict(variant="B"), "unknown CLIP variant"),
    (dict(variant="", patch_size=3), "not a multiple of the patch size"),
    (dict(variant="", text_heads=3), "text_width 16 is not divisible"),
    (dict(variant="", vision_width=0), "vision_width must be a positive integer"),
    (dict(pool_type="cls"), "unknown pool_type"),
    (dict(activation="relu"), "unknown activation"),
    (dict(loss="hinge"), "unknown loss"),
])
def test_build_rejects_bad_configs(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


def test_build_rejects_an_eot_outside_the_vocabulary():
    with pytest.raises(ValueError, match="eot_id 50 is outside"):
        build(eot=VOCAB)
