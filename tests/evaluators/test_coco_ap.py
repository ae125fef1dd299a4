"""The COCO AP evaluator on hand-made detections whose AP is known by hand (COCO's
101-point interpolated precision, IoU thresholds 0.50:0.05:0.95)."""

import numpy as np
import pytest

from jaxformer.evaluators.coco_ap import average_precision, to_pixels


def image(boxes, labels, scores=None):
    out = {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
           "labels": np.asarray(labels, np.int32)}
    if scores is not None:
        out["scores"] = np.asarray(scores, np.float32)
    return out


def test_perfect_detections_have_ap_1():
    truth = [image([[0, 0, 20, 20], [30, 30, 40, 50]], [0, 1]), image([[5, 5, 10, 10]], [1])]
    predicted = [dict(t, scores=np.ones(len(t["labels"]))) for t in truth]
    metrics = average_precision(truth, predicted, num_classes=2)
    assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == pytest.approx(1.0)
    assert metrics["APs"] == metrics["APm"] == pytest.approx(1.0)  # 100, 400 px; 2000 px
    assert metrics["APl"] == -1.0  # No box of more than 96^2 pixels.


def test_a_missed_box_and_a_false_positive_ranked_below_a_hit():
    """Recall 1/2 at precision 1, then a false positive: the 51 recall points 0..0.5 have
    precision 1, the others 0: AP = 51/101 at every IoU threshold."""
    truth = [image([[0, 0, 10, 10], [50, 50, 10, 10]], [0, 0])]
    predicted = [image([[0, 0, 10, 10], [80, 80, 5, 5]], [0, 0], [0.9, 0.8])]
    metrics = average_precision(truth, predicted, num_classes=1)
    assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == pytest.approx(51 / 101)


def test_a_box_of_iou_0_625_counts_at_three_of_ten_thresholds():
    truth = [image([[0, 0, 10, 10]], [0])]
    predicted = [image([[0, 0, 10, 6.25]], [0], [0.5])]
    metrics = average_precision(truth, predicted, num_classes=1)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(0.0)
    assert metrics["AP"] == pytest.approx(0.3)


def test_the_wrong_class_is_no_hit():
    truth = [image([[0, 0, 10, 10]], [0])]
    metrics = average_precision(truth, [image([[0, 0, 10, 10]], [1], [0.9])], num_classes=2)
    assert metrics["AP"] == pytest.approx(0.0)


def test_relative_cxcywh_to_coco_pixels():
    boxes = np.asarray([[0.5, 0.25, 0.5, 0.5]])
    np.testing.assert_allclose(to_pixels(boxes, np.asarray([40, 80])), [[20, 0, 40, 20]])
