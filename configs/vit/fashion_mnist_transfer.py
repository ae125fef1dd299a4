"""Transfer from a trained ViT workdir: a Fashion-MNIST run (configs/vit/fashion_mnist.py)
or any other ViT workdir of grayscale images, e.g. one written by
`jaxformer import-weights --family=vit`.

The encoder's architecture (sizes, patch size, LayerNorm epsilon) is read from the source's
config.json (before the source run has started, fashion_mnist.py's default stands in). The
encoder is loaded; the head too when the source classified Fashion-MNIST and every parameter
is fine-tuned, otherwise it is new (zero-initialised). Position embeddings are resized
bilinearly to the patch grid of `image_size`.

Variants (arg string):
  init_from=DIR   the source workdir (required, but for runlocal).
  mode=probe      linear probe: the encoder is loaded and frozen, a new zero-initialised head
                  is trained for 2 epochs (AdamW lr 1e-3, cosine).
  mode=finetune   full fine-tuning at `image_size` (default 56: the 4x4 patch grid becomes
                  8x8 and the position embeddings are resized bilinearly, as in the ViT
                  paper's fine-tuning at higher resolution); every parameter is loaded,
                  1 epoch, AdamW lr 3e-4 with 50 warmup steps (1e-4: 82.8 %
                  test top-1 after the epoch; 3e-4: 85.1 %).
  image_size=N    the training resolution, a multiple of the patch size; by default 28
                  (the images' own) rounded up to a multiple of the patch size for a probe,
                  twice that for fine-tuning.
  runlocal        the tiny model of fashion_mnist.py:runlocal for a few steps (smoke tests).

  jaxformer train --workdir=runs/vit_probe \
      --config=configs/vit/fashion_mnist_transfer.py:init_from=runs/vit_fashion,mode=probe
"""

import os

import ml_collections

from configs.vit import fashion_mnist
from jaxformer.config import ConfigError, parse_arg, read_workdir_config

MODES = ("probe", "finetune")
# The encoder's fields of `config.model`, taken from the source run.
ENCODER_FIELDS = ("variant", "patch_size", "num_layers", "num_heads", "d_model", "mlp_dim",
                  "pool_type", "layer_norm_epsilon")


def _source_run(workdir: str) -> ml_collections.ConfigDict | None:
    """The config of the source run when it is a ViT workdir that exists."""
    if workdir and os.path.isfile(os.path.join(workdir, "config.json")):
        source = read_workdir_config(workdir)
        if source.get("model", {}).get("name") == "vit":
            return source
    return None


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, init_from="", mode="probe", image_size=0, runlocal=False,
                    source="auto")
    if arg.mode not in MODES:
        raise ValueError(f"unknown mode {arg.mode!r}; available: {', '.join(MODES)}")
    if not arg.init_from and not arg.runlocal:  # A probe of a random encoder would be noise.
        raise ConfigError("init_from=DIR is required: the ViT workdir to transfer from (only "
                          "runlocal runs without one, on a fresh encoder)")
    config = fashion_mnist.get_config(f"source={arg.source}" + (",runlocal" if arg.runlocal
                                                                 else ""))
    config.init_from.workdir = arg.init_from
    source = _source_run(arg.init_from)
    if source is not None:
        config.model.update({k: source.model[k] for k in ENCODER_FIELDS if k in source.model})
    variant = config.model.get("variant", "")
    patch = int(variant.partition("/")[2]) if variant else config.model.patch_size
    native = -(-config.data.image_size // patch) * patch  # 28, rounded up to whole patches.
    config.data.image_size = arg.image_size or (native if arg.mode == "probe" else 2 * native)
    batch_size = config.train.batch_size
    epoch = fashion_mnist.TRAIN_EXAMPLES // batch_size
    if arg.mode == "probe":
        config.init_from.mapping = (("encoder", "encoder"),)
        config.freeze = ("encoder/.*",)
        num_steps, lr, warmup = 2 * epoch, 1e-3, 0
    else:
        if source is not None and source.data.name != "fashion_mnist":
            config.init_from.mapping = (("encoder", "encoder"),)  # Other classes: a new head.
        num_steps, lr, warmup = epoch, 3e-4, 50
    config.train.update(num_steps=num_steps, checkpoint_every=epoch // 2)
    config.optim.update(lr=lr, min_lr=lr / 100, warmup_steps=warmup, decay_steps=num_steps,
                        weight_decay=0.0 if arg.mode == "probe" else 0.05)
    for entry in config.evals.values():
        entry.every_steps = epoch // 2 if entry.every_steps else 0
    if arg.runlocal:
        config.train.update(num_steps=4, checkpoint_every=2)
        config.optim.update(warmup_steps=1, decay_steps=4)
        for entry in config.evals.values():
            entry.update(every_steps=2, num_batches=2)
    return config
