"""Dosovitskiy et al., 2020 (ViT), Table 1: the model variants ViT-Base, Large and Huge.

Args (`jaxformer reproduce experiments/dosovitskiy2020 --scale=...`):
  scale=paper  ViT-B/16, L/16 and H/14 trained from scratch on ImageNet-1k at 224x224
               (configs/vit/imagenet.py, big_vision recipe, with its tanh pre-logits layer).
  scale=cpu    (default) model width x patch size on Fashion-MNIST (configs/vit/fashion_mnist.py):
               widths 32, 64, 128 (6 layers, heads of width 32, MLP twice the width) and
               patches 7 and 4 (16 or 49 patch tokens), 5 epochs per row.
  runlocal     the rows of the scale with a tiny model for a few steps (smoke tests); at
               scale=paper every row trains imagenet.py's tiny model.
"""

import ml_collections

from configs import common
from configs.vit import fashion_mnist, imagenet

PAPER_ROWS = {"B-16": "B/16", "L-16": "L/16", "H-14": "H/14"}  # Row name: ViT variant.
CPU_WIDTHS = (32, 64, 128)
CPU_PATCHES = (7, 4)
CPU_EPOCHS = 5


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.experiment_arg(arg)
    base_arg = "runlocal" if arg.runlocal else ""
    if arg.scale == "paper":
        config = imagenet.get_config(base_arg)
        # ImageNet's validation split is the papers' test set: one metric key for both scales.
        evals = config.evals
        config.evals = ml_collections.ConfigDict(dict(test=evals.val, test_loss=evals.val_loss))
        return config
    config = fashion_mnist.get_config(base_arg)
    if not arg.runlocal:
        num_steps = CPU_EPOCHS * fashion_mnist.TRAIN_EXAMPLES // config.train.batch_size
        config.train.num_steps = num_steps
        config.optim.decay_steps = num_steps
        config.evals.test.every_steps = 0  # Test accuracy at the end only.
    return config


def get_sweep(hyper, arg: str | None = None) -> list[dict]:
    arg = common.experiment_arg(arg)
    if arg.scale == "paper":
        rows = []
        for name, variant in PAPER_ROWS.items():
            width = imagenet.WIDTHS[variant.partition("/")[0]]
            sizes = {} if arg.runlocal else {"config.model.variant": variant,
                                             "config.model.representation_size": width}
            rows.append({"name": name, **sizes})
        return rows
    return [{"name": f"d{width}-p{patch}", "config.model.d_model": width,
             "config.model.num_heads": width // 32, "config.model.mlp_dim": 2 * width,
             "config.model.patch_size": patch}
            for width in CPU_WIDTHS for patch in CPU_PATCHES]
