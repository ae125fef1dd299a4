"""Box geometry for set-prediction detection (DETR): conversions, areas, IoU and generalized
IoU (Rezatofighi et al., 2019).

Boxes are `[..., 4]` arrays, either `(cx, cy, w, h)` ("cxcywh", what DETR predicts) or
`(x0, y0, x1, y1)` ("xyxy", with x0 <= x1 and y0 <= y1), normally in image-relative
coordinates in [0, 1]. Degenerate boxes (zero width or height) are allowed: where a ratio
has a zero denominator (the union of two zero-area boxes, or their enclosing box) the ratio
is taken as 0, so values and gradients stay finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
    """`(cx, cy, w, h)` -> `(x0, y0, x1, y1)`, both `[..., 4]`."""
    center, size = boxes[..., :2], boxes[..., 2:]
    return jnp.concatenate([center - size / 2, center + size / 2], axis=-1)


def xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
    """`(x0, y0, x1, y1)` -> `(cx, cy, w, h)`, both `[..., 4]`."""
    low, high = boxes[..., :2], boxes[..., 2:]
    return jnp.concatenate([(low + high) / 2, high - low], axis=-1)


def box_area(boxes: jax.Array) -> jax.Array:
    """Areas `[...]` of xyxy boxes `[..., 4]`."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """`numerator / denominator`, 0 where the denominator is 0, with finite gradients."""
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


def _overlap_area(low: jax.Array, high: jax.Array) -> jax.Array:
    """Area of the box with corners `low`, `high` (`[..., 2]`), 0 when they do not overlap."""
    size = jnp.maximum(high - low, 0.0)
    return size[..., 0] * size[..., 1]


def _iou_and_union(boxes1: jax.Array, boxes2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Element-wise (broadcasting) IoU and union area of xyxy boxes."""
    intersection = _overlap_area(jnp.maximum(boxes1[..., :2], boxes2[..., :2]),
                                 jnp.minimum(boxes1[..., 2:], boxes2[..., 2:]))
    union = box_area(boxes1) + box_area(boxes2) - intersection
    return _safe_divide(intersection, union), union


def _generalized_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Element-wise (broadcasting) GIoU of xyxy boxes: IoU minus the share of the smallest
    enclosing box that the union leaves empty."""
    iou, union = _iou_and_union(boxes1, boxes2)
    enclosing = _overlap_area(jnp.minimum(boxes1[..., :2], boxes2[..., :2]),
                              jnp.maximum(boxes1[..., 2:], boxes2[..., 2:]))
    return iou - _safe_divide(enclosing - union, enclosing)


def _pairs(boxes1: jax.Array, boxes2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`[..., n, 4]` and `[..., m, 4]` laid out to broadcast to `[..., n, m, 4]`."""
    return boxes1[..., :, None, :], boxes2[..., None, :, :]


def box_iou(boxes1: jax.Array, boxes2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pairwise IoU and union area, both `[..., n, m]`, of xyxy boxes `[..., n, 4]` and
    `[..., m, 4]`."""
    return _iou_and_union(*_pairs(boxes1, boxes2))


def generalized_box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Pairwise generalized IoU `[..., n, m]`, in [-1, 1], of xyxy boxes `[..., n, 4]` and
    `[..., m, 4]`."""
    return _generalized_iou(*_pairs(boxes1, boxes2))


def paired_generalized_box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Generalized IoU `[...]` of corresponding xyxy boxes `[..., 4]` (broadcasting), e.g. of
    matched prediction-target pairs."""
    return _generalized_iou(boxes1, boxes2)
