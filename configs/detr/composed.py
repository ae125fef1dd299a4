"""DETR on the composed detection canvases: Fashion-MNIST items and emoji of 20 classes on
64 x 64 canvases, 1 to 4 objects each, with exact boxes (`data.composed_detection`).

  jaxformer train --config=configs/detr/backbone.py --workdir=runs/detr_backbone
  jaxformer train --config=configs/detr/composed.py:backbone=runs/detr_backbone \\
      --workdir=runs/detr_composed

The paper's recipe scaled to a CPU. As DETR starts from an ImageNet-trained ResNet, this one
starts from a ResNet trained to classify the same objects, one per canvas
(`configs/detr/backbone.py`), loaded with `init_from` and frozen by DETR's rule (`FREEZE`: its
BatchNorm, stem and first stage); the backbone trains at a tenth of the learning rate
(`optim.lr_mults`). AdamW at lr 5e-4 (the paper's 1e-4 serves 500 epochs of COCO; in
2,000-step trials here, 5e-4 reached in 333 steps the validation loss 1e-4 reached in 2,000),
weight decay 1e-4 and gradient clipping 0.1, the learning rate dropped 10x after two thirds
of training; the loss of DETR (class 1, L1 5, GIoU 2, no-object
weight 0.1, auxiliary losses at every decoder layer); training views flipped, resized to a
random shorter side and, half the time, cropped first. Without `backbone` the ResNet trains
from scratch at the full learning rate, with only its BatchNorm statistics fixed (the
identity); from scratch, DETR learns where the objects are long before what they are.

Variants (arg string):
  variant=NAME   the model (`models.detr.VARIANTS`): `cpu` (default: a small ResNet of
                 stride 8, transformer width 64, 2 + 2 layers, 10 queries), `r18`, `r34`,
                 `r50`, `r101`.
  backbone=DIR   the workdir of a trained backbone (configs/detr/backbone.py with the
                 variant's ResNet); "" trains it from scratch.
  detr=DIR       fine-tune a whole DETR workdir instead (`start_from_detr`; e.g. an import
                 of facebook/detr-resnet-50): its model, every parameter but the class head.
  steps=N        training steps (default 6,000 of 32 canvases).
  runlocal       a tiny model for a few steps (smoke tests).
"""

import os

import ml_collections

from configs import common
from jaxformer.config import parse_arg, read_workdir_config

# DETR's freezing rule for a pretrained backbone, as `config.freeze` patterns
# (models.detr.FREEZE).
FREEZE = (r"backbone/(.*/)?bn\d?/.*", r"backbone/(conv1|layer1)/.*")
# A DETR's parameters but its class head, which is new for other classes.
DETR_PARTS = ("backbone", "input_proj", "encoder", "decoder", "query_embed", "bbox_embed")


def start_from_detr(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Fine-tuning from a whole DETR workdir (another run, or `jaxformer import-weights` of
    facebook/detr-resnet-50), as DETR's authors advise for new data: the model is the
    source's, its image normalisation too, every parameter is loaded but the class head (new,
    with this data's classes), and the backbone is frozen by DETR's rule (`FREEZE`)."""
    path = os.path.join(workdir, "config.json")
    if os.path.isfile(path):  # Before the source run has started, this config's model.
        source = read_workdir_config(workdir)
        if source.model.get("name") != "detr":
            raise ValueError(f"{workdir} is a {source.model.get('name')!r} run, not a DETR")
        config.model = ml_collections.ConfigDict(source.model.to_dict())
        for key in ("mean", "std"):
            if key in source.data:
                config.data[key] = tuple(source.data[key])
    config.init_from.update(workdir=workdir, mapping=tuple((p, p) for p in DETR_PARTS))
    config.freeze = FREEZE


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="cpu", backbone="", detr="", steps=6000, runlocal=False)
    if arg.backbone and arg.detr:
        raise ValueError("give backbone=DIR or detr=DIR, not both")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(name="detr", variant=arg.variant,
                                                  dropout_rate=0.1))
    config.task = ml_collections.ConfigDict(dict(
        name="detection", eos_coef=0.1, class_weight=1.0, bbox_weight=5.0, giou_weight=2.0,
        matcher="jax"))
    config.data = ml_collections.ConfigDict(dict(
        name="composed_detection", canvas_size=64, min_objects=1, max_objects=4,
        min_object_size=12, max_object_size=32, max_iou=0.1, background="textured",
        canvas_seed=0, train_examples=100_000, eval_examples=500,
        fashion_mnist_source="subset", scales=(48, 52, 56, 60, 64), max_size=64, max_boxes=4,
        flip=True, crop_probability=0.5, crop_size=(40, 64), mean=(0.5,), std=(0.5,),
        data_dir="", read_threads=1))
    batch_size, num_steps = 32, arg.steps
    config.train = common.train(batch_size=batch_size, num_steps=num_steps, log_every=50,
                                checkpoint_every=1000)
    config.evals = ml_collections.ConfigDict()
    config.evals.val = common.evaluator("loss", every_steps=max(num_steps // 6, 1),
                                        split="validation", num_batches=-1)
    config.evals.val_ap = common.evaluator("coco_ap", every_steps=max(num_steps // 6, 1),
                                           split="validation", num_batches=-1)
    config.evals.test = common.evaluator("loss", split="test", num_batches=-1)
    config.evals.test_ap = common.evaluator("coco_ap", split="test", num_batches=-1)
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=5e-4, min_lr=5e-5, schedule="step", warmup_steps=0,
        decay_steps=2 * num_steps // 3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
        grad_clip=0.1, lr_mults=(("backbone/.*", 0.1),)))
    if arg.backbone:
        config.init_from.update(workdir=arg.backbone, mapping=(("backbone", "backbone"),))
        config.freeze = FREEZE
    elif arg.detr:
        start_from_detr(config, arg.detr)
    else:
        config.optim.lr_mults = ()

    if arg.runlocal:
        config.data.update(train_examples=64, eval_examples=16)
        config.train.update(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1)
        for entry in config.evals.values():
            entry.update(every_steps=2 if entry.every_steps else 0, num_batches=2)
        config.optim.update(decay_steps=2)
    return config
