"""DETR's set-prediction loss (Carion et al., 2020; `SetCriterion` of facebookresearch/detr).

Every decoder layer's predictions are matched to the targets on their own
(`losses.matching`), then scored with

  class_weight * CE + bbox_weight * L1 / num_boxes + giou_weight * (1 - GIoU) / num_boxes,

summed over layers (the last layer's is the main loss, the others the auxiliary losses).
CE is the cross-entropy of every query against its matched target's class, or "no object"
(the last class) when unmatched, as a mean weighted by the class weights (`eos_coef` for no
object, 1 for the others). L1 (of cxcywh boxes) and 1 - GIoU are summed over the matched
pairs. Both normalisers are taken over the global batch: the sum of the class weights, and
`num_boxes`, the number of real target boxes on every device (at least 1). `axis_name`
sums them over devices (under `pmap`; None when the batch is global), so the loss and its
gradient do not depend on how the batch is split. With gradient accumulation they are those
of the micro-batch.

The loss is an `Average` over images: its total is this device's share of the global loss
times the global number of images, so that totals and counts added over devices give the
loss. The metrics are the last layer's unweighted terms (`loss_ce`, `loss_bbox`,
`loss_giou`), the class accuracy of the matched queries (`class_accuracy`, and DETR's
`class_error` in percent) and `cardinality_error`, the mean absolute difference per image
between the number of queries not predicting "no object" and the number of targets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxformer.layers.boxes import cxcywh_to_xyxy, paired_generalized_box_iou
from jaxformer.losses.matching import DETR_WEIGHTS, TermWeights, hungarian_match
from jaxformer.tasks.base import Average, Metrics, global_sum


def _query_labels(indices: jax.Array, matched: jax.Array, target_labels: jax.Array,
                  num_queries: int, no_object: int) -> jax.Array:
    """The class each query is trained towards, `[..., queries]`: its matched target's, or
    `no_object`."""
    assignment = jax.nn.one_hot(indices, num_queries, dtype=jnp.int32) * matched[..., None]
    labels = (assignment * target_labels[..., None]).sum(-2)  # [..., q]
    return jnp.where(assignment.sum(-2) > 0, labels, no_object)


def _layer_sums(logits: jax.Array, boxes: jax.Array, target_labels: jax.Array,
                target_boxes: jax.Array, indices: jax.Array, matched: jax.Array,
                images: jax.Array, eos_coef: float) -> dict[str, jax.Array]:
    """Per-layer sums `[layers]` over this device's images: weighted cross-entropy
    (`class`), class weights (`class_weight`), L1 and 1 - GIoU of the matched pairs."""
    no_object = logits.shape[-1] - 1
    labels = _query_labels(indices, matched, target_labels, logits.shape[-2], no_object)
    class_weights = jnp.where(labels == no_object, eos_coef, 1.0) * images[:, None]
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    matched_boxes = jnp.take_along_axis(boxes, indices[..., None], axis=-2)  # [l, b, t, 4]
    pairs = matched.astype(jnp.float32)
    l1 = jnp.abs(matched_boxes - target_boxes).sum(-1)
    giou = paired_generalized_box_iou(cxcywh_to_xyxy(matched_boxes),
                                      cxcywh_to_xyxy(target_boxes))
    return {"class": (class_weights * cross_entropy).sum((1, 2)),
            "class_weight": class_weights.sum((1, 2)),
            "l1": (pairs * l1).sum((1, 2)), "giou": (pairs * (1.0 - giou)).sum((1, 2))}


def _last_layer_metrics(logits: jax.Array, indices: jax.Array, matched: jax.Array,
                        target_labels: jax.Array, real: jax.Array,
                        images: jax.Array) -> Metrics:
    """Class accuracy and error on the matched queries, cardinality error per image."""
    predicted = logits.argmax(-1)  # [b, q]
    correct = jnp.take_along_axis(predicted, indices, axis=-1) == target_labels
    accuracy = Average.of(correct, matched)
    error = Average(100.0 * (accuracy.count - accuracy.total), accuracy.count)
    objects = (predicted != logits.shape[-1] - 1).sum(-1)
    cardinality = jnp.abs(objects - real.sum(-1))
    return {"class_accuracy": accuracy, "class_error": error,
            "cardinality_error": Average.of(cardinality, images)}


def set_criterion(
    logits: jax.Array, boxes: jax.Array, target_labels: jax.Array, target_boxes: jax.Array,
    target_mask: jax.Array, axis_name: str | None = None, *,
    image_mask: jax.Array | None = None, eos_coef: float = 0.1,
    weights: TermWeights = DETR_WEIGHTS, costs: TermWeights = DETR_WEIGHTS,
    matcher: str = "jax",
) -> tuple[Average, Metrics]:
    """DETR's loss summed over decoder layers, as an `Average` over images.

    Args:
      logits: `[layers, batch, queries, classes + 1]` (or without `layers`), the last class
        "no object".
      boxes: cxcywh `[layers, batch, queries, 4]` (or without `layers`).
      target_labels: int `[batch, targets]`, padded to a fixed number of slots.
      target_boxes: cxcywh `[batch, targets, 4]`.
      target_mask: `[batch, targets]`, true (non-zero) for a real box.
      axis_name: the device axis under `pmap`; None when the batch is global.
      image_mask: optional `[batch]`, false (0) for padding images of an eval batch.
      eos_coef: the class weight of "no object".
      weights: the loss weights of the class, L1 and GIoU terms.
      costs: the matching costs of the same terms.
      matcher: the assignment solver, "jax" (device) or "scipy" (host).

    Returns (loss, metrics), metrics of the last layer (see the module docstring).
    """
    if logits.ndim == 3:
        logits, boxes = logits[None], boxes[None]
    logits, boxes = logits.astype(jnp.float32), boxes.astype(jnp.float32)
    target_boxes = jnp.asarray(target_boxes, jnp.float32)
    images = (jnp.ones(target_mask.shape[:1], jnp.float32) if image_mask is None
              else jnp.asarray(image_mask).astype(jnp.float32))
    real = jnp.asarray(target_mask).astype(jnp.float32) * images[:, None]  # [b, t]

    indices, matched = hungarian_match(logits, boxes, target_labels, target_boxes, real > 0,
                                       costs, matcher)  # [l, b, t]
    sums = _layer_sums(logits, boxes, target_labels, target_boxes, indices, matched, images,
                       eos_coef)
    class_norm = jnp.maximum(global_sum(sums["class_weight"], axis_name), 1e-9)
    num_boxes = jnp.maximum(global_sum(real.sum(), axis_name), 1.0)
    per_layer = (weights.class_weight * sums["class"] / class_norm
                 + (weights.bbox_weight * sums["l1"] + weights.giou_weight * sums["giou"])
                 / num_boxes)
    loss = Average(global_sum(images.sum(), axis_name) * per_layer.sum(), images.sum())

    metrics = {"loss_ce": Average(sums["class"][-1], sums["class_weight"][-1]),
               "loss_bbox": Average(sums["l1"][-1], real.sum()),
               "loss_giou": Average(sums["giou"][-1], real.sum())}
    metrics.update(_last_layer_metrics(logits[-1], indices[-1], matched[-1], target_labels,
                                       real, images))
    return loss, metrics
