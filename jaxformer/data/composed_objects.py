"""Composed objects: the objects of the composed detection canvases (`composed_detection`),
one per canvas, labelled with its class; image classification over the same 20 classes.

DETR's backbone starts from ImageNet classification; this is its counterpart for the
composed canvases: a ResNet trained here (`configs/detr/backbone.py`) is loaded by the DETR
of `configs/detr/composed.py`. Canvases, objects and splits are those of
`composed_detection` with exactly one object each (so the three splits still share no
source object), and `label` is the object's class.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from jaxformer.data import common, composed_detection, image_pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.composed_detection import CHANNELS, CLASS_NAMES, ComposedSource
from jaxformer.data.image_pipeline import ImageData
from jaxformer.data.transforms import Features

DEFAULTS = {"canvas_size": 64, "min_object_size": 12, "max_object_size": 32,
            "background": "textured", "canvas_seed": 0, "train_examples": 100_000,
            "eval_examples": 1000, "fashion_mnist_source": "subset", "data_dir": "",
            "read_threads": 0}


class ObjectSource(ComposedSource):
    """Canvases of one object: `{"image": uint8 [S, S, 3], "label": int32}`."""

    def __getitem__(self, index: int) -> Features:
        canvas = self.canvas(int(index))
        return {"image": canvas.image, "label": np.int32(canvas.labels[0])}


def _get(config: ml_collections.ConfigDict, key: str):
    return config.get(key, DEFAULTS[key])


def _layout_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config`'s canvas keys as `composed_detection` reads them, one object per canvas."""
    keys = ("canvas_size", "min_object_size", "max_object_size", "background")
    return ml_collections.ConfigDict({**{k: _get(config, k) for k in keys},
                                      "min_objects": 1, "max_objects": 1})


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, without composing any canvas."""
    layout = composed_detection.layout_from_config(_layout_config(config))
    image_pipeline.check_image_config(config, channels=CHANNELS, image_size=layout.canvas_size)
    for key in ("canvas_seed", "train_examples", "eval_examples"):
        common.require_int(config, key, minimum=0 if key == "canvas_seed" else 1,
                           default=DEFAULTS[key])
    common.require_choice(config, "fashion_mnist_source", composed_detection.FASHION_SOURCES,
                          default=DEFAULTS["fashion_mnist_source"])


def _preprocess(config: ml_collections.ConfigDict) -> image_pipeline.Preprocess:
    return image_pipeline.preprocess_from_config(config, channels=CHANNELS,
                                                 image_size=_get(config, "canvas_size"))


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """The class names and the shape preprocessing gives images, without composing any."""
    check_config(config)
    return DataSpec(class_names=CLASS_NAMES, image_shape=_preprocess(config).shape)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> ImageData:
    """One-object canvases as image classification data; evaluation reads `validation` by
    default, then `test`.

    Args:
        config: the `data` part of the experiment config: `canvas_size` (64),
            `min_object_size` (12), `max_object_size` (32), `background`, `canvas_seed`,
            `train_examples`, `eval_examples` (per eval split), `fashion_mnist_source` and
            `data_dir` as `composed_detection` reads them; `read_threads`; and the
            preprocessing keys of `image_pipeline.preprocess_from_config`.
        workdir: unused.
    """
    del workdir
    check_config(config)
    layout = composed_detection.layout_from_config(_layout_config(config))
    # This module's defaults, for the keys `config` leaves out.
    train, evaluation = composed_detection.split_sources(
        ml_collections.ConfigDict({**DEFAULTS, **config}), layout, ObjectSource)
    return ImageData(train_source=train, eval_sources=evaluation, class_names=CLASS_NAMES,
                     preprocess=_preprocess(config), read_threads=_get(config, "read_threads"))
