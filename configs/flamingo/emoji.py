"""The Flamingo-style model on the emoji corpus: a frozen CLIP image tower and a frozen GPT,
joined by a trained Perceiver Resampler and gated cross-attention blocks.

The third run of a chain; the first two are independent:

  jaxformer train --config=configs/clip/emoji.py --workdir=runs/clip_emoji
  jaxformer train --config=configs/flamingo/lm.py --workdir=runs/flamingo_lm
  jaxformer train --config=configs/flamingo/emoji.py:clip=runs/clip_emoji,lm=runs/flamingo_lm \
      --workdir=runs/flamingo_emoji

The image tower, the language model's architecture, its tokenizer and the image
preprocessing are read from the two runs (their config.json and assets; before a run has
started, its default config stands in); `init_from` loads
their parameters (`vision_encoder` <- CLIP's `image_encoder`; the GPT into `lm`) and `freeze`
keeps them fixed: only the resampler and the gated blocks train. Training sequences hold
4 image-caption chunks of the training emoji and Fashion-MNIST images (`data.emoji_interleaved`);
the held-out emoji subcategories are never seen, by any of the three runs.

Variants (arg string):
  clip=DIR, lm=DIR   the CLIP and GPT runs (without them: fresh towers of the default sizes,
                     for smoke tests and benchmarks).
  (sizes)            16 latents per image from a 2-layer resampler, gated blocks before every
                     LM block, heads 4 x 32, MLP x4; 1,500 steps of 32 sequences, AdamW lr
                     2e-4 (betas 0.9/0.999, weight decay 0.1 on the trained parts), 100 warmup
                     steps, cosine decay.
  connector=mean     one mean-pooled, linearly projected visual token per image instead of
                     the resampler (an ablation).
  every=N            a gated block before every N-th LM block.
  gated=false        ungated cross-attention (an ablation; not the LM at initialisation).
  frozen_lm=false    train the language model too (an ablation).
  steps=N            training steps.
  runlocal           tiny towers for a few steps (smoke tests).
"""

import os

import ml_collections

from configs import common
from configs.clip import emoji as clip_emoji
from configs.flamingo import lm as flamingo_lm
from jaxformer.config import ConfigError, parse_arg, read_workdir_config

# The GPT run's parameters under the model's `lm` (its gated blocks are new).
LM_MAPPING = (("lm/token_embedding", "token_embedding"),
              ("lm/position_embedding", "position_embedding"),
              ("lm/transformer", "transformer"))
FROZEN_VISION = ("vision_encoder/.*",)
FROZEN_LM = ("lm/(token_embedding|position_embedding|transformer)/.*",)


def _run_config(key: str, workdir: str, default: ml_collections.ConfigDict, *,
                same_data: bool) -> ml_collections.ConfigDict:
    """The config a source run was trained with, or `default` (the config it will be trained
    with) while it has not started: a sweep checks every point before the first trains. The
    run must be of `default`'s model (and, with `same_data`, of its data)."""
    if not (workdir and os.path.isfile(os.path.join(workdir, "config.json"))):
        return default
    run = read_workdir_config(workdir)
    if run.model.get("name") != default.model.name:
        raise ConfigError(f"{key}={workdir} holds a {run.model.get('name')!r} run; it must be "
                          f"a {default.model.name!r} one")
    if same_data and run.data.get("name") != default.data.name:
        raise ConfigError(f"{key}={workdir} was trained on {run.data.get('name')!r}; it must "
                          f"be trained on {default.data.name!r} (its held-out classes)")
    return run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, clip="", lm="", steps=1500, connector="resampler", every=1,
                    gated=True, frozen_lm=True, runlocal=False)
    local = "runlocal" if arg.runlocal else ""
    clip_run = _run_config("clip", arg.clip, clip_emoji.get_config(local), same_data=True)
    lm_run = _run_config("lm", arg.lm, flamingo_lm.get_config(local), same_data=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(
        name="flamingo", lm=lm_run.model.to_dict(), vision=clip_run.model.to_dict(),
        block_size=lm_run.data.block_size, connector=arg.connector, num_latents=16,
        resampler_depth=2, max_num_media=0, num_heads=4, head_dim=32, mlp_ratio=4,
        cross_attention_every=arg.every, gated=arg.gated, dropout_rate=0.0))
    config.task = ml_collections.ConfigDict(dict(name="captioning"))
    image = clip_run.data
    config.data = ml_collections.ConfigDict(dict(
        name="emoji_interleaved", tokenizer_workdir=arg.lm, vocab_size=lm_run.data.vocab_size,
        seq_length=64, max_images=4, template_probability=0.5, image_size=image.image_size,
        crop="none", flip=False, mean=tuple(image.mean), std=tuple(image.std),
        resample=image.get("resample", "bilinear"),
        holdout_subcategories=tuple(image.holdout_subcategories),
        fashion_mnist=True, fashion_mnist_examples=2000, fashion_mnist_source="subset",
        data_dir="", read_threads=1))
    batch_size, num_steps = 32, arg.steps
    config.train = common.train(batch_size=batch_size, num_steps=num_steps, log_every=50,
                                checkpoint_every=500)
    every = max(num_steps // 4, 1)
    config.evals = ml_collections.ConfigDict()
    config.evals.heldout_loss = common.evaluator("loss", every_steps=every, split="heldout",
                                                 num_batches=-1, perplexity_of="loss")
    config.evals.fashion_loss = common.evaluator("loss", every_steps=every,
                                                 split="fashion_mnist", num_batches=10,
                                                 perplexity_of="loss")
    # Few-shot classification of held-out classes (Flamingo's in-context learning) and
    # captioning of the held-out emoji, at the end of training.
    config.evals.groups = common.evaluator("few_shot", split="heldout_groups", shots=(0, 4, 8),
                                           num_queries=-1)
    config.evals.fashion = common.evaluator("few_shot", split="fashion_mnist", shots=(0, 4, 8),
                                            num_queries=500)
    config.evals.captions = common.evaluator("captioning", split="heldout", num_examples=-1,
                                             max_new_tokens=20, shots=0)
    common.add_transfer(config)
    config.init_from = ml_collections.ConfigDict(dict(
        vision=dict(workdir=arg.clip, step=-1, mapping=(("vision_encoder", "image_encoder"),),
                    strict=True),
        lm=dict(workdir=arg.lm, step=-1, mapping=LM_MAPPING, strict=True)))
    config.freeze = FROZEN_VISION + (FROZEN_LM if arg.frozen_lm else ())
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=2e-4, min_lr=0.0, schedule="cosine", warmup_steps=num_steps // 15,
        decay_steps=num_steps, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1, grad_clip=1.0))

    if arg.runlocal:
        config.model.update(num_latents=4, resampler_depth=1, num_heads=2, head_dim=8)
        config.data.update(seq_length=24, max_images=2, fashion_mnist_examples=100)
        config.train.update(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1)
        for entry in (config.evals.heldout_loss, config.evals.fashion_loss):
            entry.update(every_steps=2, num_batches=2)
        config.evals.groups.update(shots=(0, 1), num_queries=16)
        config.evals.fashion.update(shots=(0, 1), num_queries=16)
        config.evals.captions.update(num_examples=16, max_new_tokens=5)
        config.optim.update(warmup_steps=1, decay_steps=4)
    return config
