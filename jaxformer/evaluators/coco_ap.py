"""`type="coco_ap"`: COCO box AP of a detection run's predictions (`pycocotools`' COCOeval).

Every query of the last decoder layer is a detection, with its best class other than "no
object" and that class's probability as the score (DETR's post-processing,
`tasks.detection.detections`); COCOeval keeps the 100 best per image. Boxes, predicted and
true, are taken in the pixels of the evaluation view (the `size` of each example, before
padding), where the area ranges of APs/APm/APl (32^2 and 96^2 pixels) apply to the true
objects' `area` where the data has one (COCO's segment areas), else to their boxes'. Crowd
regions (the data's `crowd_mask`: COCO's `iscrowd` annotations) are crowd annotations to
COCOeval: the detections they cover are neither hits nor false positives.

Options: `split` (default the data's first eval split), `num_batches` (-1: the whole
split). Reports `AP` (mean over IoU 0.50:0.95), `AP50`, `AP75`, `APs`, `APm`, `APl`, on
COCO's 0-1 scale (-1 where no box falls in an area range). Like the two-tower evaluators,
every process computes the whole split on its first device (the eval splits are small).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable

import jax
import ml_collections
import numpy as np

from jaxformer.data.box_transforms import cxcywh_to_xyxy
from jaxformer.data.detection_pipeline import DetectionData
from jaxformer.evaluators.base import Context, Evaluator
from jaxformer.tasks.detection import DetectionTask, detections

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def to_pixels(boxes: np.ndarray, size: np.ndarray) -> np.ndarray:
    """cxcywh relative to an image of `size` (height, width) -> COCO's (x, y, w, h) pixels."""
    xyxy = cxcywh_to_xyxy(boxes, float(size[0]), float(size[1]))
    return np.concatenate([xyxy[..., :2], xyxy[..., 2:] - xyxy[..., :2]], axis=-1)


def average_precision(ground_truth: Iterable[dict], predictions: Iterable[dict],
                      num_classes: int) -> dict[str, float]:
    """COCO box AP of `predictions` against `ground_truth`.

    `ground_truth`: one dict per image, `boxes` `[n, 4]` (x, y, w, h pixels), `labels` `[n]`
    and optionally `crowd` `[n]` (crowd regions) and `area` `[n]` (default: the boxes');
    `predictions`: one dict per image (the same order), `boxes` `[m, 4]`, `labels` `[m]`,
    `scores` `[m]`.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, (truth, predicted) in enumerate(zip(ground_truth, predictions, strict=True)):
        images.append({"id": image_id})
        boxes = np.asarray(truth["boxes"], np.float32).reshape(-1, 4)
        crowd = truth.get("crowd", np.zeros(len(boxes), bool))
        area = truth.get("area", boxes[:, 2] * boxes[:, 3])
        for box, label, is_crowd, a in zip(boxes, truth["labels"], crowd, area, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(label), "bbox": [float(v) for v in box],
                                "area": float(a), "iscrowd": int(is_crowd)})
        for box, label, score in zip(predicted["boxes"], predicted["labels"],
                                     predicted["scores"], strict=True):
            results.append({"image_id": image_id, "category_id": int(label),
                            "bbox": [float(v) for v in box], "score": float(score)})
    if not images:
        raise ValueError("no images to evaluate")
    truth = COCO()
    truth.dataset = {"images": images, "annotations": annotations,
                     "categories": [{"id": c} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        if not results:
            return dict.fromkeys(METRICS, 0.0)
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(value) for name, value in zip(METRICS, evaluation.stats, strict=False)}


class CocoApEvaluator(Evaluator):
    def __init__(self, name: str, config: ml_collections.ConfigDict, context: Context):
        super().__init__(name, config, context)
        if not (isinstance(context.task, DetectionTask)
                and isinstance(context.data, DetectionData)):
            raise ValueError(f"evals.{name}: coco_ap needs a detection task and data")
        self.split = config.get("split", "") or None
        self.num_batches = config.get("num_batches", -1)
        self._predict = jax.jit(lambda params, batch: detections(
            **context.task.predict(params, batch)))

    def run(self, params) -> dict[str, float]:
        params = self.context.strategy.host_state(params)
        truths, predictions = [], []
        for batch in self.context.data.eval_iter(
                batch_size=self.context.batch_size, num_batches=self.num_batches,
                split=self.split, process_index=0, process_count=1):
            batch = {k: np.asarray(v) for k, v in batch.items()}
            out = jax.device_get(self._predict(params, batch))
            crowds = batch.get("crowd_mask", np.zeros_like(batch["box_mask"]))
            for i in np.flatnonzero(batch["pixel_mask"].any(axis=(1, 2))):
                real = batch["box_mask"][i] | crowds[i]
                truth = {"boxes": to_pixels(batch["boxes"][i][real], batch["size"][i]),
                         "labels": batch["labels"][i][real], "crowd": crowds[i][real]}
                if "area" in batch:
                    truth["area"] = batch["area"][i][real]
                truths.append(truth)
                predictions.append({"boxes": to_pixels(out["boxes"][i], batch["size"][i]),
                                    "labels": out["labels"][i], "scores": out["scores"][i]})
        return average_precision(truths, predictions, self.context.task.num_classes)


def build(name: str, config: ml_collections.ConfigDict, context: Context) -> CocoApEvaluator:
    return CocoApEvaluator(name, config, context)
