"""Classification task: loss, top-k, padded evaluation, FLOPs; one train step per ViT config."""

import glob
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer import config as config_lib
from jaxformer.data import fashion_mnist
from jaxformer.tasks import classification
from jaxformer.tasks.classification import ClassificationTask
from jaxformer.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
VIT_CONFIGS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(
    os.path.join(ROOT, "configs", "vit", "*.py")))


def test_cross_entropy_with_and_without_label_smoothing():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = jnp.array([0, 1])
    exp = np.exp(np.asarray(logits, np.float64))
    log_probs = np.log(exp / exp.sum(1, keepdims=True))
    plain = classification.smoothed_cross_entropy(logits, labels, 3)
    np.testing.assert_allclose(plain, [-log_probs[0, 0], -log_probs[1, 1]], rtol=1e-6)
    # Smoothing 0.3 over 3 classes: target 0.8 on the label and 0.1 elsewhere.
    smoothed = classification.smoothed_cross_entropy(logits, labels, 3, 0.3)
    targets = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    np.testing.assert_allclose(smoothed, -(targets * log_probs).sum(1), rtol=1e-6)
    np.testing.assert_allclose(plain, [0.1698460, 2.6520085], rtol=1e-5)


def test_top_k_correct():
    logits = jnp.array([[0.1, 0.5, 0.3, 0.9, 0.0, 0.2, 0.8],
                        [0.1, 0.5, 0.3, 0.9, 0.0, 0.2, 0.8],
                        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    labels = jnp.array([3, 2, 1])  # Rank 1; rank 4; tied for first (ties count against).
    np.testing.assert_array_equal(classification.top_k_correct(logits, labels, 1), [1, 0, 0])
    np.testing.assert_array_equal(classification.top_k_correct(logits, labels, 2), [1, 0, 1])
    np.testing.assert_array_equal(classification.top_k_correct(logits, labels, 3), [1, 0, 1])
    np.testing.assert_array_equal(classification.top_k_correct(logits, labels, 5), [1, 1, 1])
    labels = jnp.array([4, 4, 2])  # Last; last; tied with four others, behind two.
    np.testing.assert_array_equal(classification.top_k_correct(logits, labels, 5), [0, 0, 0])


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


def test_padded_rows_do_not_count(subset):
    task = ClassificationTask(task_config(label_smoothing=0.1), subset)
    params = task.init(jax.random.key(0))
    params["head"]["kernel"] = jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape)
    batch = next(subset.eval_iter(batch_size=8, num_batches=1))
    assert batch["image"].shape == (8, 28, 28, 1) and batch["label"].dtype == np.int32
    padded = {"image": np.concatenate([batch["image"][:5], np.zeros((3, 28, 28, 1), np.float32)]),
              "label": np.concatenate([batch["label"][:5], np.full(3, -1, np.int32)])}
    real = {k: v[:5] for k, v in batch.items()}
    got = jax.device_get(task.eval_metrics(params, padded))
    want = jax.device_get(task.eval_metrics(params, real))
    assert float(got["weight"]) == 5.0 and float(want["weight"]) == 5.0
    for key in ("loss", "accuracy", "top5_accuracy"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6)
    # Sums over the real rows: the loss matches the per-example losses added up.
    logits = task.model.apply({"params": params}, real["image"])
    per_example = classification.smoothed_cross_entropy(logits, real["label"], 10, 0.1)
    np.testing.assert_allclose(got["loss"], per_example.sum(), rtol=1e-5)
    top1 = (np.asarray(logits).argmax(-1) == real["label"]).sum()
    assert float(got["accuracy"]) == top1


def test_loss_at_initialisation_is_log_num_classes(subset):
    task = ClassificationTask(task_config(), subset)
    params = task.init(jax.random.key(0))  # Zero head: uniform predictions.
    batch = next(subset.train_iter(batch_size=4, seed=0))
    loss, metrics = task.loss(params, batch, jax.random.key(0), train=True)
    np.testing.assert_allclose(loss, np.log(10), rtol=1e-6)
    assert set(metrics) == {"accuracy"}
    evaluated = task.eval_metrics(params, next(subset.eval_iter(batch_size=4, num_batches=1)))
    assert float(evaluated["accuracy"]) == 0.0  # Constant logits are never right.


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


@pytest.mark.parametrize("path", VIT_CONFIGS)
def test_every_vit_config_trains_one_step(path, tmp_path):
    config = config_lib.load_config(os.path.join(ROOT, path) + ":runlocal")
    config_lib.apply_overrides(config, ["train.num_steps=2", "train.eval_every=1"])
    if config.data.name == "fashion_mnist":
        last = trainer.train(config, str(tmp_path / "run"))
    else:  # Data sets that need a manual download: tfds' mock examples stand in.
        with tfds.testing.mock_data(num_examples=24):
            last = trainer.train(config, str(tmp_path / "run"))
    assert np.isfinite(last["train/loss"]) and np.isfinite(last["eval/loss"])
    assert 0.0 <= last["eval/accuracy"] <= last["eval/top5_accuracy"] <= 1.0
