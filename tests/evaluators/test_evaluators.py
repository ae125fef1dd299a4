"""The loss and classification evaluators against the same numbers computed with numpy, one
example at a time, on one device; metrics reduce exactly over 8 devices and padded batches."""

import os

import jax
import numpy as np
import pytest

from jaxformer import config as config_lib
from jaxformer.evaluators.base import Context, build_evaluators
from jaxformer.registry import build_data_and_task
from jaxformer.train import parallel
from tests.helpers import ROOT


def setup(config_path, *overrides):
    config = config_lib.load_config(os.path.join(ROOT, config_path))
    config_lib.apply_overrides(config, list(overrides))
    data, task = build_data_and_task(config, None)
    params = jax.device_get(task.init(jax.random.key(3)))
    return config, data, task, params


def run_evaluators(config, data, task, params, batch_size):
    strategy = parallel.Sharded()
    evaluators = build_evaluators(config, Context(task, data, strategy, batch_size))
    placed = strategy.place_state(params)
    return {name: e.run(placed) for name, e in evaluators.items()}


def log_softmax(logits):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.slow
def test_loss_evaluator_matches_numpy_cross_entropy():
    config, data, task, params = setup(
        "configs/gpt/gpt2.py:runlocal", "evals.val.num_batches=3")
    got = run_evaluators(config, data, task, params, batch_size=8)["val"]
    losses, correct = [], []
    for batch in data.eval_iter(batch_size=8, num_batches=3):
        for inputs, targets in zip(batch["inputs"], batch["targets"]):
            logits = np.asarray(task.model.apply({"params": params}, inputs[None]))[0]
            logp = log_softmax(logits)
            losses.extend(-logp[np.arange(len(targets)), targets])
            correct.extend(logits.argmax(-1) == targets)
    assert len(losses) == 3 * 8 * 32
    assert got["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert got["perplexity"] == pytest.approx(np.exp(np.mean(losses)), rel=1e-5)
    assert got["accuracy"] == pytest.approx(np.mean(correct), abs=1e-7)


@pytest.mark.slow
def test_classification_evaluator_counts_every_test_image_once():
    config, data, task, params = setup(
        "configs/vit/fashion_mnist.py:runlocal,source=subset", "evals.test.num_batches=-1")
    head = params["head"]["kernel"]  # Zero at initialisation: make the logits differ.
    params["head"]["kernel"] = np.random.default_rng(0).normal(size=head.shape).astype(head.dtype)
    # 2,000 test images in batches of 24: the last batch is padded with label -1.
    got = run_evaluators(config, data, task, params, batch_size=24)["test"]
    ranks = []
    for batch in data.eval_iter(batch_size=200, num_batches=-1):
        logits = np.asarray(task.model.apply({"params": params}, batch["image"]))
        for row, label in zip(logits, batch["label"]):
            if label >= 0:
                ranks.append(int((row >= row[label]).sum()) - 1)  # Others at least as high.
    ranks = np.array(ranks)
    assert len(ranks) == 2000
    assert got["top1"] == pytest.approx((ranks < 1).mean(), abs=1e-7)
    assert got["top5"] == pytest.approx((ranks < 5).mean(), abs=1e-7)
    assert 0.0 < got["top1"] < got["top5"] < 1.0  # Random weights: neither trivial.


def test_unknown_evaluator_type_lists_the_types():
    config, data, task, params = setup("configs/gpt/gpt2.py:runlocal", "evals.val.type=perplex")
    from jaxformer.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="available: bleu, captioning, classification, "
                                               "coco_ap, entity_f1, few_shot, linear_probe, loss, "
                                               "retrieval, squad, zero_shot$"):
        run_evaluators(config, data, task, params, batch_size=8)


@pytest.mark.parametrize("kind,message", [
    ("coco_ap", "coco_ap needs a detection task and data"),
    ("few_shot", "no few-shot splits"),
    ("captioning", "captioning needs a captioning task"),
])
def test_evaluators_of_other_families_refuse_a_language_model(kind, message):
    config = config_lib.load_config(os.path.join(ROOT, "configs/gpt/gpt2.py:runlocal"))
    with config.unlocked():
        config.evals = {"other": {"type": kind}}
    data, task = build_data_and_task(config, None)
    with pytest.raises(ValueError, match=message):
        build_evaluators(config, Context(task, data, parallel.Sharded(), 8))
