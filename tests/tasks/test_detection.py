"""The DETR task on the composed canvases (configs/detr/composed.py:runlocal): its loss is the
set criterion of the model's outputs, padding images of an eval batch change nothing, the
config's freezing rule is the model's, and post-processing never predicts "no object"."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.detr import composed
from jaxformer import config as config_lib
from jaxformer.losses.detection import set_criterion
from jaxformer.models import detr
from jaxformer.registry import build_data_and_task
from jaxformer.tasks.detection import detections
from tests.helpers import ROOT

CONFIG = os.path.join(ROOT, "configs/detr/composed.py")


@pytest.fixture(scope="module")
def setup():
    config = config_lib.load_config(f"{CONFIG}:runlocal")
    data, task = build_data_and_task(config, None)
    params = task.init(jax.random.key(0))
    batch = next(iter(data.eval_iter(batch_size=4, num_batches=1, split="validation")))
    return task, params, {k: jnp.asarray(v) for k, v in batch.items()}


def test_the_loss_is_the_set_criterion_of_the_outputs(setup):
    task, params, batch = setup
    loss, metrics = task.loss(params, batch, jax.random.key(1), train=False)
    outputs = task.model.apply({"params": params}, batch["image"], batch["pixel_mask"])
    expected, _ = set_criterion(outputs["logits"], outputs["boxes"], batch["labels"],
                                batch["boxes"], batch["box_mask"])
    np.testing.assert_allclose(loss.value(), expected.value(), rtol=1e-5)
    assert outputs["logits"].shape[0] == task.model.num_decoder_layers
    assert {"loss_ce", "loss_bbox", "loss_giou", "class_error"} <= metrics.keys()


def test_padding_images_of_an_eval_batch_change_nothing(setup):
    task, params, batch = setup
    padded = {k: jnp.concatenate([v, jnp.zeros_like(v[:2])]) for k, v in batch.items()}
    loss, _ = task.loss(params, batch, jax.random.key(1), train=False)
    loss_padded, _ = task.loss(params, padded, jax.random.key(1), train=False)
    np.testing.assert_allclose(loss_padded.value(), loss.value(), rtol=1e-5)
    assert float(loss_padded.count) == float(loss.count) == len(batch["image"])


def test_config_freezes_what_detr_freezes():
    assert composed.FREEZE == detr.FREEZE


def test_detections_take_the_best_real_class():
    # Query 0 is most likely "no object" (index 2): its detection is class 1 at 0.3.
    probs = jnp.asarray([[0.1, 0.3, 0.6], [0.7, 0.2, 0.1]])
    boxes = jnp.asarray([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]])
    out = detections(jnp.log(probs), boxes)
    np.testing.assert_allclose(out["scores"], [0.3, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(out["labels"], [1, 0])
    np.testing.assert_array_equal(out["boxes"], boxes)
