"""DETR's bipartite matching (Carion et al., 2020): each real target box of an image is
assigned its own query, the assignment of least total cost. Two solvers find it (they differ
only between assignments whose costs tie within float32 rounding): `matcher="jax"` (the
default), the shortest augmenting path algorithm in `lax` loops on the device, so the step has
no host round trip and JAX's persistent compilation cache can keep it (it never keeps a step
with a host callback); and `matcher="scipy"`, `scipy.optimize.linear_sum_assignment` on the
host through `jax.pure_callback`, in float64.

Targets are padded to a fixed number of slots per image: `target_labels` int `[..., targets]`,
`target_boxes` cxcywh `[..., targets, 4]` and `target_mask` `[..., targets]` (true, or
non-zero, for a real box). Predictions are `logits` `[..., queries, classes + 1]` (the last
class is "no object") and cxcywh `boxes` `[..., queries, 4]`. The leading dimensions `...`
(images, or decoder layers and images) broadcast against each other, and every leading index
is matched on its own. All shapes are static, so the matching runs inside `jit`, `vmap` and
`pmap`; no gradient flows through it.
"""

from __future__ import annotations

import functools
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
MATCHERS = ("jax", "scipy")


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


def _shortest_augmenting_paths(cost: jax.Array, active: jax.Array) -> jax.Array:
    """The least-cost assignment of every active row of `cost` `[rows, columns]` (rows <=
    columns) to its own column: `col4row` int32 `[rows]`, -1 for an inactive row.

    The Jonker-Volgenant shortest augmenting path algorithm as scipy implements it (Crouse,
    2016): each row in turn finds, by Dijkstra's search over reduced costs, the cheapest path
    to a free column and flips the assignment along it; the dual variables keep reduced costs
    non-negative. O(rows * columns^2) work in `lax` loops, so it runs under jit and vmap."""
    rows, columns = cost.shape
    dtype = cost.dtype

    def assign_row(row, state):
        u, v, col4row, row4col = state

        def search(s):
            i, lowest, sink, path_cost, path, seen_rows, seen_columns = s
            seen_rows = seen_rows.at[i].set(True)
            reduced = lowest + cost[i] - u[i] - v
            shorter = ~seen_columns & (reduced < path_cost)
            path = jnp.where(shorter, i, path)
            path_cost = jnp.where(shorter, reduced, path_cost)
            open_cost = jnp.where(seen_columns, jnp.inf, path_cost)
            lowest = open_cost.min()
            # Among the cheapest columns, a free one ends the path now.
            free = (open_cost == lowest) & (row4col < 0)
            j = jnp.where(free.any(), jnp.argmax(free), jnp.argmin(open_cost))
            seen_columns = seen_columns.at[j].set(True)
            is_free = row4col[j] < 0
            return (jnp.where(is_free, i, row4col[j]), lowest, jnp.where(is_free, j, -1),
                    path_cost, path, seen_rows, seen_columns)

        start = (row, jnp.zeros((), dtype), jnp.where(active[row], -1, 0),
                 jnp.full((columns,), jnp.inf, dtype), jnp.full((columns,), -1, jnp.int32),
                 jnp.zeros((rows,), bool), jnp.zeros((columns,), bool))
        _, lowest, sink, path_cost, path, seen_rows, seen_columns = jax.lax.while_loop(
            lambda s: s[2] < 0, search, start)

        # Dual updates (scipy's): the rows and columns the search reached.
        to_row = path_cost[jnp.maximum(col4row, 0)]
        du = jnp.where(seen_rows, lowest - to_row, 0.0).at[row].set(lowest)
        dv = jnp.where(seen_columns, lowest - path_cost, 0.0)
        u = jnp.where(active[row], u + du, u)
        v = jnp.where(active[row], v - dv, v)

        def flip(s):  # One step back along the path from the sink.
            _, j, col4row, row4col = s
            i = path[j]
            return i == row, col4row[i], col4row.at[i].set(j), row4col.at[j].set(i)

        _, _, col4row, row4col = jax.lax.while_loop(
            lambda s: ~s[0], flip, (~active[row], sink, col4row, row4col))
        return u, v, col4row, row4col

    state = (jnp.zeros((rows,), dtype), jnp.zeros((columns,), dtype),
             jnp.full((rows,), -1, jnp.int32), jnp.full((columns,), -1, jnp.int32))
    return jax.lax.fori_loop(0, rows, assign_row, state)[2]


def _assign_on_device(cost: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`linear_sum_assignment` of one image: `cost` `[q, t]`, `mask` `[t]`."""
    queries, targets = cost.shape
    cost = jnp.nan_to_num(cost, nan=_INVALID_COST, posinf=_INVALID_COST,
                          neginf=-_INVALID_COST)
    if targets <= queries:  # A row per target slot; padding slots are left out.
        col4row = _shortest_augmenting_paths(cost.T, mask)
        return jnp.maximum(col4row, 0), col4row >= 0
    # More slots than queries: a row per query, every query takes a slot. Real slots cost
    # less than any padding slot (0), so as many real ones as possible are taken, and among
    # those the cheapest.
    shift = jnp.max(jnp.where(mask, cost, -jnp.inf), initial=0.0) + 1.0
    slot = _shortest_augmenting_paths(jnp.where(mask, cost - shift, 0.0), jnp.ones(queries, bool))
    indices = jnp.zeros(targets, jnp.int32).at[slot].set(jnp.arange(queries, dtype=jnp.int32))
    matched = jnp.zeros(targets, bool).at[slot].set(True) & mask
    return jnp.where(matched, indices, 0), matched


def linear_sum_assignment(cost: jax.Array, mask: jax.Array, matcher: str = "jax"
                          ) -> tuple[jax.Array, jax.Array]:
    """Least-cost one-to-one assignment of queries to the real target slots, per leading index.

    Args:
      cost: `[..., queries, targets]`.
      mask: `[..., targets]`, true for the slots to assign (broadcast against `cost`).
      matcher: "jax" (on the device) or "scipy" (on the host, float64).

    Returns (indices, matched), both `[..., targets]`: the query index given to each slot
    (int32; 0 for an unmatched slot), and whether it got one (a real slot does unless there
    are more real targets than queries).
    """
    if matcher not in MATCHERS:
        raise ValueError(f"unknown matcher {matcher!r}; known: {', '.join(MATCHERS)}")
    shape = cost.shape[:-2] + cost.shape[-1:]
    mask = jnp.broadcast_to(jnp.asarray(mask).astype(bool), shape)
    if matcher == "jax":
        cost = jax.lax.stop_gradient(cost).astype(jnp.float32)
        indices, matched = jax.vmap(_assign_on_device)(cost.reshape(-1, *cost.shape[-2:]),
                                                       mask.reshape(-1, shape[-1]))
        return indices.reshape(shape), matched.reshape(shape)
    out = (jax.ShapeDtypeStruct(shape, jnp.int32), jax.ShapeDtypeStruct(shape, jnp.bool_))
    # The host function takes any leading dimensions, so vmap passes its batch along.
    return jax.pure_callback(_assign_on_host, out, jax.lax.stop_gradient(cost), mask,
                             vmap_method="broadcast_all")


def hungarian_match(logits: jax.Array, boxes: jax.Array, target_labels: jax.Array,
                    target_boxes: jax.Array, target_mask: jax.Array,
                    costs: TermWeights = DETR_WEIGHTS, matcher: str = "jax"
                    ) -> tuple[jax.Array, jax.Array]:
    """DETR's matching of predictions to padded targets (shapes in the module docstring), by
    the `matcher` solver.

    Returns (indices, matched), both `[..., targets]`: the query matched to each target slot
    (int32, 0 for padding) and whether the slot holds a matched real box.
    """
    logits, boxes, target_boxes = jax.lax.stop_gradient((logits, boxes, target_boxes))
    cost = matching_cost(logits, boxes, target_labels, target_boxes, costs)
    mask = jnp.broadcast_to(jnp.asarray(target_mask).astype(bool),
                            cost.shape[:-2] + cost.shape[-1:])
    assign = functools.partial(linear_sum_assignment, matcher=matcher)
    if cost.ndim < 3:
        return assign(cost, mask)
    # Images are matched on the device that holds them.
    return per_batch_shard(assign, batch_axis=cost.ndim - 3)(cost, mask)
