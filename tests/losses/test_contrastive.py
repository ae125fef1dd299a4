"""Contrastive losses: CLIP's softmax and SigLIP's sigmoid against numpy references, padding
rows left out, and the same loss and gradients on one device, under pmap over 8 devices
(each with 1/8 of the batch) and under jit over a batch sharded on 8 devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxformer.losses.contrastive import sigmoid_contrastive, softmax_contrastive

BATCH, FEATURES, DIM, DEVICES = 16, 5, 4, 8
SCALE, BIAS = 5.0, -2.0


def normalised(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def embeddings(rows=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    return (normalised(rng.normal(size=(rows, DIM))).astype(np.float32),
            normalised(rng.normal(size=(rows, DIM))).astype(np.float32))


def reference_softmax(images, texts, scale):
    """Mean over pairs of (CE image->texts + CE text->images) / 2, in float64."""
    logits = scale * images.astype(np.float64) @ texts.T.astype(np.float64)

    def xent(z):
        z = z - z.max(1, keepdims=True)
        return -(np.diag(z) - np.log(np.exp(z).sum(1)))

    return float(((xent(logits) + xent(logits.T)) / 2).mean())


def reference_sigmoid(images, texts, scale, bias):
    """SigLIP: sum over all pairs of -log sigmoid(z (scale x.y + bias)), over the batch size."""
    logits = scale * images.astype(np.float64) @ texts.T.astype(np.float64) + bias
    z = 2 * np.eye(len(images)) - 1
    return float(np.log1p(np.exp(-z * logits)).sum() / len(images))


def loss_value(fn, images, texts, axis_name=None, **kwargs):
    loss, metrics = fn(jnp.asarray(images), jnp.asarray(texts), axis_name=axis_name, **kwargs)
    return float(loss.value()), {k: float(v.value()) for k, v in metrics.items()}


def test_softmax_matches_numpy_reference():
    images, texts = embeddings()
    value, metrics = loss_value(softmax_contrastive, images, texts, logit_scale=SCALE)
    assert value == pytest.approx(reference_softmax(images, texts, SCALE), rel=1e-6)
    similarity = images @ texts.T
    assert metrics["image_to_text_accuracy"] == pytest.approx(
        np.mean(similarity.argmax(1) == np.arange(BATCH)))
    assert metrics["text_to_image_accuracy"] == pytest.approx(
        np.mean(similarity.argmax(0) == np.arange(BATCH)))


def test_sigmoid_matches_numpy_reference():
    images, texts = embeddings()
    value, _ = loss_value(sigmoid_contrastive, images, texts, logit_scale=SCALE,
                          logit_bias=BIAS)
    assert value == pytest.approx(reference_sigmoid(images, texts, SCALE, BIAS), rel=1e-6)


def test_perfect_pairs_are_all_retrieved():
    images, _ = embeddings()
    _, metrics = loss_value(softmax_contrastive, images, images, logit_scale=SCALE)
    assert metrics == {"image_to_text_accuracy": 1.0, "text_to_image_accuracy": 1.0}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softmax", "sigmoid"])
def test_padding_rows_are_neither_scored_nor_negatives(name):
    images, texts = embeddings()
    weights = np.ones(BATCH, np.float32)
    weights[[3, 9, 15]] = 0
    keep = weights > 0
    if name == "softmax":
        fn, kwargs = softmax_contrastive, dict(logit_scale=SCALE)
        wanted = reference_softmax(images[keep], texts[keep], SCALE)
    else:
        fn, kwargs = sigmoid_contrastive, dict(logit_scale=SCALE, logit_bias=BIAS)
        wanted = reference_sigmoid(images[keep], texts[keep], SCALE, BIAS)
    value, metrics = loss_value(fn, images, texts, weights=jnp.asarray(weights), **kwargs)
    assert value == pytest.approx(wanted, rel=1e-6)
    _, subset_metrics = loss_value(fn, images[keep], texts[keep], **kwargs)
    assert metrics == pytest.approx(subset_metrics)
    # The gradient is finite and does not reach the padding rows.
    grads = jax.grad(lambda x: fn(x, jnp.asarray(texts), axis_name=None,
                                  weights=jnp.asarray(weights), **kwargs)[0].total)(
        jnp.asarray(images))
    assert np.isfinite(grads).all() and not np.asarray(grads)[~keep].any()


# Two small linear maps (and the temperature and bias) produce the embeddings, so that the
# gradients reach parameters through every row of the global batch.
def init_params():
    rng = np.random.default_rng(1)
    return {"image": jnp.asarray(rng.normal(size=(FEATURES, DIM)), jnp.float32),
            "text": jnp.asarray(rng.normal(size=(FEATURES, DIM)), jnp.float32),
            "log_scale": jnp.float32(np.log(SCALE)), "bias": jnp.float32(BIAS)}


def inputs():
    rng = np.random.default_rng(2)
    return (rng.normal(size=(BATCH, FEATURES)).astype(np.float32),
            rng.normal(size=(BATCH, FEATURES)).astype(np.float32))


def loss_of(name, images, texts, params, axis_name):
    """The loss as an Average over this device's rows."""
    scale = jnp.exp(params["log_scale"])
    if name == "softmax":
        return softmax_contrastive(images, texts, scale, axis_name)[0]
    return sigmoid_contrastive(images, texts, scale, params["bias"], axis_name)[0]


def embed(params, x, y):
    def unit(v):
        return v / jnp.linalg.norm(v, axis=-1, keepdims=True)

    return unit(x @ params["image"]), unit(y @ params["text"])


def local_totals(name, params, x, y, axis_name):
    """(loss total, count, d total / d params, d total / d embeddings) on this device."""
    def through_params(params):
        loss = loss_of(name, *embed(params, x, y), params, axis_name)
        return loss.total, loss.count

    def through_embeddings(images, texts):
        return loss_of(name, images, texts, params, axis_name).total

    (total, count), param_grads = jax.value_and_grad(through_params, has_aux=True)(params)
    emb_grads = jax.grad(through_embeddings, argnums=(0, 1))(*embed(params, x, y))
    return total, count, param_grads, emb_grads


def single_device(name, params, x, y):
    total, count, param_grads, emb_grads = local_totals(name, params, x, y, None)
    return jax.tree.map(lambda a: a / count, (total, param_grads, emb_grads))


def under_pmap(name, params, x, y):
    def step(params, x, y):
        total, count, param_grads, emb_grads = local_totals(name, params, x, y, "data")
        total, count, param_grads = jax.lax.psum((total, count, param_grads), "data")
        # Embedding gradients stay per device (rows of this shard); all_gather's transpose
        # already adds in the other devices' losses.
        return jax.tree.map(lambda a: a / count, (total, param_grads, emb_grads))

    def shard(v):
        return v.reshape(DEVICES, BATCH // DEVICES, FEATURES)

    out = jax.pmap(step, axis_name="data", in_axes=(None, 0, 0))(params, shard(x), shard(y))
    total, param_grads, emb_grads = jax.device_get(out)
    return (total[0], jax.tree.map(lambda g: g[0], param_grads),
            tuple(g.reshape(BATCH, DIM) for g in emb_grads))


def under_sharded_jit(name, params, x, y):
    mesh = Mesh(np.array(jax.devices()[:DEVICES]), ("data",))
    rows = NamedSharding(mesh, PartitionSpec("data"))
    x, y = jax.device_put(x, rows), jax.device_put(y, rows)
    assert len(x.sharding.device_set) == DEVICES
    return jax.device_get(jax.jit(functools.partial(single_device, name))(params, x, y))


def assert_close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["softmax", "sigmoid"])
def test_loss_and_gradients_do_not_depend_on_the_split(name):
    assert jax.device_count() >= DEVICES
    params, (x, y) = init_params(), inputs()
    reference = jax.device_get(single_device(name, params, x, y))
    images, texts = jax.device_get(embed(params, x, y))
    wanted = (reference_softmax(images, texts, SCALE) if name == "softmax"
              else reference_sigmoid(images, texts, SCALE, BIAS))
    assert float(reference[0]) == pytest.approx(wanted, rel=1e-5)
    used = {k: v for k, v in reference[1].items() if name == "sigmoid" or k != "bias"}
    for leaf in jax.tree.leaves((used, reference[2])):
        assert np.abs(leaf).max() > 1e-4  # A real gradient, not zeros on both sides.
    assert_close(under_pmap(name, params, x, y), reference)
    assert_close(under_sharded_jit(name, params, x, y), reference)
