"""CIFAR-10 (Krizhevsky, 2009) through tfds: 32x32 colour images of 10 classes.

Reads the tfds `cifar10` data set prepared as array_record in `data_dir` (see
`image_pipeline.tfds_sources`): the train split (50,000) for training, the test split
(10,000) for evaluation, unless `train_split` / `eval_split` say otherwise. A split's files
are opened when it is first read.
"""

from __future__ import annotations

import ml_collections

from jaxformer.data import common, image_pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.image_pipeline import ImageData

# The label order of the data set (its batches.meta.txt), which tfds keeps.
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
IMAGE_SIZE = 32
CHANNELS = 3


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, without reading any data."""
    image_pipeline.check_image_config(config, channels=CHANNELS, image_size=IMAGE_SIZE)
    common.check_data_dir(config.get("data_dir", ""), default_must_exist=False)


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """The class names and the shape preprocessing gives images, without reading any."""
    check_config(config)
    preprocess = image_pipeline.preprocess_from_config(config, channels=CHANNELS,
                                                       image_size=IMAGE_SIZE)
    return DataSpec(class_names=CLASS_NAMES, image_shape=preprocess.shape)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> ImageData:
    """CIFAR-10 as image classification data.

    Args:
        config: the `data` part of the experiment config: `data_dir` (a tfds data dir; ""
            means $TFDS_DATA_DIR or ~/tensorflow_datasets), optionally `train_split` and
            `eval_split` (tfds split strings), `read_threads`, and the preprocessing keys of
            `image_pipeline.preprocess_from_config`.
        workdir: unused.
    """
    del workdir
    check_config(config)
    eval_split = config.get("eval_split", "test")
    train, evaluation = image_pipeline.lazy_tfds_sources(
        "cifar10", data_dir=config.get("data_dir", ""),
        splits=(config.get("train_split", "train"), eval_split))
    preprocess = image_pipeline.preprocess_from_config(config, channels=CHANNELS,
                                                       image_size=IMAGE_SIZE)
    return ImageData(train_source=train, eval_sources={eval_split: evaluation},
                     class_names=CLASS_NAMES, preprocess=preprocess,
                     read_threads=config.get("read_threads", 0))
