"""DETR's bipartite matching (Carion et al., 2020): each real target box of an image is
assigned its own query, the assignment of least total cost (the Hungarian algorithm,
`scipy.optimize.linear_sum_assignment`, run on the host through `jax.pure_callback`).

Targets are padded to a fixed number of slots per image: `target_labels` int `[..., targets]`,
`target_boxes` cxcywh `[..., targets, 4]` and `target_mask` `[..., targets]` (true, or
non-zero, for a real box). Predictions are `logits` `[..., queries, classes + 1]` (the last
class is "no object") and cxcywh `boxes` `[..., queries, 4]`. The leading dimensions `...`
(images, or decoder layers and images) broadcast against each other, and every leading index
is matched on its own. All shapes are static, so the matching runs inside `jit`, `vmap` and
`pmap`; no gradient flows through it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from jaxformer.layers.boxes import cxcywh_to_xyxy, generalized_box_iou
from jaxformer.tasks.base import per_batch_shard

# Stands in for a NaN or infinite cost (a diverged model), which scipy refuses: the
# assignment is then arbitrary but defined, and the loss itself reports the NaN.
_INVALID_COST = 1e12


class TermWeights(NamedTuple):
    """Weights of the class, L1 box and GIoU terms; DETR's defaults serve both as the matching
    costs and as the loss weights."""

    class_weight: float = 1.0
    bbox_weight: float = 5.0
    giou_weight: float = 2.0


DETR_WEIGHTS = TermWeights()  # Class 1, L1 5, GIoU 2, as in the paper.


def matching_cost(logits: jax.Array, boxes: jax.Array, target_labels: jax.Array,
                  target_boxes: jax.Array, costs: TermWeights = DETR_WEIGHTS) -> jax.Array:
    """The cost `[..., queries, targets]` of assigning each query to each target slot:
    `class_weight * -p(target class) + bbox_weight * L1(cxcywh) + giou_weight * -GIoU`."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # [..., q, c + 1]
    target_onehot = jax.nn.one_hot(target_labels, probs.shape[-1], dtype=jnp.float32)
    class_cost = -probs @ jnp.swapaxes(target_onehot, -1, -2)  # [..., q, t]
    boxes, target_boxes = boxes.astype(jnp.float32), target_boxes.astype(jnp.float32)
    l1_cost = jnp.abs(boxes[..., :, None, :] - target_boxes[..., None, :, :]).sum(-1)
    giou_cost = -generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(target_boxes))
    return (costs.class_weight * class_cost + costs.bbox_weight * l1_cost
            + costs.giou_weight * giou_cost)


def _assign_on_host(cost: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`linear_sum_assignment` of every leading index of `cost` `[..., q, t]` over the real
    columns of `mask` `[..., t]`."""
    cost, mask = np.asarray(cost, np.float64), np.asarray(mask, bool)
    shape = mask.shape
    cost = np.nan_to_num(cost.reshape(-1, *cost.shape[-2:]), nan=_INVALID_COST,
                         posinf=_INVALID_COST, neginf=-_INVALID_COST)
    indices = np.zeros((len(cost), shape[-1]), np.int32)
    matched = np.zeros((len(cost), shape[-1]), bool)
    for i, (image_cost, image_mask) in enumerate(zip(cost, mask.reshape(-1, shape[-1]))):
        columns = np.flatnonzero(image_mask)
        rows, picked = scipy.optimize.linear_sum_assignment(image_cost[:, columns])
        indices[i, columns[picked]] = rows
        matched[i, columns[picked]] = True
    return indices.reshape(shape), matched.reshape(shape)


def linear_sum_assignment(cost: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Least-cost one-to-one assignment of queries to the real target slots, per leading index.

    Args:
      cost: `[..., queries, targets]`.
      mask: `[..., targets]`, true for the slots to assign (broadcast against `cost`).

    Returns (indices, matched), both `[..., targets]`: the query index given to each slot
    (int32; 0 for an unmatched slot), and whether it got one (a real slot does unless there
    are more real targets than queries).
    """
    shape = cost.shape[:-2] + cost.shape[-1:]
    mask = jnp.broadcast_to(jnp.asarray(mask).astype(bool), shape)
    out = (jax.ShapeDtypeStruct(shape, jnp.int32), jax.ShapeDtypeStruct(shape, jnp.bool_))
    # The host function takes any leading dimensions, so vmap passes its batch along.
    return jax.pure_callback(_assign_on_host, out, jax.lax.stop_gradient(cost), mask,
                             vmap_method="broadcast_all")


def hungarian_match(logits: jax.Array, boxes: jax.Array, target_labels: jax.Array,
                    target_boxes: jax.Array, target_mask: jax.Array,
                    costs: TermWeights = DETR_WEIGHTS) -> tuple[jax.Array, jax.Array]:
    """DETR's matching of predictions to padded targets (shapes in the module docstring).

    Returns (indices, matched), both `[..., targets]`: the query matched to each target slot
    (int32, 0 for padding) and whether the slot holds a matched real box.
    """
    logits, boxes, target_boxes = jax.lax.stop_gradient((logits, boxes, target_boxes))
    cost = matching_cost(logits, boxes, target_labels, target_boxes, costs)
    mask = jnp.broadcast_to(jnp.asarray(target_mask).astype(bool),
                            cost.shape[:-2] + cost.shape[-1:])
    if cost.ndim < 3:
        return linear_sum_assignment(cost, mask)
    # Images are matched on the device that holds them.
    return per_batch_shard(linear_sum_assignment, batch_axis=cost.ndim - 3)(cost, mask)
