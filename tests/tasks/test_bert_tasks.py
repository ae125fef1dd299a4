"""BERT tasks: masked-LM + next-sentence losses against numpy, padding, the global batch, a
train step of each task, the classification evaluator, token classification (tagging), the
data-free build and FLOPs."""

import types

import jax
import ml_collections
import numpy as np
import optax
import pytest

from jaxformer.data.common import DataSpec
from jaxformer.evaluators.base import Context
from jaxformer.evaluators.classification import ClassificationEvaluator
from jaxformer.tasks.bert_pretraining import BertPretrainingTask, unmasked_tokens
from jaxformer.tasks.text_classification import TextClassificationTask
from jaxformer.tasks.token_classification import TokenClassificationTask
from jaxformer.train import parallel
from jaxformer.train.state import create_state

VOCAB, SEQ, PREDICTIONS = 40, 12, 4
CLASSES = ("negative", "neutral", "positive")


def config(task="bert_pretraining", label_smoothing=0.0, objective="mlm_nsp", **data):
    return ml_collections.ConfigDict(dict(
        model=dict(name="bert", variant="", num_layers=2, d_model=16, num_heads=2, mlp_dim=32,
                   max_position=32, dropout_rate=0.1, attention_dropout_rate=0.1,
                   causal=objective == "ltr"),
        task=dict(name=task, label_smoothing=label_smoothing, objective=objective),
        data=dict(name="fake", **data),
        train=dict(compute_dtype="float32", remat=False)))


PRETRAINING_DATA = types.SimpleNamespace(vocab_size=VOCAB, seq_length=SEQ,
                                         max_predictions=PREDICTIONS)
TEXT_DATA = types.SimpleNamespace(vocab_size=VOCAB, seq_length=SEQ, class_names=CLASSES)
TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
TAG_DATA = types.SimpleNamespace(vocab_size=VOCAB, seq_length=SEQ, class_names=TAGS)


def pretraining_batch(seed=0, rows=4):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (rows, SEQ)).astype(np.int32)
    ids[:, 0], ids[:, 5], ids[:, 9] = 2, 3, 3  # [CLS] A [SEP] B [SEP] [PAD]...
    ids[:, 10:] = 0
    segments = np.zeros_like(ids)
    segments[:, 6:10] = 1
    positions = np.tile(np.array([1, 3, 7, 0], np.int32), (rows, 1))
    weights = np.tile(np.array([1, 1, 1, 0], np.float32), (rows, 1))
    weights[1, 2] = 0.0  # Row 1 has two predictions.
    return {"input_ids": ids, "segment_ids": segments, "mlm_positions": positions,
            "mlm_ids": np.take_along_axis(ids, positions, axis=1) * (weights > 0),
            "mlm_weights": weights,
            "next_sentence": rng.integers(0, 2, rows).astype(np.int32)}


def randomised(task, seed=1):
    """Parameters with a non-trivial NSP head and MLM bias, so that the losses differ from
    their initial values."""
    params = task.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(seed), 2)
    params["nsp_head"]["kernel"] = jax.random.normal(keys[0], params["nsp_head"]["kernel"].shape)
    params["mlm_head"]["output_bias"] = jax.random.normal(keys[1], (VOCAB,))
    return params


def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.slow
def test_pretraining_loss_matches_numpy():
    task = BertPretrainingTask(config(), PRETRAINING_DATA)
    params = randomised(task)
    batch = pretraining_batch()
    loss, metrics = task.loss(params, batch, jax.random.key(0), train=False)
    assert set(metrics) == {"mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"}
    mlm_logits, nsp_logits = task.model.apply({"params": params}, *task.model_inputs(batch))
    w = batch["mlm_weights"]
    mlm_nll = -np.take_along_axis(log_softmax(mlm_logits), batch["mlm_ids"][..., None], -1)[..., 0]
    mlm = (mlm_nll * w).sum() / w.sum()
    labels = batch["next_sentence"]
    nsp = -log_softmax(nsp_logits)[np.arange(4), labels].mean()
    mlm_acc = ((np.asarray(mlm_logits).argmax(-1) == batch["mlm_ids"]) * w).sum() / w.sum()
    nsp_acc = (np.asarray(nsp_logits).argmax(-1) == labels).mean()
    assert float(metrics["mlm_loss"].count) == 11.0 and float(metrics["nsp_loss"].count) == 4.0
    assert float(metrics["mlm_loss"].value()) == pytest.approx(mlm, rel=1e-5)
    assert float(metrics["nsp_loss"].value()) == pytest.approx(nsp, rel=1e-5)
    assert float(metrics["mlm_accuracy"].value()) == pytest.approx(mlm_acc, abs=1e-6)
    assert float(metrics["nsp_accuracy"].value()) == pytest.approx(nsp_acc, abs=1e-6)
    assert float(loss.count) == 4.0
    assert float(loss.value()) == pytest.approx(mlm + nsp, rel=1e-5)
    np.testing.assert_allclose(task.predict(params, batch), mlm_logits, rtol=1e-6)


def test_masked_lm_objective_without_next_sentence():
    full = BertPretrainingTask(config(), PRETRAINING_DATA)
    task = BertPretrainingTask(config(objective="mlm"), PRETRAINING_DATA)
    params = randomised(full)
    batch = pretraining_batch()
    loss, metrics = task.loss(params, batch, jax.random.key(0), train=False)
    _, full_metrics = full.loss(params, batch, jax.random.key(0), train=False)
    assert set(metrics) == {"mlm_loss", "mlm_accuracy"}
    assert float(loss.count) == 11.0
    assert float(loss.value()) == pytest.approx(float(full_metrics["mlm_loss"].value()),
                                                rel=1e-6)


@pytest.mark.slow
def test_left_to_right_objective_predicts_the_next_unmasked_token():
    task = BertPretrainingTask(config(objective="ltr"), PRETRAINING_DATA)
    params = randomised(task)
    batch = pretraining_batch()
    original = batch["input_ids"].copy()
    masked = dict(batch, input_ids=batch["input_ids"].copy())
    rows, cols = np.nonzero(batch["mlm_weights"])
    masked["input_ids"][rows, batch["mlm_positions"][rows, cols]] = 4  # [MASK]
    np.testing.assert_array_equal(unmasked_tokens(masked), original)
    loss, metrics = task.loss(params, masked, jax.random.key(0), train=False)
    assert set(metrics) == {"lm_loss", "lm_accuracy"}
    positions = np.tile(np.arange(SEQ, dtype=np.int32), (4, 1))
    logits, _ = task.model.apply({"params": params}, original, batch["segment_ids"], positions)
    # Each row holds 10 real tokens; the first 9 predict the next one.
    nll = -np.take_along_axis(log_softmax(logits[:, :9]), original[:, 1:10, None], -1)
    assert float(loss.count) == 4 * 9
    assert float(loss.value()) == pytest.approx(nll.mean(), rel=1e-5)


def test_objective_and_model_must_agree():
    with pytest.raises(ValueError, match="unknown task.objective 'clm'"):
        BertPretrainingTask(config(objective="clm"), PRETRAINING_DATA)
    mismatched = config(objective="ltr")
    mismatched.model.causal = False
    with pytest.raises(ValueError, match="'ltr' needs model.causal = true"):
        BertPretrainingTask(mismatched, PRETRAINING_DATA)


@pytest.mark.slow
def test_padding_predictions_and_rows_carry_no_weight():
    task = BertPretrainingTask(config(), PRETRAINING_DATA)
    params = randomised(task)
    batch = pretraining_batch()
    want_loss, want = task.loss(params, batch, jax.random.key(0), train=False)
    # Padded predictions point anywhere, with any id: nothing changes.
    noisy = dict(batch, mlm_positions=batch["mlm_positions"].copy(),
                 mlm_ids=batch["mlm_ids"].copy())
    noisy["mlm_positions"][:, 3] = [4, 8, 2, 6]
    noisy["mlm_ids"][:, 3] = [11, 12, 13, 14]
    noisy["mlm_ids"][1, 2] = 30
    # Padding rows of an eval batch (next_sentence -1), with arbitrary content and weights.
    pad = pretraining_batch(seed=5, rows=3)
    pad["next_sentence"][:] = -1
    pad["input_ids"][2] = pad["segment_ids"][2] = 0  # As the data pads: all [PAD].
    padded = {k: np.concatenate([noisy[k], pad[k]]) for k in batch}
    got_loss, got = task.loss(params, padded, jax.random.key(0), train=False)
    for name in want:
        np.testing.assert_allclose(got[name].total, want[name].total, rtol=1e-5)
        assert float(got[name].count) == float(want[name].count)
    np.testing.assert_allclose(got_loss.total, want_loss.total, rtol=1e-5)
    assert float(got_loss.count) == float(want_loss.count) == 4.0
    assert np.isfinite(np.asarray(task.predict(params, padded))).all()


@pytest.mark.slow
def test_pretraining_loss_is_the_global_batch_mean_over_shards():
    """Shards of unequal prediction counts: totals and counts added over the devices (here a
    named vmap axis) give the loss of the whole batch."""
    task = BertPretrainingTask(config(), PRETRAINING_DATA)
    params = randomised(task)
    batch = pretraining_batch(rows=4)
    batch["mlm_weights"][0, :] = [1, 1, 1, 1]  # Shard 0: 7 predictions, shard 1: 6.
    whole, _ = task.loss(params, batch, jax.random.key(0), train=False)
    shards = jax.tree.map(lambda x: x.reshape(2, 2, *x.shape[1:]), batch)
    parts, _ = jax.vmap(lambda b: task.loss(params, b, jax.random.key(0), train=False,
                                            axis_name="devices"), axis_name="devices")(shards)
    total, count = float(parts.total.sum()), float(parts.count.sum())
    assert count == 4.0
    assert total / count == pytest.approx(float(whole.value()), rel=1e-5)


def one_train_step(task, batch):
    strategy = parallel.Sharded(devices=jax.devices()[:1])
    tx = optax.adam(1e-3)
    state = strategy.init_state(lambda: create_state(task, tx, 0))
    before = jax.device_get(state.params)
    state, metrics = strategy.train_step(task, tx, 1)(state, strategy.place_batch(batch))
    after = jax.device_get(state.params)
    moved = jax.tree.map(lambda a, b: bool(np.abs(a - b).max() > 0), before, after)
    return jax.device_get(metrics), moved


@pytest.mark.slow
def test_pretraining_train_step():
    task = BertPretrainingTask(config(), PRETRAINING_DATA)
    metrics, moved = one_train_step(task, pretraining_batch())
    assert {"loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy",
            "grad_norm"} <= set(metrics)
    # At initialisation: about log(vocab) + log(2).
    assert metrics["loss"] == pytest.approx(np.log(VOCAB) + np.log(2), rel=0.1)
    assert metrics["loss"] == pytest.approx(metrics["mlm_loss"] + metrics["nsp_loss"], rel=1e-5)
    assert all(jax.tree.leaves(moved["encoder"]["transformer"]))
    assert moved["encoder"]["token_embedding"]["embedding"] and moved["nsp_head"]["kernel"]


def text_batch(seed=0, rows=4):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (rows, SEQ)).astype(np.int32)
    ids[:, 0] = 2
    ids[:, 8:] = 0
    segments = np.zeros_like(ids)
    segments[:, 4:8] = 1
    return {"input_ids": ids, "segment_ids": segments,
            "label": rng.integers(0, len(CLASSES), rows).astype(np.int32)}


def randomised_classifier(task):
    params = task.init(jax.random.key(0))
    kernel = params["classifier"]["kernel"]
    params["classifier"]["kernel"] = jax.random.normal(jax.random.key(1), kernel.shape)
    return params


@pytest.mark.slow
def test_text_classification_loss_matches_numpy_and_skips_padding_rows():
    task = TextClassificationTask(config("text_classification", label_smoothing=0.1), TEXT_DATA)
    params = randomised_classifier(task)
    batch = text_batch()
    pad = text_batch(seed=3, rows=2)
    pad["label"][:] = -1
    padded = {k: np.concatenate([batch[k], pad[k]]) for k in batch}
    loss, metrics = task.loss(params, padded, jax.random.key(0), train=False)
    logits = np.asarray(task.predict(params, batch))
    assert logits.shape == (4, 3)
    targets = np.full((4, 3), 0.1 / 3) + 0.9 * np.eye(3)[batch["label"]]
    want = -(targets * log_softmax(logits)).sum(-1).mean()
    assert float(loss.count) == 4.0
    assert float(loss.value()) == pytest.approx(want, rel=1e-5)
    accuracy = (logits.argmax(-1) == batch["label"]).mean()
    assert float(metrics["accuracy"].value()) == pytest.approx(accuracy, abs=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        TextClassificationTask(config("text_classification", label_smoothing=1.0), TEXT_DATA)


@pytest.mark.slow
def test_text_classification_train_step_and_evaluator():
    task = TextClassificationTask(config("text_classification"), TEXT_DATA)
    metrics, moved = one_train_step(task, text_batch())
    assert {"loss", "accuracy", "grad_norm"} <= set(metrics)
    assert metrics["loss"] == pytest.approx(np.log(3), rel=0.1)
    assert all(jax.tree.leaves(moved["classifier"]))

    params = randomised_classifier(task)
    batch = text_batch()
    batch["label"][3] = -1
    data = types.SimpleNamespace(eval_iter=lambda **kwargs: iter([batch]))
    context = Context(task=task, data=data, strategy=parallel.Sharded(jax.devices()[:1]),
                      batch_size=4)
    evaluator = ClassificationEvaluator(
        "val", ml_collections.ConfigDict(dict(type="classification", top_k=(1, 2))), context)
    got = evaluator.run(params)
    logits = np.asarray(task.predict(params, batch))[:3]
    assert got["top1"] == pytest.approx((logits.argmax(-1) == batch["label"][:3]).mean())
    assert set(got) == {"top1", "top2"}


def tag_batch(seed=0, rows=4):
    """Rows of `[CLS] words [SEP] [PAD]...`, tags on some of the word pieces, -1 elsewhere."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (rows, SEQ)).astype(np.int32)
    ids[:, 0], ids[:, 9], ids[:, 10:] = 2, 3, 0
    labels = np.where(rng.random((rows, SEQ)) < 0.6, rng.integers(0, len(TAGS), (rows, SEQ)), -1)
    labels[:, 0], labels[:, 9:] = -1, -1
    return {"input_ids": ids, "segment_ids": np.zeros_like(ids), "label": labels.astype(np.int32)}


@pytest.mark.slow
def test_token_classification_loss_counts_only_tagged_positions():
    task = TokenClassificationTask(config("token_classification", label_smoothing=0.1),
                                   TAG_DATA)
    params = randomised_classifier(task)
    batch = tag_batch()
    loss, metrics = task.loss(params, batch, jax.random.key(0), train=False)
    logits = np.asarray(task.predict(params, batch))
    assert logits.shape == (4, SEQ, len(TAGS))
    tagged = batch["label"] >= 0
    labels = np.maximum(batch["label"], 0)
    targets = np.full((*labels.shape, len(TAGS)), 0.1 / len(TAGS)) + 0.9 * np.eye(5)[labels]
    want = -(targets * log_softmax(logits)).sum(-1)[tagged].mean()
    assert float(loss.count) == tagged.sum()
    assert float(loss.value()) == pytest.approx(want, rel=1e-5)
    accuracy = (logits.argmax(-1) == labels)[tagged].mean()
    assert float(metrics["accuracy"].value()) == pytest.approx(accuracy, abs=1e-6)

    metrics, moved = one_train_step(TokenClassificationTask(config("token_classification"),
                                                            TAG_DATA), batch)
    assert metrics["loss"] == pytest.approx(np.log(len(TAGS)), rel=0.15)
    assert all(jax.tree.leaves(moved["classifier"]))


def test_tasks_build_from_a_data_spec_and_the_config_sizes():
    spec = DataSpec(vocab_size=VOCAB, class_names=CLASSES)
    pretraining = BertPretrainingTask(config(seq_length=16, max_predictions=3), spec)
    assert pretraining.dummy_batch(2)["mlm_positions"].shape == (2, 3)
    assert pretraining.items_per_example() == (16, "tok")
    text = TextClassificationTask(config("text_classification", seq_length=24), spec)
    assert text.dummy_batch(2)["input_ids"].shape == (2, 24)
    shapes = jax.eval_shape(lambda: create_state(text, optax.adam(1e-3), 0)).params
    assert shapes["classifier"]["kernel"].shape == (16, 3)
    assert text.flops_per_example(shapes) > 0
    with pytest.raises(ValueError, match="data.max_predictions"):
        BertPretrainingTask(config(seq_length=16), spec)


@pytest.mark.parametrize("task_name", ["bert_pretraining", "text_classification",
                                       "token_classification"])
def test_flops_per_example_match_xla(task_name):
    cfg = config(task_name)
    cfg.model.update(variant="tiny", max_position=512, dropout_rate=0.0,
                     attention_dropout_rate=0.0)
    data = types.SimpleNamespace(vocab_size=30_522, seq_length=128, max_predictions=20,
                                 class_names=CLASSES)
    cls = {"bert_pretraining": BertPretrainingTask, "text_classification": TextClassificationTask,
           "token_classification": TokenClassificationTask}[task_name]
    task = cls(cfg, data)
    params = jax.eval_shape(task.init, jax.random.key(0))
    forward = task.flops_per_example(params) / 3
    inputs = task.model_inputs(task.dummy_batch(1))
    cost = jax.jit(task.model.apply).lower({"params": params}, *inputs).compile()
    cost = cost.cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    assert forward <= xla <= 1.1 * forward  # XLA adds the element-wise work.
