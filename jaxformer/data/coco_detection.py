"""COCO 2017 object detection (Lin et al., 2014) through tfds: 118,287 training and 5,000
validation images with boxes of 80 object categories, DETR's data.

Reads the tfds `coco` data set (config 2017, version 1.1.0) prepared as array_record in
`data_dir` (`tfds build coco/2017 --file_format=array_record`; see
`image_pipeline.tfds_sources`), from its files, so without TensorFlow. A tfds record holds
boxes as relative `(ymin, xmin, ymax, xmax)` and labels 0-79, the categories in the order of
their COCO ids. Here the boxes become pixel `(x0, y0, x1, y1)` for the detection pipeline
(which makes them relative cxcywh) and the labels COCO's category ids 1-90 (`COCO_IDS`), the
91 classes of DETR's classifier (`CLASS_NAMES`: "N/A" for id 0 and the 10 ids COCO leaves
unused). Boxes without area are dropped. Crowd regions (`is_crowd`) travel with their flag:
training leaves them out of the targets, as DETR's `ConvertCocoPolysToMask` drops them, and
the AP evaluator passes them to COCOeval as crowd annotations, which ignore the detections
they cover, as with the official annotations. Each object's `area` (of its segment, scaled
with the image) places it in COCOeval's small / medium / large ranges, as the official
annotations' areas do. An image keeps at most `max_boxes` boxes,
crowd regions included, the first in the data set's order (COCO's annotation ids); the
default, 100 (DETR's number of queries), is more than any COCO 2017 image holds. Images
without boxes are kept, as DETR trains on them.

Training reads `train_split` (default "train"); evaluation reads `eval_split` (default
"validation", 5,000 images) under the names "validation" and "test" (COCO's test images have
no public boxes). A split's files are opened when it is first read, so that a trained model
runs (`jaxformer detect`) from the preprocessing alone, without the data set on disk.
`class_names` (default `CLASS_NAMES`) names the classifier's classes, as an imported
checkpoint names them (`weights.detr`); reading COCO needs its 91.

The preprocessing defaults to DETR's (`PAPER_PREPROCESS`): a random shorter side of 480 to
800 pixels in steps of 32, the longer side at most 1,333, half the time after a random crop
of 384 to 600 pixels a side (of the image as stored, about 480 pixels on its shorter side,
where DETR first resizes it to 400, 500 or 600); a left-right flip; ImageNet's mean and
std. Evaluation resizes to a shorter side of 800 (the longer at most 1,333); images are padded
to 1,333 x 1,333.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from jaxformer.data import common, image_pipeline
from jaxformer.data import detection_pipeline as pipeline
from jaxformer.data.detection_pipeline import DetectionData, DetectionSpec
from jaxformer.data.image_text_pipeline import MappedSource
from jaxformer.data.transforms import Features, decode
from jaxformer.errors import UserError

NAME = "coco/2017:1.1.0"
CHANNELS = 3
# COCO's category id -> name, for the 80 categories of the detection annotations.
CATEGORIES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse",
    20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe",
    27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee",
    35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl",
    52: "banana", 53: "apple", 54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot",
    58: "hot dog", 59: "pizza", 60: "donut", 61: "cake", 62: "chair", 63: "couch",
    64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet", 72: "tv", 73: "laptop",
    74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven",
    80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}
COCO_IDS = np.array(sorted(CATEGORIES), np.int32)  # tfds label -> COCO category id.
NUM_CLASSES = 91  # Ids 0-90, as DETR's `num_classes` for COCO.
CLASS_NAMES = tuple(CATEGORIES.get(i, "N/A") for i in range(NUM_CLASSES))

PAPER_PREPROCESS = {
    "scales": tuple(range(480, 801, 32)), "max_size": 1333, "max_boxes": 100,
    "crop_size": (384, 600), "crop_probability": 0.5, "flip": True,
    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
}
EVAL_SPLITS = ("validation", "test")  # Both read `eval_split`.
DEFAULTS = {"train_split": "train", "eval_split": "validation", "data_dir": "",
            "read_threads": 0, "class_names": CLASS_NAMES}


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
    return config.get(key, DEFAULTS[key])


def preprocess(config: ml_collections.ConfigDict) -> pipeline.DetectionPreprocess:
    """The checked preprocessing of `config`, DETR's (`PAPER_PREPROCESS`) for keys it lacks."""
    values = {**PAPER_PREPROCESS, **{k: v for k, v in config.items() if v is not None}}
    return pipeline.check_detection_config(
        ml_collections.ConfigDict(values), channels=CHANNELS,
        scales=PAPER_PREPROCESS["scales"], crop_size=PAPER_PREPROCESS["crop_size"],
        max_boxes=PAPER_PREPROCESS["max_boxes"])


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, without reading any data."""
    preprocess(config)
    for key in ("train_split", "eval_split"):
        if not isinstance(_get(config, key), str) or not _get(config, key):
            raise ValueError(f"data.{key} must be a tfds split name, got {_get(config, key)!r}")
    common.check_data_dir(_get(config, "data_dir"), default_must_exist=False)
    class_names(config)


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """`data.class_names` (default COCO's `CLASS_NAMES`), checked."""
    names = _get(config, "class_names")
    if (isinstance(names, str) or not names
            or not all(isinstance(name, str) for name in names)):
        raise ValueError(f"data.class_names must be a list of class names, got {names!r}")
    return tuple(names)


def spec(config: ml_collections.ConfigDict) -> DetectionSpec:
    """Class names, padded image shape and box slots, without reading any data."""
    check_config(config)
    result = preprocess(config)
    return DetectionSpec(class_names=class_names(config), image_shape=result.shape,
                         max_boxes=result.max_boxes)


def example(record: dict, max_boxes: int) -> Features:
    """A tfds record as the pipeline's `image`, `boxes` (pixel xyxy), `labels` (COCO ids),
    `crowd` flags and `area`s (of the objects' segments, in pixels), without boxes of no
    area, at most `max_boxes` of them."""
    image = record["image"]
    if not isinstance(image, np.ndarray):
        image = decode(image, CHANNELS)
    height, width = image.shape[:2]
    objects = record["objects"]
    ymin, xmin, ymax, xmax = np.asarray(objects["bbox"], np.float32).reshape(-1, 4).T
    boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=-1)
    labels = COCO_IDS[np.asarray(objects["label"], np.int64).reshape(-1)]
    crowd = np.asarray(objects["is_crowd"], bool).reshape(-1)
    area = np.asarray(objects["area"], np.float32).reshape(-1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    kept = np.flatnonzero(keep)[:max_boxes]
    return {"image": image, "boxes": boxes[kept], "labels": labels[kept], "crowd": crowd[kept],
            "area": area[kept]}


def check_labels(builder) -> None:
    """The prepared data set's labels must be COCO's 80 categories in id order."""
    label = builder.info.features["objects"]["label"]
    if label.num_classes != len(COCO_IDS):
        raise ValueError(f"{NAME} in {builder.data_dir} has {label.num_classes} labels, "
                         f"expected {len(COCO_IDS)}")
    names = tuple(label.names)
    expected = tuple(CATEGORIES[i] for i in COCO_IDS)
    if names != tuple(map(str, range(len(COCO_IDS)))) and names != expected:
        raise ValueError(f"{NAME} in {builder.data_dir} names its labels {names[:3]}..., "
                         f"expected COCO's categories {expected[:3]}...")


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> DetectionData:
    """COCO 2017 as detection data, each split opened when first read.

    Args:
        config: the `data` part of the experiment config: `data_dir` (a tfds data dir; "":
            $TFDS_DATA_DIR or ~/tensorflow_datasets), `train_split`, `eval_split` (tfds split
            strings, slices allowed), `read_threads`, `class_names`, and the preprocessing
            keys of `detection_pipeline.preprocess_from_config` (defaults `PAPER_PREPROCESS`).
        workdir: unused (nothing is derived from the data).
    """
    del workdir
    check_config(config)
    result = preprocess(config)
    names = class_names(config)

    def convert(record: dict, index: int) -> Features:
        del index
        return example(record, result.max_boxes)

    def readable() -> None:
        if len(names) != NUM_CLASSES:
            raise UserError(f"reading {NAME} needs its {NUM_CLASSES} classes; "
                            f"data.class_names has {len(names)}")

    def prepare(builder, source) -> MappedSource:
        check_labels(builder)
        return MappedSource(source, convert)

    train, evaluation = image_pipeline.lazy_tfds_sources(
        NAME, data_dir=_get(config, "data_dir"),
        splits=(_get(config, "train_split"), _get(config, "eval_split")), prepare=prepare,
        readable=readable)
    return DetectionData(
        train_source=train, eval_sources=dict.fromkeys(EVAL_SPLITS, evaluation),
        class_names=names, preprocess=result, features=(*pipeline.FEATURES, "crowd", "area"),
        read_threads=_get(config, "read_threads"))
