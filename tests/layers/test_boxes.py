"""Box geometry: conversions, IoU and generalized IoU against hand-computed values and a
float64 loop reference, and finite values and gradients on degenerate boxes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxformer.layers.boxes import (
    box_area,
    box_iou,
    cxcywh_to_xyxy,
    generalized_box_iou,
    paired_generalized_box_iou,
    xyxy_to_cxcywh,
)

SQUARE = [0.0, 0.0, 0.5, 0.5]
# (name, other box, IoU with SQUARE, GIoU with SQUARE), worked out by hand.
CASES = [
    ("identical", SQUARE, 1.0, 1.0),
    # Union 0.25 + 0.125; enclosing box 1 x 0.5.
    ("disjoint", [0.75, 0.0, 1.0, 0.5], 0.0, -(0.5 - 0.375) / 0.5),
    # Inside: intersection 0.0625, union and enclosing box the square.
    ("nested", [0.125, 0.125, 0.375, 0.375], 0.25, 0.25),
    # Sharing an edge: no intersection, the union fills the enclosing box.
    ("touching", [0.5, 0.0, 1.0, 0.5], 0.0, 0.0),
    # Intersection 0.0625, union 0.4375, enclosing box 0.5625.
    ("overlapping", [0.25, 0.25, 0.75, 0.75], 1 / 7, 1 / 7 - 0.125 / 0.5625),
    ("point inside", [0.25, 0.25, 0.25, 0.25], 0.0, 0.0),
    ("segment inside", [0.1, 0.2, 0.4, 0.2], 0.0, 0.0),
    # Union 0.25, enclosing box 1 x 1.
    ("point outside", [1.0, 1.0, 1.0, 1.0], 0.0, -0.75),
]
# Both boxes degenerate: (box, other box, GIoU). A zero union or enclosing area counts as 0.
DEGENERATE_PAIRS = [
    ([0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25], 0.0),  # Same point.
    ([0.25, 0.25, 0.25, 0.25], [1.0, 1.0, 1.0, 1.0], -1.0),  # Union 0, enclosing box > 0.
    ([0.0, 0.5, 0.5, 0.5], [0.25, 0.5, 1.0, 0.5], 0.0),  # Collinear segments: both 0.
]


def reference_giou(a, b):
    """IoU, union and GIoU of two xyxy boxes, float64 arithmetic (non-degenerate boxes)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    enclosing = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iou = intersection / union
    return iou, union, iou - (enclosing - union) / enclosing


def random_xyxy(rng, n):
    corners = rng.uniform(0, 1, size=(n, 2, 2))
    return np.concatenate([corners.min(1), corners.max(1)], -1).astype(np.float32)


def test_conversions():
    cxcywh = jnp.array([[0.5, 0.5, 0.2, 0.4], [0.3, 0.6, 0.0, 0.0]])
    xyxy = np.array([[0.4, 0.3, 0.6, 0.7], [0.3, 0.6, 0.3, 0.6]])
    np.testing.assert_allclose(cxcywh_to_xyxy(cxcywh), xyxy, atol=1e-7)
    np.testing.assert_allclose(xyxy_to_cxcywh(jnp.asarray(xyxy)), cxcywh, atol=1e-7)
    np.testing.assert_allclose(box_area(jnp.asarray(xyxy)), [0.08, 0.0], atol=1e-7)
    boxes = jnp.asarray(random_xyxy(np.random.default_rng(0), 12).reshape(3, 4, 4))
    np.testing.assert_allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes, atol=1e-6)


@pytest.mark.parametrize("name,box,iou,giou", CASES, ids=[c[0] for c in CASES])
def test_hand_computed_cases(name, box, iou, giou):
    for first, second in [(SQUARE, box), (box, SQUARE)]:  # Both are symmetric.
        pair_iou, _ = box_iou(jnp.array([first]), jnp.array([second]))
        assert float(pair_iou[0, 0]) == pytest.approx(iou, abs=1e-6)
        pair_giou = generalized_box_iou(jnp.array([first]), jnp.array([second]))
        assert float(pair_giou[0, 0]) == pytest.approx(giou, abs=1e-6)
        assert float(paired_generalized_box_iou(jnp.array(first), jnp.array(second))) \
            == pytest.approx(giou, abs=1e-6)


def test_both_boxes_degenerate():
    first = jnp.array([pair[0] for pair in DEGENERATE_PAIRS])
    second = jnp.array([pair[1] for pair in DEGENERATE_PAIRS])
    np.testing.assert_array_equal(jnp.diagonal(box_iou(first, second)[0]), 0.0)
    np.testing.assert_allclose(paired_generalized_box_iou(first, second),
                               [pair[2] for pair in DEGENERATE_PAIRS], atol=1e-6)


def test_pairwise_matches_reference_with_leading_dims():
    rng = np.random.default_rng(1)
    boxes1, boxes2 = random_xyxy(rng, 2 * 5).reshape(2, 5, 4), random_xyxy(rng, 2 * 3)
    boxes2 = boxes2.reshape(2, 3, 4)
    iou, union = box_iou(jnp.asarray(boxes1), jnp.asarray(boxes2))
    giou = generalized_box_iou(jnp.asarray(boxes1), jnp.asarray(boxes2))
    assert giou.shape == iou.shape == (2, 5, 3)
    wanted = np.array([[[reference_giou(a, b) for b in boxes2[k]] for a in boxes1[k]]
                       for k in range(2)])  # [2, 5, 3, (iou, union, giou)]
    np.testing.assert_allclose(iou, wanted[..., 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(union, wanted[..., 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(giou, wanted[..., 2], rtol=1e-5, atol=1e-6)
    assert (wanted[..., 0] > 0).any() and (wanted[..., 2] < 0).any()  # Both kinds of pair.
    paired = paired_generalized_box_iou(jnp.asarray(boxes1[:, :3]), jnp.asarray(boxes2))
    np.testing.assert_allclose(paired, np.diagonal(giou, axis1=1, axis2=2), rtol=1e-6)


@pytest.mark.slow
def test_gradients_are_finite_on_degenerate_boxes():
    boxes = [SQUARE] + [case[1] for case in CASES] + [b for pair in DEGENERATE_PAIRS
                                                      for b in pair[:2]]
    xyxy = jnp.array(boxes)

    def total(a, b):
        return generalized_box_iou(a, b).sum() + box_iou(a, b)[0].sum()

    for grad in jax.grad(total, argnums=(0, 1))(xyxy, xyxy):
        assert np.isfinite(grad).all()
    # Zero-size cxcywh predictions, as a box head can output, against real and zero targets.
    predictions = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.2, 0.3, 0.0, 0.1], [0.2, 0.3, 0.1, 0.0]])
    targets = jnp.array([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.2, 0.2], [0.9, 0.9, 0.0, 0.0]])

    def loss(p):
        return (1 - paired_generalized_box_iou(cxcywh_to_xyxy(p), cxcywh_to_xyxy(targets))).sum()

    grad = jax.grad(loss)(predictions)
    assert np.isfinite(grad).all()
    assert np.abs(grad[1]).max() > 0  # A zero-width box against a real one still learns.


@pytest.mark.slow
def test_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        boxes1, boxes2 = (jnp.asarray(random_xyxy(rng, 4), jnp.float64) for _ in range(2))
        check_grads(generalized_box_iou, (boxes1, boxes2), order=1, modes=["rev"])
