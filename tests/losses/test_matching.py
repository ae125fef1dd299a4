"""Hungarian matching: the cost against a float64 reference, the assignment against brute
force over all permutations (padding, more queries than targets, fewer, none), and the same
answer under jit, vmap, with leading layer dimensions and through a gradient, for both
solvers; the on-device one against scipy on many random problems."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jaxformer.losses.matching import (
    MATCHERS,
    TermWeights,
    hungarian_match,
    linear_sum_assignment,
    matching_cost,
)
from tests.layers.test_boxes import reference_giou

CLASSES = 3  # Real classes; logits have one more, "no object".
PAPER_WEIGHTS = TermWeights(class_weight=1.0, bbox_weight=5.0, giou_weight=2.0)


def to_xyxy(box):
    cx, cy, w, h = np.asarray(box, np.float64)
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def reference_cost(logits, boxes, labels, target_boxes, costs=PAPER_WEIGHTS):
    """DETR's matching cost of one image, `[queries, targets]`, in float64 loops."""
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    cost = np.zeros((len(boxes), len(target_boxes)))
    for i, j in itertools.product(range(len(boxes)), range(len(target_boxes))):
        l1 = np.abs(np.asarray(boxes[i], np.float64) - target_boxes[j]).sum()
        giou = reference_giou(to_xyxy(boxes[i]), to_xyxy(target_boxes[j]))[2]
        class_prob = probs[i, labels[j]] if 0 <= labels[j] < probs.shape[-1] else 0.0
        cost[i, j] = (-costs.class_weight * class_prob + costs.bbox_weight * l1
                      - costs.giou_weight * giou)
    return cost


def brute_force(cost, mask):
    """The least total cost of a one-to-one matching of min(queries, real targets) pairs, and
    the query of each real target slot (-1 when unmatched), over all permutations."""
    queries, columns = cost.shape[0], np.flatnonzero(mask)
    best, best_assignment = np.inf, None
    if len(columns) <= queries:
        candidates = (dict(zip(columns, rows))
                      for rows in itertools.permutations(range(queries), len(columns)))
    else:
        candidates = (dict(zip(picked, range(queries)))
                      for picked in itertools.permutations(columns, queries))
    for assignment in candidates:
        total = sum(cost[row, column] for column, row in assignment.items())
        if total < best:
            best, best_assignment = total, assignment
    slots = np.full(len(mask), -1)
    for column, row in best_assignment.items():
        slots[column] = row
    return best, slots


def random_case(rng, queries, mask):
    """Predictions and padded targets of one image; padding slots hold label -1 and a
    zero box."""
    mask = np.asarray(mask, bool)
    centers = rng.uniform(0.2, 0.8, size=(queries, 2))
    boxes = np.concatenate([centers, rng.uniform(0.05, 0.4, size=(queries, 2))], -1)
    targets = np.concatenate([rng.uniform(0.2, 0.8, size=(len(mask), 2)),
                              rng.uniform(0.05, 0.4, size=(len(mask), 2))], -1)
    labels = np.where(mask, rng.integers(0, CLASSES, size=len(mask)), -1)
    return (rng.normal(size=(queries, CLASSES + 1)).astype(np.float32),
            boxes.astype(np.float32), labels.astype(np.int32),
            np.where(mask[:, None], targets, 0.0).astype(np.float32), mask)


def stack(cases):
    return tuple(np.stack(parts) for parts in zip(*cases))


MASKS = [[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 1, 0]]


def test_cost_matches_reference():
    logits, boxes, labels, targets, _ = random_case(np.random.default_rng(0), 5, [1, 1, 0, 1])
    costs = TermWeights(1.5, 4.0, 3.0)
    cost = matching_cost(jnp.asarray(logits), jnp.asarray(boxes), jnp.asarray(labels),
                         jnp.asarray(targets), costs)
    np.testing.assert_allclose(cost, reference_cost(logits, boxes, labels, targets, costs),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("matcher", MATCHERS)
@pytest.mark.parametrize("queries,masks", [(5, MASKS), (4, MASKS), (3, [[1, 1, 1, 1]] * 3)],
                         ids=["more_queries", "as_many", "fewer_queries"])
def test_matching_equals_brute_force(queries, masks, matcher):
    rng = np.random.default_rng(queries)
    logits, boxes, labels, targets, mask = stack(random_case(rng, queries, m) for m in masks)
    match = functools.partial(hungarian_match, matcher=matcher)
    indices, matched = jax.jit(match)(logits, boxes, labels, targets, mask)
    assert indices.shape == matched.shape == mask.shape and indices.dtype == jnp.int32
    for i in range(len(masks)):
        cost = reference_cost(logits[i], boxes[i], labels[i], targets[i])
        best, slots = brute_force(cost, mask[i])
        np.testing.assert_array_equal(matched[i], slots >= 0)
        np.testing.assert_array_equal(np.where(matched[i], indices[i], -1), slots)
        assert (indices[i][~matched[i]] == 0).all()  # Harmless padding indices.
        chosen = cost[indices[i][matched[i]], np.flatnonzero(matched[i])].sum()
        assert chosen == pytest.approx(best, rel=1e-6, abs=1e-9)
    assert not matched[np.asarray(masks).sum(-1) == 0].any()


@pytest.mark.slow
@pytest.mark.parametrize("matcher", MATCHERS)
def test_batch_vmap_and_layers_agree_with_single_images(matcher):
    match = functools.partial(hungarian_match, matcher=matcher)
    rng = np.random.default_rng(7)
    logits, boxes, labels, targets, mask = stack(random_case(rng, 6, m) for m in MASKS)
    singles = [match(logits[i], boxes[i], labels[i], targets[i], mask[i])
               for i in range(len(MASKS))]
    wanted = tuple(np.stack(parts) for parts in zip(*singles))
    batched = jax.jit(match)(logits, boxes, labels, targets, mask)
    mapped = jax.jit(jax.vmap(match))(logits, boxes, labels, targets, mask)
    for got in (batched, mapped):
        np.testing.assert_array_equal(got[0], wanted[0])
        np.testing.assert_array_equal(got[1], wanted[1])

    # Decoder layers [layers, batch, ...] against shared targets [batch, ...]: each layer is
    # matched on its own (layer 0 is the batch above).
    other_logits, other_boxes, *_ = stack(random_case(rng, 6, m) for m in MASKS)
    layered = jax.jit(match)(np.stack([logits, other_logits]), np.stack([boxes, other_boxes]),
                             labels, targets, mask)
    other = match(other_logits, other_boxes, labels, targets, mask)
    np.testing.assert_array_equal(layered[0], np.stack([wanted[0], other[0]]))
    np.testing.assert_array_equal(layered[1], np.stack([wanted[1], other[1]]))
    assert (layered[0][0] != layered[0][1]).any()  # The layers are matched differently.


@pytest.mark.parametrize("matcher", MATCHERS)
def test_gradient_passes_around_the_matching(matcher):
    match = functools.partial(hungarian_match, matcher=matcher)
    logits, boxes, labels, targets, mask = random_case(np.random.default_rng(3), 5,
                                                       [1, 0, 1, 1])

    def matched_box_sum(boxes):
        indices, matched = match(logits, boxes, labels, targets, mask)
        return (boxes[indices].sum(-1) * matched).sum()

    grad = jax.jit(jax.grad(matched_box_sum))(jnp.asarray(boxes))
    indices, _ = match(logits, boxes, labels, targets, mask)
    wanted = np.zeros_like(boxes)
    wanted[np.asarray(indices)[mask]] = 1.0  # Only the gather's own gradient.
    np.testing.assert_array_equal(grad, wanted)


@pytest.mark.parametrize("matcher", MATCHERS)
def test_non_finite_costs_still_give_an_assignment(matcher):
    cost = jnp.array([[[np.nan, 1.0], [np.inf, 0.0], [2.0, -np.inf]]])
    indices, matched = jax.jit(functools.partial(linear_sum_assignment, matcher=matcher))(
        cost, jnp.array([[True, True]]))
    assert matched.all() and len(set(np.asarray(indices[0]).tolist())) == 2


@pytest.mark.parametrize("queries,targets", [(100, 12), (10, 10), (4, 7)],
                         ids=["detr_like", "square", "more_slots"])
def test_device_solver_finds_scipys_optimum(queries, targets):
    """Random real and integer (tied) costs with random padding: the on-device assignment
    is one-to-one over the real slots, matches as many as scipy and costs as little."""
    rng = np.random.default_rng(queries + targets)
    trials = 64
    costs = np.concatenate([rng.normal(size=(trials, queries, targets)),
                            rng.integers(0, 3, size=(trials, queries, targets))]
                           ).astype(np.float32)
    masks = rng.random((2 * trials, targets)) < rng.uniform(0.2, 1.0, (2 * trials, 1))
    solve = jax.jit(functools.partial(linear_sum_assignment, matcher="jax"))
    indices, matched = (np.asarray(x) for x in solve(costs, masks))
    for cost, mask, index, match in zip(costs.astype(np.float64), masks, indices, matched):
        columns = np.flatnonzero(mask)
        rows, picked = scipy.optimize.linear_sum_assignment(cost[:, columns])
        assert not match[~mask].any() and match.sum() == len(rows)
        assert len(set(index[match].tolist())) == match.sum()
        chosen = cost[index[match], np.flatnonzero(match)].sum()
        assert chosen == pytest.approx(cost[rows, columns[picked]].sum(), rel=1e-5, abs=1e-5)


def test_device_solver_compiles_without_a_host_callback():
    cost = jnp.zeros((2, 6, 3))
    mask = jnp.ones((2, 3), bool)
    text = {m: jax.jit(functools.partial(linear_sum_assignment, matcher=m)).lower(cost, mask)
            .as_text() for m in MATCHERS}
    assert "callback" in text["scipy"] and "callback" not in text["jax"]


def test_unknown_matcher_is_refused():
    with pytest.raises(ValueError, match="unknown matcher 'lapjv'"):
        linear_sum_assignment(jnp.zeros((3, 2)), jnp.ones(2, bool), matcher="lapjv")
