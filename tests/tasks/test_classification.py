"""Classification task: padded rows, loss at initialisation, FLOPs, position resizing."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxformer.data import fashion_mnist
from jaxformer.losses.cross_entropy import smoothed_cross_entropy
from jaxformer.tasks.classification import ClassificationTask


def task_config(label_smoothing=0.0):
    return ml_collections.ConfigDict(dict(
        model=dict(name="vit", variant="", patch_size=7, num_layers=2, num_heads=2, d_model=16,
                   mlp_dim=32, pool_type="tok", representation_size=0, dropout_rate=0.0,
                   attention_dropout_rate=0.0),
        task=dict(name="classification", label_smoothing=label_smoothing),
        train=dict(compute_dtype="float32", remat=False)))


@pytest.fixture(scope="module")
def subset():
    config = ml_collections.ConfigDict(dict(source="subset", mean=(fashion_mnist.MEAN,),
                                            std=(fashion_mnist.STD,)))
    return fashion_mnist.build(config, workdir=None)


@pytest.mark.slow
def test_padded_rows_do_not_count(subset):
    task = ClassificationTask(task_config(label_smoothing=0.1), subset)
    params = task.init(jax.random.key(0))
    params["head"]["kernel"] = jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape)
    batch = next(subset.eval_iter(batch_size=8, num_batches=1))
    assert batch["image"].shape == (8, 28, 28, 1) and batch["label"].dtype == np.int32
    padded = {"image": np.concatenate([batch["image"][:5], np.zeros((3, 28, 28, 1), np.float32)]),
              "label": np.concatenate([batch["label"][:5], np.full(3, -1, np.int32)])}
    real = {k: v[:5] for k, v in batch.items()}
    rng = jax.random.key(0)
    got_loss, got = task.loss(params, padded, rng, train=False)
    want_loss, want = task.loss(params, real, rng, train=False)
    assert float(got_loss.count) == 5.0 and float(want_loss.count) == 5.0
    np.testing.assert_allclose(got_loss.total, want_loss.total, rtol=1e-6)
    np.testing.assert_allclose(got["accuracy"].total, want["accuracy"].total, rtol=1e-6)
    # Sums over the real rows: the loss matches the per-example losses added up.
    logits = task.model.apply({"params": params}, real["image"])
    per_example = smoothed_cross_entropy(logits, real["label"], 10, 0.1)
    np.testing.assert_allclose(got_loss.total, per_example.sum(), rtol=1e-5)
    top1 = (np.asarray(logits).argmax(-1) == real["label"]).sum()
    assert float(got["accuracy"].total) == top1


def test_loss_at_initialisation_is_log_num_classes(subset):
    task = ClassificationTask(task_config(), subset)
    params = task.init(jax.random.key(0))  # Zero head: uniform predictions.
    batch = next(subset.train_iter(batch_size=4, seed=0))
    loss, metrics = task.loss(params, batch, jax.random.key(0), train=True)
    np.testing.assert_allclose(loss.value(), np.log(10), rtol=1e-6)
    assert set(metrics) == {"accuracy"}


def test_bad_label_smoothing(subset):
    with pytest.raises(ValueError, match="label_smoothing"):
        ClassificationTask(task_config(label_smoothing=1.0), subset)


def test_flops_per_example_matches_xla_count_for_b16():
    config = task_config()
    config.model.update(variant="B/16")
    data = types.SimpleNamespace(num_classes=1000, image_shape=(224, 224, 3),
                                 class_names=[str(i) for i in range(1000)])
    task = ClassificationTask(config, data)
    forward = task.flops_per_example(None) / 3
    assert forward == pytest.approx(35.127656448e9, rel=1e-12)  # 2 x 17.56 G multiply-adds.
    params = jax.eval_shape(task.model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    cost = jax.jit(task.model.apply).lower(params, jnp.zeros((1, 224, 224, 3))).compile()
    cost = cost.cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    assert forward <= xla <= 1.03 * forward  # XLA adds the element-wise work.


def test_position_embeddings_are_resized_for_a_new_image_size(subset):
    task = ClassificationTask(task_config(), subset)  # 28 x 28 in 7 x 7 patches: a 4 x 4 grid.
    grid = np.arange(16, dtype=np.float32).reshape(1, 16, 1)
    posemb = np.concatenate([np.full((1, 1, 1), -1.0, np.float32), grid], axis=1)
    bigger = types.SimpleNamespace(num_classes=10, image_shape=(56, 56, 1),
                                   class_names=subset.class_names)
    resized = ClassificationTask(task_config(), bigger).resize_param(
        "encoder/pos_embedding", posemb, (1, 65, 1))
    assert resized.shape == (1, 65, 1) and resized[0, 0, 0] == -1.0  # [class] kept.
    # Bilinear with aligned corners: the corners stay, the grid's values spread between them.
    new = resized[0, 1:, 0].reshape(8, 8)
    assert (new[0, 0], new[0, -1], new[-1, 0], new[-1, -1]) == (0.0, 3.0, 12.0, 15.0)
    np.testing.assert_allclose(np.diff(new, axis=1), 3 / 7, atol=1e-5)
    with pytest.raises(ValueError, match="head/kernel"):
        task.resize_param("head/kernel", np.zeros((16, 10)), (16, 5))


def test_a_colour_patch_embedding_sees_grey_images_as_grey_repeated_in_each_channel(subset):
    task = ClassificationTask(task_config(), subset)
    colour = np.random.default_rng(0).standard_normal((7, 7, 3, 16)).astype(np.float32)
    grey = task.resize_param("encoder/embedding/kernel", colour, (7, 7, 1, 16))
    image = np.random.default_rng(1).standard_normal((1, 28, 28, 1)).astype(np.float32)

    def patches(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (7, 7), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    np.testing.assert_allclose(patches(image, grey), patches(np.repeat(image, 3, -1), colour),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="embedding/kernel"):
        task.resize_param("encoder/embedding/kernel", colour, (7, 7, 2, 16))
