"""CLIP on the embedded emoji corpus (plus captioned Fashion-MNIST), sized for a 2-core CPU.

Training pairs: 1,767 emoji (each with its names and CLDR keywords as captions, some put in a
template such as "an emoji of {}.") and 2,000 Fashion-MNIST images captioned with a template
of their class; five emoji subcategories (mammals, birds, marine animals, fruit, vegetables:
144 emoji) are never trained on. Evaluations: zero-shot classification of the held-out emoji
among themselves (ensembled templates and a single prompt), zero-shot Fashion-MNIST test
(likewise), image-text retrieval on the held-out emoji (R@1/5/10 both ways), and a linear
probe on Fashion-MNIST features; the contrastive loss on the held-out pairs.

Variants (arg string):
  (none)        CLIP tiny/4: 32x32 images in 4x4 patches, both towers 4 layers of width 128,
                embeddings of 128 (1.9M parameters); 2,000 steps of 256 pairs, AdamW lr 5e-4
                (betas 0.9/0.98, eps 1e-6, weight decay 0.1) with 200 warmup steps and cosine
                decay, as the paper's recipe.
  variant=X     a named size from jaxformer.models.clip.VARIANTS: tiny/4, small/4, B/32,
                B/16, L/14 (the OpenAI sizes; 224x224 images, 77 tokens, 49,408-token
                vocabulary: ViT-B/32 has 151,277,313 parameters).
  loss=X        softmax (CLIP, default) or sigmoid (SigLIP).
  steps=N       training steps.
  runlocal      a tiny model for a few steps (smoke tests).

  jaxformer train --config=configs/clip/emoji.py --workdir=runs/clip_emoji
  jaxformer zero-shot --workdir=runs/clip_emoji --image=cat.png --labels="cat,dog,owl"

A Hugging Face CLIP imported with `jaxformer import-weights --family=clip` starts from this
config with the checkpoint's sizes, image size, vocabulary, context and OpenAI's pixel mean
and std (jaxformer/weights/clip.py).
"""

import ml_collections

from configs import common
from jaxformer.config import parse_arg

OPENAI = ("B", "L")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="tiny/4", loss="softmax", steps=2000, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    openai = arg.variant.split("/")[0] in OPENAI
    config.model = ml_collections.ConfigDict(dict(
        name="clip", variant=arg.variant, embed_dim=128, patch_size=4, vision_layers=4,
        vision_width=128, vision_heads=4, vision_mlp_dim=512, text_layers=4, text_width=128,
        text_heads=4, text_mlp_dim=512, pool_type="tok", activation="quick_gelu",
        loss=arg.loss, dropout_rate=0.0))
    config.task = ml_collections.ConfigDict(dict(name="contrastive", loss=arg.loss))
    config.data = ml_collections.ConfigDict(dict(
        name="emoji", image_size=224 if openai else 32, crop="none", flip=False,
        mean=(0.5,), std=(0.5,), resample="bilinear", context_length=77 if openai else 32,
        vocab_size=49_408 if openai else 2048, template_probability=0.5,
        holdout_subcategories=("animal-mammal", "animal-bird", "animal-marine", "food-fruit",
                               "food-vegetable"),
        fashion_mnist=True, fashion_mnist_examples=2000, fashion_mnist_source="subset",
        data_dir="", read_threads=1))
    batch_size, num_steps = 256, arg.steps
    config.train = common.train(batch_size=batch_size, num_steps=num_steps, log_every=50,
                                checkpoint_every=500)
    every = max(num_steps // 4, 1)
    config.evals = ml_collections.ConfigDict()
    config.evals.zeroshot = common.evaluator("zero_shot", every_steps=every, split="zeroshot",
                                             num_batches=-1, top_k=(1, 5),
                                             templates="ensemble")
    config.evals.zeroshot_single = common.evaluator("zero_shot", split="zeroshot",
                                                    num_batches=-1, top_k=(1, 5),
                                                    templates="single")
    config.evals.fashion = common.evaluator("zero_shot", every_steps=every,
                                            split="fashion_mnist", num_batches=-1,
                                            top_k=(1, 5), templates="ensemble")
    config.evals.fashion_single = common.evaluator("zero_shot", split="fashion_mnist",
                                                   num_batches=-1, top_k=(1, 5),
                                                   templates="single")
    config.evals.retrieval = common.evaluator("retrieval", split="retrieval", ks=(1, 5, 10))
    config.evals.probe = common.evaluator("linear_probe", split="fashion_mnist",
                                          train_split="fashion_mnist_train", num_batches=-1)
    config.evals.heldout_loss = common.evaluator("loss", split="retrieval", num_batches=-1)
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=5e-4, min_lr=0.0, schedule="cosine", warmup_steps=num_steps // 10,
        decay_steps=num_steps, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1, grad_clip=1.0))

    if arg.runlocal:
        config.model.update(variant="", embed_dim=16, vision_layers=1, vision_width=16,
                            vision_heads=2, vision_mlp_dim=32, text_layers=1, text_width=16,
                            text_heads=2, text_mlp_dim=32, patch_size=8)
        config.data.update(image_size=16, context_length=16, vocab_size=512,
                           fashion_mnist_examples=100)
        config.train.update(batch_size=16, num_steps=4, checkpoint_every=2, log_every=1)
        for entry in config.evals.values():
            entry.update(every_steps=2 if entry.every_steps else 0)
            if entry.type in ("zero_shot", "loss", "linear_probe"):
                entry.num_batches = 2
        config.optim.update(warmup_steps=1, decay_steps=4)
    return config
