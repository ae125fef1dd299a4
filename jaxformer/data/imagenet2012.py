"""ILSVRC-2012 (ImageNet-1k) through tfds: 1.28M training and 50,000 validation images.

Reads the tfds `imagenet2012` data set prepared as array_record in `data_dir` (tfds needs
ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in its manual download directory to
prepare it; see `image_pipeline.tfds_sources`). The train split is for training and the
validation split for evaluation, unless `train_split` / `eval_split` say otherwise
(big_vision holds out `train[99%:]` as "minival"). Classes are named by their WordNet synset
ids (`n01440764`...), in the order of the data set's labels. A split's files are opened when
it is first read, so that a trained or imported model classifies images without ImageNet.
"""

from __future__ import annotations

import ml_collections

from jaxformer.data import common, image_pipeline
from jaxformer.data.common import DataSpec
from jaxformer.data.image_pipeline import ImageData

NUM_CLASSES = 1000
IMAGE_SIZE = 224
CHANNELS = 3


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for settings `build` would reject, without reading any data."""
    image_pipeline.check_image_config(config, channels=CHANNELS, image_size=IMAGE_SIZE)
    common.check_data_dir(config.get("data_dir", ""), default_must_exist=False)


def class_names() -> tuple[str, ...]:
    """The synset ids of the classes in label order, from the label file that tfds ships and
    its imagenet2012 builder names the labels with."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

    return tuple(tfds.features.ClassLabel(names_file=imagenet_common.label_names_file()).names)


def spec(config: ml_collections.ConfigDict) -> DataSpec:
    """The class names and the shape preprocessing gives images, without reading any data."""
    check_config(config)
    preprocess = image_pipeline.preprocess_from_config(config, channels=CHANNELS,
                                                       image_size=IMAGE_SIZE)
    return DataSpec(class_names=class_names(), image_shape=preprocess.shape)


def build(config: ml_collections.ConfigDict, *, workdir: str | None) -> ImageData:
    """ImageNet-1k as image classification data.

    Args:
        config: the `data` part of the experiment config: `data_dir` (a tfds data dir; ""
            means $TFDS_DATA_DIR or ~/tensorflow_datasets), optionally `train_split` and
            `eval_split` (tfds split strings), `read_threads`, and the preprocessing keys of
            `image_pipeline.preprocess_from_config`.
        workdir: unused.
    """
    del workdir
    check_config(config)
    eval_split = config.get("eval_split", "validation")
    names = class_names()

    def prepare(builder, source):
        found = len(builder.info.features["label"].names)
        if found != NUM_CLASSES:
            raise ValueError(f"imagenet2012 in {builder.data_dir} has {found} classes, "
                             f"expected {NUM_CLASSES}")
        return source

    train, evaluation = image_pipeline.lazy_tfds_sources(
        "imagenet2012", data_dir=config.get("data_dir", ""),
        splits=(config.get("train_split", "train"), eval_split), prepare=prepare)
    preprocess = image_pipeline.preprocess_from_config(config, channels=CHANNELS,
                                                       image_size=IMAGE_SIZE)
    return ImageData(train_source=train, eval_sources={eval_split: evaluation},
                     class_names=names, preprocess=preprocess,
                     read_threads=config.get("read_threads", 0))
