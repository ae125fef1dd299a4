"""DETR's set criterion: the no-object weight and the box terms on hand-made examples, the
whole loss and its metrics against a float64 reference (matching by brute force), auxiliary
losses, padding images, and the same loss and gradients on one device, under pmap over 8
devices and under jit over a batch sharded on 8 devices (boxes counted over all devices)."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxformer.losses.detection import set_criterion
from jaxformer.losses.matching import TermWeights
from tests.layers.test_boxes import reference_giou
from tests.losses.test_matching import (
    CLASSES,
    PAPER_WEIGHTS,
    brute_force,
    reference_cost,
    to_xyxy,
)

DEVICES, BATCH, QUERIES, TARGETS, LAYERS, FEATURES = 8, 16, 5, 4, 2, 3

criterion = jax.jit(set_criterion, static_argnames=("eos_coef", "weights"))


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def weighted_cross_entropy(logits, labels, class_weights):
    """torch's `F.cross_entropy(logits, labels, weight=class_weights)`: the mean of the
    per-row negative log-likelihoods weighted by their label's class weight."""
    weights = np.asarray(class_weights)[labels]
    nll = -log_softmax(logits)[np.arange(len(labels)), labels]
    return (weights * nll).sum() / weights.sum()


def reference_criterion(logits, boxes, labels, targets, mask, eos_coef=0.1,
                        weights=PAPER_WEIGHTS):
    """(loss, last layer's metric values) of DETR's SetCriterion in float64, every layer
    matched by brute force."""
    layers, images, queries, num_classes = logits.shape
    no_object, num_boxes = num_classes - 1, max(mask.sum(), 1)
    class_weights = np.r_[np.ones(no_object), eos_coef]
    total = 0.0
    for layer in range(layers):
        all_logits, all_labels, l1, giou, correct, cardinality = [], [], 0.0, 0.0, [], []
        for i in range(images):
            cost = reference_cost(logits[layer, i], boxes[layer, i], labels[i], targets[i])
            slots = brute_force(cost, mask[i])[1]
            query_labels = np.full(queries, no_object)
            for slot in np.flatnonzero(slots >= 0):
                query = slots[slot]
                query_labels[query] = labels[i, slot]
                predicted = np.asarray(boxes[layer, i, query], np.float64)
                l1 += np.abs(predicted - targets[i, slot]).sum()
                giou += 1 - reference_giou(to_xyxy(predicted), to_xyxy(targets[i, slot]))[2]
                correct.append(logits[layer, i, query].argmax() == labels[i, slot])
            all_logits.append(logits[layer, i])
            all_labels.append(query_labels)
            objects = (logits[layer, i].argmax(-1) != no_object).sum()
            cardinality.append(abs(objects - mask[i].sum()))
        ce = weighted_cross_entropy(np.concatenate(all_logits), np.concatenate(all_labels),
                                    class_weights)
        total += (weights.class_weight * ce + weights.bbox_weight * l1 / num_boxes
                  + weights.giou_weight * giou / num_boxes)
    metrics = {"loss_ce": ce, "loss_bbox": l1 / max(mask.sum(), 1),
               "loss_giou": giou / max(mask.sum(), 1),
               "class_accuracy": np.mean(correct) if correct else 0.0,
               "class_error": 100 * (1 - np.mean(correct)) if correct else 0.0,
               "cardinality_error": np.mean(cardinality)}
    return total, metrics


def values(loss, metrics):
    return float(loss.value()), {name: float(m.value()) for name, m in metrics.items()}


def random_batch(seed, images=BATCH, layers=LAYERS, counts=None):
    """Predictions `[layers, images, ...]` and padded targets with `counts` real boxes per
    image (scattered among the slots; random when None)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, TARGETS + 1, size=images) if counts is None else counts
    mask = np.zeros((images, TARGETS), bool)
    for i, count in enumerate(counts):
        mask[i, rng.permutation(TARGETS)[:count]] = True
    size = rng.uniform(0.05, 0.4, size=(images, TARGETS, 2))
    targets = np.concatenate([rng.uniform(0.2, 0.8, size=(images, TARGETS, 2)), size], -1)
    targets = np.where(mask[..., None], targets, 0.0).astype(np.float32)
    labels = np.where(mask, rng.integers(0, CLASSES, size=mask.shape), -1).astype(np.int32)
    logits = rng.normal(size=(layers, images, QUERIES, CLASSES + 1)).astype(np.float32)
    boxes = rng.uniform(0.1, 0.6, size=(layers, images, QUERIES, 4)).astype(np.float32)
    return logits, boxes, labels, targets, mask


def test_no_object_weight_on_a_hand_example():
    # One image, three queries, classes {0, 1} and "no object" (2). Query 0 sits exactly on
    # the class-1 target, so it is matched; the others are trained towards no object.
    logits = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]], np.float32)
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]],
                     np.float32)
    batch = (logits[None], boxes[None], np.array([[1, -1]]),
             np.array([[[0.5, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]]], np.float32),
             np.array([[True, False]]))
    e = np.e
    nll = [np.log(2 + e) - 1, np.log(e + 2), np.log(2 + e * e) - 2]
    for eos_coef in (0.1, 1.0):
        by_hand = (nll[0] + eos_coef * (nll[1] + nll[2])) / (1 + 2 * eos_coef)
        reference = weighted_cross_entropy(logits, np.array([1, 2, 2]), [1, 1, eos_coef])
        assert reference == pytest.approx(by_hand, rel=1e-12)
        loss, metrics = values(*criterion(*batch, eos_coef=eos_coef))
        assert metrics["loss_ce"] == pytest.approx(by_hand, rel=1e-6)
        assert loss == pytest.approx(by_hand, rel=1e-6)  # The box terms are 0.
        assert metrics["loss_bbox"] == metrics["loss_giou"] == 0.0
        assert metrics["class_accuracy"] == 1.0 and metrics["class_error"] == 0.0
        assert metrics["cardinality_error"] == 1.0  # Query 1 predicts class 0.
    assert by_hand == pytest.approx(np.mean(nll))  # eos_coef 1: the plain mean.
    assert values(*criterion(*batch))[0] != pytest.approx(np.mean(nll), rel=1e-3)


def test_box_terms_on_a_hand_example():
    # Image 0: shifted by 0.05 (L1 0.05; intersection 0.03, union 0.05 = enclosing box, so
    # GIoU 0.6). Image 1: disjoint, 0.4 apart (L1 0.4; union 0.08, enclosing box 0.12, GIoU
    # -1/3). Their other queries lie far away; a padding slot is left out.
    far = [0.95, 0.95, 0.05, 0.05]
    boxes = np.array([[[0.55, 0.5, 0.2, 0.2], far], [[0.7, 0.3, 0.2, 0.2], far]], np.float32)
    targets = np.array([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]],
                        [[0.3, 0.3, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    mask = np.array([[True, False], [True, False]])
    labels = np.array([[0, 1], [1, -1]])
    logits = np.zeros((2, 2, CLASSES + 1), np.float32)
    l1, giou = (0.05 + 0.4) / 2, ((1 - 0.6) + (1 + 1 / 3)) / 2
    ce = np.log(CLASSES + 1)  # Uniform predictions.
    for weights in (PAPER_WEIGHTS, TermWeights(2.0, 1.0, 3.0)):
        loss, metrics = values(*criterion(logits, boxes, labels, targets, mask,
                                              weights=weights))
        assert metrics["loss_bbox"] == pytest.approx(l1, rel=1e-5)
        assert metrics["loss_giou"] == pytest.approx(giou, rel=1e-5)
        assert metrics["loss_ce"] == pytest.approx(ce, rel=1e-6)
        assert loss == pytest.approx(weights.class_weight * ce + weights.bbox_weight * l1
                                     + weights.giou_weight * giou, rel=1e-5)


def test_loss_and_metrics_match_the_reference():
    batch = random_batch(0, images=6, counts=[0, 1, 4, 2, 3, 0])
    loss, metrics = values(*jax.jit(set_criterion)(*batch))
    wanted, wanted_metrics = reference_criterion(*batch)
    assert loss == pytest.approx(wanted, rel=1e-5)
    assert metrics == pytest.approx(wanted_metrics, rel=1e-5, abs=1e-6)
    custom = {"eos_coef": 0.3, "weights": TermWeights(2.0, 1.0, 0.5)}
    assert values(*criterion(*batch, **custom))[0] == pytest.approx(
        reference_criterion(*batch, **custom)[0], rel=1e-5)


def test_auxiliary_losses_are_summed_over_layers():
    logits, boxes, labels, targets, mask = random_batch(1, images=4, layers=3)
    loss, metrics = criterion(logits, boxes, labels, targets, mask)
    per_layer = [criterion(logits[k], boxes[k], labels, targets, mask) for k in range(3)]
    assert float(loss.value()) == pytest.approx(
        sum(float(layer[0].value()) for layer in per_layer), rel=1e-6)
    assert values(loss, metrics)[1] == values(*per_layer[-1])[1]  # The last layer's.
    repeated = criterion(np.repeat(logits[-1:], 3, 0), np.repeat(boxes[-1:], 3, 0),
                             labels, targets, mask)[0]
    assert float(repeated.value()) == pytest.approx(3 * float(per_layer[-1][0].value()),
                                                    rel=1e-6)


def test_padding_images_are_left_out():
    logits, boxes, labels, targets, mask = random_batch(2, images=5, counts=[2, 3, 1, 0, 4])
    keep = np.array([True, False, True, True, False])
    padded = criterion(logits, boxes, labels, targets, mask, image_mask=keep)
    kept = criterion(logits[:, keep], boxes[:, keep], labels[keep], targets[keep],
                         mask[keep])
    assert float(padded[0].count) == 3.0
    got, wanted = values(*padded), values(*kept)
    assert got[0] == pytest.approx(wanted[0], rel=1e-6)
    assert got[1] == pytest.approx(wanted[1], rel=1e-6)


# A linear map of per-query features gives the predictions, so that gradients reach shared
# parameters through every image of the global batch.
def init_params():
    rng = np.random.default_rng(3)
    return {"classes": jnp.asarray(rng.normal(size=(FEATURES, CLASSES + 1)), jnp.float32),
            "boxes": jnp.asarray(rng.normal(size=(FEATURES, 4)), jnp.float32)}


def global_batch():
    """Features `[layers, batch, queries, features]` and targets; the first two devices'
    images have no boxes, the others' differ in number."""
    counts = [0, 0, 0, 0, 1, 4, 2, 3, 4, 4, 1, 0, 3, 2, 1, 4]
    _, _, labels, targets, mask = random_batch(4, counts=counts)
    features = np.random.default_rng(5).normal(size=(LAYERS, BATCH, QUERIES, FEATURES))
    return features.astype(np.float32), labels, targets, mask


def predict(params, features):
    return features @ params["classes"], jax.nn.sigmoid(features @ params["boxes"])


def local_totals(params, features, labels, targets, mask, axis_name, matcher="jax"):
    """(loss total, count, d total / d params) on this device."""
    def total(params):
        loss, _ = set_criterion(*predict(params, features), labels, targets, mask, axis_name,
                                matcher=matcher)
        return loss.total, loss.count

    (total, count), grads = jax.value_and_grad(total, has_aux=True)(params)
    return total, count, grads


def single_device(params, *batch, matcher="jax"):
    total, count, grads = local_totals(params, *batch, None, matcher)
    return jax.tree.map(lambda a: a / count, (total, grads))


def under_pmap(params, features, labels, targets, mask):
    def step(params, *batch):
        total, count, grads = jax.lax.psum(local_totals(params, *batch, "data"), "data")
        return jax.tree.map(lambda a: a / count, (total, grads))

    def shard(x, axis=0):
        x = np.moveaxis(x, axis, 0)
        return x.reshape(DEVICES, BATCH // DEVICES, *x.shape[1:])

    out = jax.pmap(step, axis_name="data", in_axes=(None, 0, 0, 0, 0))(
        params, np.moveaxis(shard(features, 1), 1, 2), shard(labels), shard(targets),
        shard(mask))
    return jax.tree.map(lambda a: np.asarray(a)[0], out)


def sharded(features, labels, targets, mask):
    """The global batch split over a mesh of `DEVICES` devices, and the mesh."""
    mesh = Mesh(np.array(jax.devices()[:DEVICES]), ("data",))
    features = jax.device_put(features, NamedSharding(mesh, PartitionSpec(None, "data")))
    rows = NamedSharding(mesh, PartitionSpec("data"))
    labels, targets, mask = (jax.device_put(x, rows) for x in (labels, targets, mask))
    assert len(features.sharding.device_set) == DEVICES
    return (features, labels, targets, mask), mesh


def under_sharded_jit(params, *batch, set_mesh=False):
    batch, mesh = sharded(*batch)
    if not set_mesh:
        return jax.device_get(jax.jit(single_device)(params, *batch))
    with jax.set_mesh(mesh):  # As train.parallel.Sharded traces its steps.
        return jax.device_get(jax.jit(single_device)(params, *batch))


def assert_close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=2e-5, atol=1e-6)


@pytest.mark.slow
def test_loss_and_gradients_do_not_depend_on_the_split():
    assert jax.device_count() >= DEVICES
    params, batch = init_params(), global_batch()
    reference = jax.device_get(jax.jit(single_device)(params, *batch))
    logits, boxes = jax.device_get(predict(params, batch[0]))
    assert float(reference[0]) == pytest.approx(
        reference_criterion(logits, boxes, *batch[1:])[0], rel=1e-5)
    for leaf in jax.tree.leaves(reference[1]):
        assert np.abs(leaf).max() > 1e-3  # A real gradient, not zeros on both sides.
    assert_close(under_pmap(params, *batch), reference)
    assert_close(under_sharded_jit(params, *batch), reference)
    assert_close(under_sharded_jit(params, *batch, set_mesh=True), reference)


def test_with_the_mesh_set_each_device_matches_its_own_images():
    """The host callback of the scipy matcher takes one device's share of the batch, instead
    of the whole batch gathered onto one device; the device matcher has no callback."""
    batch, mesh = sharded(*global_batch())
    with jax.set_mesh(mesh):
        hlo = {m: jax.jit(functools.partial(single_device, matcher=m)).lower(
            init_params(), *batch).compile().as_text() for m in ("scipy", "jax")}
    shapes = re.findall(r"= \(s32\[([\d,]+)\][^=]*\) custom-call\(", hlo["scipy"])
    assert shapes == [f"{LAYERS},{BATCH // DEVICES},{TARGETS}"]
    assert "callback" in hlo["scipy"] and "callback" not in hlo["jax"]
