"""The backbone of the composed-canvas DETR, trained first on classification of the same
objects, one per 64 x 64 canvas (`data.composed_objects`): DETR's ImageNet pretraining at
CPU scale.

  jaxformer train --config=configs/detr/backbone.py --workdir=runs/detr_backbone
  jaxformer train --config=configs/detr/composed.py:backbone=runs/detr_backbone \\
      --workdir=runs/detr_composed

A ResNet (`models.resnet`, the DETR variant's backbone) with global average pooling and a
linear classifier over the 20 classes; AdamW lr 1e-3 with warmup and cosine decay; flipped
training views. Its `backbone` parameters are what the DETR loads.

Variants (arg string):
  variant=NAME   the ResNet (`models.resnet.VARIANTS`): `tiny` (default, the `cpu` DETR's),
                 `resnet18`, `resnet34`, `resnet50`, `resnet101`.
  steps=N        training steps (default 3,000 of 64 canvases).
  runlocal       a few steps on a few canvases (smoke tests).
"""

import ml_collections

from configs import common
from jaxformer.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="tiny", steps=3000, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(name="resnet", variant=arg.variant))
    config.task = ml_collections.ConfigDict(dict(name="classification", label_smoothing=0.0))
    config.data = ml_collections.ConfigDict(dict(
        name="composed_objects", canvas_size=64, min_object_size=12, max_object_size=32,
        background="textured", canvas_seed=0, train_examples=100_000, eval_examples=1000,
        fashion_mnist_source="subset", data_dir="", flip=True, mean=(0.5,), std=(0.5,),
        read_threads=1))
    batch_size, num_steps = 64, arg.steps
    config.train = common.train(batch_size=batch_size, num_steps=num_steps, log_every=50,
                                checkpoint_every=1000)
    config.evals = ml_collections.ConfigDict()
    config.evals.val = common.evaluator("classification", every_steps=max(num_steps // 3, 1),
                                        split="validation", num_batches=-1, top_k=(1, 5))
    config.evals.test = common.evaluator("classification", split="test", num_batches=-1,
                                         top_k=(1, 5))
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, min_lr=1e-5, schedule="cosine", warmup_steps=num_steps // 20,
        decay_steps=num_steps, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, grad_clip=1.0))

    if arg.runlocal:
        config.data.update(train_examples=64, eval_examples=16)
        config.train.update(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1)
        for entry in config.evals.values():
            entry.update(every_steps=2 if entry.every_steps else 0, num_batches=2)
        config.optim.update(warmup_steps=1, decay_steps=4)
    return config
