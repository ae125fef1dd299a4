"""The COCO AP evaluator on hand-made detections whose AP is known by hand (COCO's
101-point interpolated precision, IoU thresholds 0.50:0.05:0.95), crowd regions included."""

import ml_collections
import numpy as np
import pytest

from jaxformer import config as config_lib
from jaxformer.evaluators.base import Context, build_evaluators
from jaxformer.evaluators.coco_ap import average_precision, to_pixels
from jaxformer.registry import build_data_and_task
from jaxformer.train import parallel
from tests.data.test_coco_detection import mocked_coco
from tests.helpers import ROOT


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


def test_the_objects_own_area_chooses_the_size_range():
    """A 40 x 40 box (1,600 px: medium) around an object of 900 px (small, < 32^2)."""
    truth = image([[0, 0, 40, 40]], [0])
    predicted = [image([[0, 0, 40, 40]], [0], [0.9])]
    by_box = average_precision([truth], predicted, num_classes=1)
    assert by_box["APm"] == pytest.approx(1.0) and by_box["APs"] == -1.0
    by_area = average_precision([dict(truth, area=np.array([900.0]))], predicted,
                                num_classes=1)
    assert by_area["APs"] == pytest.approx(1.0) and by_area["APm"] == -1.0


def test_detections_on_a_crowd_region_are_ignored():
    """A hit ranked below a detection inside a crowd region: counted as a false positive the
    hit's precision is 1/2 (AP 0.5); the crowd region makes COCOeval ignore it (AP 1). A crowd
    region is no box to find, so recall is 1 with one hit."""
    hit, in_crowd = [0, 0, 10, 10], [60, 60, 8, 8]
    predicted = [image([in_crowd, hit], [0, 0], [0.9, 0.8])]
    without = average_precision([image([hit], [0])], predicted, num_classes=1)
    assert without["AP"] == pytest.approx(0.5)
    crowd = dict(image([hit, [50, 50, 30, 30]], [0, 0]), crowd=np.array([False, True]))
    metrics = average_precision([crowd], predicted, num_classes=1)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)


def test_evaluator_passes_coco_crowd_regions(tmp_path):
    """On mocked COCO (tests/data/test_coco_detection.py: a crowd of stop signs covers the
    first image, a stop sign the second): every true box found exactly, and a confident stop
    sign inside the crowd. Counted as a false positive it would halve the stop signs' AP."""
    with mocked_coco(tmp_path) as data_dir:
        config = config_lib.load_config(f"{ROOT}/configs/detr/coco.py:runlocal")
        with config.unlocked():
            config.data.data_dir = str(data_dir)
            config.evals = ml_collections.ConfigDict({"ap": {"type": "coco_ap", "split": "test"}})
        data, task = build_data_and_task(config, None)
        (evaluator,) = build_evaluators(config, Context(task, data, parallel.Sharded(),
                                                        8)).values()

        def predict(params, batch):
            del params
            scores = np.where(batch["box_mask"], 0.5, 0.0).astype(np.float32)
            labels = np.where(batch["box_mask"], batch["labels"], 2)  # 2: no true bicycles.
            boxes = np.array(batch["boxes"])
            boxes[0, -1], labels[0, -1], scores[0, -1] = [0.2, 0.2, 0.1, 0.1], 13, 0.9
            return {"boxes": boxes, "labels": labels, "scores": scores}

        evaluator._predict = predict
        metrics = evaluator.run({})
    assert metrics["AP"] == pytest.approx(1.0)
