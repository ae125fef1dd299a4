"""Radford et al., 2021 (CLIP): zero-shot transfer beside a linear probe and supervised
training, and retrieval, in the shape of the paper's comparisons.

Args (`jaxformer reproduce experiments/radford2021 --scale=...`):
  scale=cpu    (default) CLIP tiny/4 on the embedded emoji corpus plus captioned
               Fashion-MNIST (configs/clip/emoji.py): zero-shot top-1 on 144 held-out emoji
               (five subcategories never trained on) and on Fashion-MNIST test, with one prompt
               and with the ensemble of templates; a linear probe on its Fashion-MNIST image
               features; image-text retrieval on the held-out emoji; the same with SigLIP's
               sigmoid loss; and, for reference, a supervised ViT of the image tower's size
               on the 10,000 embedded Fashion-MNIST training images.
  scale=paper  the OpenAI sizes ViT-B/32, B/16 and L/14 (224 x 224 images, 77 tokens, the
               49,408-token vocabulary), for their exact parameter counts.
  runlocal     the rows with tiny models for a few steps (smoke tests).
"""

import ml_collections

from configs import common
from configs.clip import emoji
from configs.vit import fashion_mnist

PAPER_ROWS = {"B-32": "B/32", "B-16": "B/16", "L-14": "L/14"}  # Row name: CLIP variant.
RUNS = ("clip", "vit")
VIT_EPOCHS = 10
VIT_TRAIN_EXAMPLES = 10_000  # The embedded Fashion-MNIST subset.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.experiment_arg(arg, run="clip", loss="softmax", variant="tiny/4")
    if arg.run not in RUNS:
        raise ValueError(f"unknown run {arg.run!r}; available: {', '.join(RUNS)}")
    local = ",runlocal" if arg.runlocal else ""
    if arg.run == "clip":
        variant = PAPER_ROWS.get(arg.variant, arg.variant)
        return emoji.get_config(f"variant={variant},loss={arg.loss}{local}")
    # The supervised reference: a ViT as wide and deep as CLIP tiny/4's image tower, on the
    # same 32 x 32 views of the Fashion-MNIST images CLIP's Fashion-MNIST evaluations use.
    config = fashion_mnist.get_config(f"source=subset{local}")
    if not arg.runlocal:
        config.model.update(patch_size=4, num_layers=4, num_heads=4, d_model=128, mlp_dim=512)
        config.data.image_size = 32
        num_steps = VIT_EPOCHS * VIT_TRAIN_EXAMPLES // config.train.batch_size
        config.train.num_steps = num_steps
        config.optim.update(decay_steps=num_steps, warmup_steps=num_steps // 10)
        config.evals.test.every_steps = 0
    return config


def get_sweep(hyper, arg: str | None = None) -> list[dict]:
    arg = common.experiment_arg(arg)
    if arg.scale == "paper":
        return [{"name": name, "arg": f"run=clip,variant={name}"} for name in PAPER_ROWS]
    return [{"name": "clip", "arg": "run=clip"},
            {"name": "siglip", "arg": "run=clip,loss=sigmoid"},
            {"name": "vit", "arg": "run=vit"}]
