"""The DETR task on the composed canvases (configs/detr/composed.py:runlocal): its loss is the
set criterion of the model's outputs, padding images of an eval batch change nothing, the
config's freezing rule is the model's, and post-processing never predicts "no object"."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.detr import coco, composed
from jaxformer import config as config_lib
from jaxformer import registry
from jaxformer.inference.workdir import load_run
from jaxformer.losses.detection import set_criterion
from jaxformer.models import detr
from jaxformer.registry import build_data_and_task
from jaxformer.tasks.detection import detections
from jaxformer.train import trainer, transfer
from tests.helpers import ROOT, without_evaluations

CONFIG = os.path.join(ROOT, "configs/detr/composed.py")


@pytest.fixture(scope="module")
def setup():
    config = config_lib.load_config(f"{CONFIG}:runlocal")
    data, task = build_data_and_task(config, None)
    params = task.init(jax.random.key(0))
    batch = next(iter(data.eval_iter(batch_size=4, num_batches=1, split="validation")))
    return task, params, {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.mark.slow
def test_the_loss_is_the_set_criterion_of_the_outputs(setup):
    task, params, batch = setup
    loss, metrics = task.loss(params, batch, jax.random.key(1), train=False)
    outputs = task.model.apply({"params": params}, batch["image"], batch["pixel_mask"])
    expected, _ = set_criterion(outputs["logits"], outputs["boxes"], batch["labels"],
                                batch["boxes"], batch["box_mask"])
    np.testing.assert_allclose(loss.value(), expected.value(), rtol=1e-5)
    assert outputs["logits"].shape[0] == task.model.num_decoder_layers
    assert {"loss_ce", "loss_bbox", "loss_giou", "class_error"} <= metrics.keys()


@pytest.mark.slow
def test_padding_images_of_an_eval_batch_change_nothing(setup):
    task, params, batch = setup
    padded = {k: jnp.concatenate([v, jnp.zeros_like(v[:2])]) for k, v in batch.items()}
    loss, _ = task.loss(params, batch, jax.random.key(1), train=False)
    loss_padded, _ = task.loss(params, padded, jax.random.key(1), train=False)
    np.testing.assert_allclose(loss_padded.value(), loss.value(), rtol=1e-5)
    assert float(loss_padded.count) == float(loss.count) == len(batch["image"])


def test_config_freezes_what_detr_freezes():
    assert composed.FREEZE == detr.FREEZE
    assert coco.get_config().freeze == detr.FREEZE


def test_coco_recipe_is_the_papers():
    """500 epochs of 64 images, the lr dropped 10x after 400; the backbone at a tenth."""
    c = config_lib.load_config(os.path.join(ROOT, "configs/detr/coco.py:init_from=runs/r50"))
    assert (c.model.variant, c.data.name, c.train.batch_size) == ("r50", "coco_detection", 64)
    assert c.train.num_steps == 500 * 1848 and c.optim.decay_steps == 400 * 1848
    assert (c.optim.lr, c.optim.min_lr, c.optim.schedule) == (1e-4, 1e-5, "step")
    assert (c.optim.weight_decay, c.optim.grad_clip) == (1e-4, 0.1)
    assert c.optim.lr_mults == (("backbone/.*", 0.1),)
    assert c.init_from.workdir == "runs/r50" and c.init_from.mapping == (("backbone", "backbone"),)
    assert {(e.type, e.split) for e in c.evals.values()} == {("loss", "validation"),
                                                              ("coco_ap", "validation")}
    assert set(coco.VARIANTS) == set(detr.VARIANTS) - {"cpu"}
    with pytest.raises(config_lib.ConfigError, match="unknown variant 'cpu'; available"):
        config_lib.load_config(os.path.join(ROOT, "configs/detr/coco.py:variant=cpu"))


def test_detections_take_the_best_real_class():
    # Query 0 is most likely "no object" (index 2): its detection is class 1 at 0.3.
    probs = jnp.asarray([[0.1, 0.3, 0.6], [0.7, 0.2, 0.1]])
    boxes = jnp.asarray([[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]])
    out = detections(jnp.log(probs), boxes)
    np.testing.assert_allclose(out["scores"], [0.3, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(out["labels"], [1, 0])
    np.testing.assert_array_equal(out["boxes"], boxes)


@pytest.mark.slow
def test_detr_starts_from_a_trained_backbone_and_keeps_its_frozen_part(tmp_path):
    """configs/detr/backbone.py trains a ResNet classifier; configs/detr/composed.py with
    `backbone=` loads its `backbone` into the DETR and trains only DETR's unfrozen part."""
    source, workdir = str(tmp_path / "backbone"), str(tmp_path / "detr")
    trainer.train(without_evaluations(config_lib.load_config(
        f"{os.path.join(ROOT, 'configs/detr/backbone.py')}:runlocal")), source)
    config = without_evaluations(config_lib.load_config(f"{CONFIG}:runlocal,backbone={source}"))
    assert tuple(config.freeze) == detr.FREEZE
    trainer.train(config, workdir)
    loaded = transfer.flat_paths(jax.device_get(load_run(source).params))
    trained = transfer.flat_paths(jax.device_get(load_run(workdir).params))
    backbone = {p: v for p, v in loaded.items() if p.startswith("backbone/")}
    assert backbone and set(backbone) == {p for p in trained if p.startswith("backbone/")}
    labels = transfer.flat_paths(transfer.frozen_labels(load_run(workdir).params, detr.FREEZE))
    frozen = [p for p in backbone if labels[p] == "frozen"]
    assert frozen and all(np.array_equal(trained[p], backbone[p]) for p in frozen)
    assert any(not np.array_equal(trained[p], backbone[p])
               for p in backbone if p not in frozen)


def test_flops_per_example_are_three_times_the_hand_counted_forward():
    """The `cpu` DETR on a 64 x 64 canvas, counted by hand: 2 FLOPs per multiply-add of every
    convolution and matrix product."""
    config = config_lib.load_config(CONFIG)
    spec = registry.lookup("data", config.data.name).spec(config.data)
    task = registry.lookup("tasks", config.task.name).build(config, spec)
    params = jax.eval_shape(task.init, jax.random.key(0))

    def conv(k, c_in, c_out, side):
        return 2 * k * k * c_in * c_out * side * side

    backbone = (conv(7, 3, 32, 32) + 4 * conv(3, 32, 32, 16)  # stem, layer1
                + conv(3, 32, 64, 8) + 3 * conv(3, 64, 64, 8) + conv(1, 32, 64, 8))  # layer2
    d, m, tokens, queries, classes = 64, 256, 64, 10, 21
    encoder = 2 * (8 * tokens * d * d + 4 * tokens * tokens * d + 4 * tokens * d * m)
    decoder = 2 * (8 * queries * d * d + 4 * queries * queries * d  # self-attention
                   + 4 * queries * d * d + 4 * tokens * d * d  # cross: q, out; k, v
                   + 4 * queries * tokens * d + 4 * queries * d * m)
    heads = 2 * 2 * queries * (d * classes + 2 * d * d + d * 4)
    input_proj = 2 * tokens * 64 * d  # The backbone's 64 channels to width d.
    forward = backbone + input_proj + encoder + decoder + heads
    assert task.flops_per_example(params) == pytest.approx(3 * forward, rel=0.02)
