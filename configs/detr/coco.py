"""DETR on COCO 2017 (tfds `coco/2017`, prepared by the user as array_record;
`data.coco_detection`): 118,287 training and 5,000 validation images, 80 categories under
their COCO ids (91 classes).

  tfds build coco/2017 --file_format=array_record
  jaxformer train --config=configs/detr/coco.py:init_from=runs/backbone --workdir=runs/detr_coco

The paper's recipe (facebookresearch/detr's defaults): AdamW lr 1e-4 with the backbone at 1e-5
(`optim.lr_mults`), weight decay 1e-4, gradient clipping 0.1, batches of 64 images (the paper:
4 per GPU on 16 V100s), 500 epochs with the learning rate dropped 10x after 400 (the paper's
longer schedule; epochs of 118,287 // 64 = 1,848 steps, the last partial batch dropped as
DETR's sampler drops it); dropout 0.1; the set loss of DETR (class 1, L1 5, GIoU 2, no-object
weight 0.1, auxiliary losses at every decoder layer); DETR's augmentation (the data module's
defaults): a random shorter side of 480 to 800 pixels (the longer at most 1,333), half the time
after a random crop of 384 to 600 pixels a side, flips; evaluation at 800 (1,333). The
validation loss and COCO AP every 10 epochs and at the end.

DETR starts from an ImageNet-trained ResNet: `init_from` loads the `backbone` parameters of a
workdir that holds a ResNet of the variant's depth under `backbone/` (torchvision's parameter
names, `models.resnet`; another DETR run's workdir, say), and `freeze` is DETR's rule for a
pretrained backbone (`models.detr.FREEZE`: its BatchNorm, stem and first stage). Without
`init_from` the frozen parts keep their initialisation (BatchNorm the identity). DETR-R50 has
41,631,008 parameter values here, 41,302,368 of them trained (`jaxformer params`).

`jaxformer import-weights --family=detr` starts from this config: a Hugging Face DETR
(e.g. facebook/detr-resnet-50) becomes a workdir that `detect`, `evaluate` and `init_from`
read; only training and evaluation need COCO on disk.

Variants (arg string):
  variant=NAME   the backbone (`models.detr.VARIANTS`): `r50` (default), `r101`, `r18`, `r34`,
                 with the paper's transformer (6 + 6 layers of width 256, 100 queries).
  init_from=DIR  the workdir whose `backbone` parameters are loaded ("": none).
  detr=DIR       fine-tune a whole DETR workdir instead (configs/detr/composed.py's
                 `start_from_detr`: its model, every parameter but the class head).
  data_dir=DIR   the tfds data dir ("": $TFDS_DATA_DIR or ~/tensorflow_datasets).
  runlocal       the `cpu` model on 64-pixel images of 16 training images, for a few steps
                 (smoke tests; the data set must be prepared).
"""

import ml_collections

from configs import common
from configs.detr.composed import FREEZE, start_from_detr
from jaxformer.config import parse_arg

VARIANTS = ("r50", "r101", "r18", "r34")
TRAIN_IMAGES = 118_287
BATCH_SIZE = 64
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH_SIZE
EPOCHS, DROP_EPOCH, EVAL_EPOCHS = 500, 400, 10


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="r50", init_from="", detr="", data_dir="", runlocal=False)
    if arg.init_from and arg.detr:
        raise ValueError("give init_from=DIR or detr=DIR, not both")
    if arg.variant not in VARIANTS:
        raise ValueError(f"unknown variant {arg.variant!r}; available: {', '.join(VARIANTS)}")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(name="detr", variant=arg.variant,
                                                  dropout_rate=0.1))
    config.task = ml_collections.ConfigDict(dict(
        name="detection", eos_coef=0.1, class_weight=1.0, bbox_weight=5.0, giou_weight=2.0,
        matcher="jax"))
    # Each prefetched batch of 64 padded 1,333 x 1,333 images is 1.4 GB.
    config.data = ml_collections.ConfigDict(dict(
        name="coco_detection", data_dir=arg.data_dir, train_split="train",
        eval_split="validation", scales=tuple(range(480, 801, 32)), max_size=1333,
        max_boxes=100, flip=True, crop_probability=0.5, crop_size=(384, 600),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), read_threads=4))
    num_steps = EPOCHS * STEPS_PER_EPOCH
    config.train = common.train(batch_size=BATCH_SIZE, num_steps=num_steps, log_every=100,
                                checkpoint_every=STEPS_PER_EPOCH)
    every = EVAL_EPOCHS * STEPS_PER_EPOCH
    config.evals = ml_collections.ConfigDict()
    config.evals.val = common.evaluator("loss", every_steps=every, split="validation",
                                        num_batches=-1)
    config.evals.val_ap = common.evaluator("coco_ap", every_steps=every, split="validation",
                                           num_batches=-1)
    common.add_transfer(config)
    config.freeze = FREEZE
    if arg.init_from:
        config.init_from.update(workdir=arg.init_from, mapping=(("backbone", "backbone"),))
    elif arg.detr:
        start_from_detr(config, arg.detr)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-4, min_lr=1e-5, schedule="step", warmup_steps=0,
        decay_steps=DROP_EPOCH * STEPS_PER_EPOCH, b1=0.9, b2=0.999, eps=1e-8,
        weight_decay=1e-4, grad_clip=0.1, lr_mults=(("backbone/.*", 0.1),)))

    if arg.runlocal:
        if not arg.detr:
            config.model.variant = "cpu"
        config.data.update(train_split="train[:16]", eval_split="validation[:8]",
                           scales=(48, 56, 64), max_size=64, crop_size=(32, 48),
                           read_threads=0)
        config.train.update(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1)
        for entry in config.evals.values():
            entry.update(every_steps=2, num_batches=1)
        config.optim.update(decay_steps=2)
    return config
