"""ViT trained from scratch on ImageNet-1k (ILSVRC-2012) at 224x224.

Variants (arg string):
  variant=B/16  the model size (Ti/S/B/L/H with a patch size; see jaxformer.models.vit).
  recipe=X      big_vision (default) or paper; see below.
  runlocal      a tiny model on small crops for a few steps (smoke tests).

Recipes:
  big_vision  big_vision's configs/vit_i1k.py ("How to train your ViT?", Steiner et al.
              2021): batch 4096, 300 epochs; Adam (b1 0.9, b2 0.999), lr 1e-3, 10k linear
              warmup steps then cosine decay to 0; weight decay 1e-4 on kernels, which
              big_vision adds scaled by the schedule only (update = -s(t) (lr adam + wd p)),
              i.e. optax.adamw's weight_decay 1e-4 / 1e-3 = 0.1; gradient clipping at global
              norm 1; a tanh pre-logits layer of the model width (rep_size=True) on the
              [class] token; no dropout. Input: inception crop 224 (5-100% of the area) and
              left-right flip for training, shorter side 256 then central 224 crop for
              evaluation, pixels scaled to [-1, 1]. Not reproduced here: its RandAugment(2, 15)
              and mixup (p 0.5) ("medium2" for B/16), so expect lower accuracy.
  paper       the ViT paper (Dosovitskiy et al. 2021), Table 3 and Appendix B.1, ImageNet
              ViT-B/{16,32}: batch 4096, 300 epochs, Adam (b1 0.9, b2 0.999), base lr 3e-3,
              10k warmup steps, cosine decay, weight decay 0.3 (as AdamW, the common reading
              of the paper), dropout 0.1, gradient clipping at global norm 1, a pre-training
              head with one hidden layer.
  Neither uses label smoothing (task.label_smoothing=0.1 gives DeiT's).

  jaxformer train --config=configs/vit/imagenet.py:variant=B/16 --workdir=DIR

A Hugging Face ViT classifier imported with `jaxformer import-weights --family=vit` starts
from this config, with the checkpoint's sizes, image size, LayerNorm epsilon and
normalisation, no pre-logits layer, and the evaluation resizing straight to the image size.
"""

import ml_collections

from configs import common
from jaxformer.config import ConfigError, parse_arg

TRAIN_EXAMPLES = 1_281_167  # ILSVRC-2012 train split.
RECIPES = ("big_vision", "paper")
# Model widths by size (jaxformer.models.vit.VARIANTS; not imported here, so that loading a
# config does not import jax before the command line has set up its devices).
WIDTHS = {"Ti": 192, "S": 384, "B": 768, "L": 1024, "H": 1280}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="B/16", recipe="big_vision", runlocal=False)
    if arg.recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {arg.recipe!r}; available: {', '.join(RECIPES)}")
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict(dict(
        name="vit", variant=arg.variant, patch_size=16, num_layers=12, num_heads=12,
        d_model=768, mlp_dim=3072, pool_type="tok", representation_size=768, dropout_rate=0.0,
        attention_dropout_rate=0.0, layer_norm_epsilon=1e-6))
    size = arg.variant.partition("/")[0]
    if size in WIDTHS:  # The pre-logits layer is as wide as the model.
        config.model.representation_size = WIDTHS[size]
    config.task = ml_collections.ConfigDict(dict(name="classification", label_smoothing=0.0))
    config.data = ml_collections.ConfigDict(dict(
        name="imagenet2012", data_dir="", train_split="train", eval_split="validation",
        image_size=224, crop="inception", min_area=0.05, flip=True, resize_size=256,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resample="bilinear", read_threads=16))
    batch_size, epochs = 4096, 300
    num_steps = epochs * TRAIN_EXAMPLES // batch_size  # 93,835
    config.train = common.train(batch_size=batch_size, num_steps=num_steps,
                                compute_dtype="bfloat16", checkpoint_every=1000)
    config.evals = ml_collections.ConfigDict()
    config.evals.val = common.evaluator("classification", every_steps=2500, split="",
                                        num_batches=-1, top_k=(1, 5))
    config.evals.val_loss = common.evaluator("loss", every_steps=2500, split="",
                                             num_batches=-1)
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, min_lr=0.0, schedule="cosine", warmup_steps=10_000,
        decay_steps=num_steps, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1, grad_clip=1.0))

    if arg.recipe == "paper":
        config.model.dropout_rate = 0.1
        config.optim.update(lr=3e-3, weight_decay=0.3)
    if arg.runlocal:
        config.model.update(variant="", patch_size=16, num_layers=2, num_heads=2, d_model=32,
                            mlp_dim=64, representation_size=32)
        config.data.update(image_size=64, resize_size=72, read_threads=0)
        config.train.update(batch_size=8, num_steps=4, compute_dtype="float32", log_every=1,
                            checkpoint_every=2)
        for entry in config.evals.values():
            entry.update(every_steps=2, num_batches=2)
        config.optim.update(warmup_steps=1, decay_steps=4)
    return config


def get_sweep(hyper, arg=None):
    """Peak learning rate x weight decay around the recipe's (4 runs): 1e-3 and 3e-3, with
    AdamW weight decay 0.1 and 0.3 (the values of the big_vision and paper recipes)."""
    del arg
    return hyper.product([hyper.sweep("config.optim.lr", [1e-3, 3e-3]),
                          hyper.sweep("config.optim.weight_decay", [0.1, 0.3])])
