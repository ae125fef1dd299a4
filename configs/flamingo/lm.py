"""The language model of the Flamingo-style model: a GPT pretrained on books and captions.

Text only (jaxformer/data/books_captions.py): the embedded books (Shakespeare, Austen, the
King James Bible) with the captions of the training emoji and Fashion-MNIST's class names in
templates, every caption ending with `<|endofchunk|>`; held-out emoji classes are never seen.
The BPE vocabulary has `<image>` and `<|endofchunk|>` as tokens of their own, for the
Flamingo model that freezes this one and reads its workdir's tokenizer.

Variants (arg string):
  (none)      GPT of width 128, 4 layers, 4 heads (as the CLIP towers of configs/clip/emoji.py),
              no dropout, block 128, 4096-piece BPE (1.33M parameters); 1,600 steps of 32
              windows (6.6M tokens, about 1.6 passes over the 4.19M-token train stream),
              AdamW lr 1e-3 with 80 warmup steps and cosine decay to 1e-4. A step takes
              0.91 s on a 2-core CPU (`jaxformer bench --steps=5`, measured while another
              training shared the CPU), so the run takes about 25 minutes, evaluations
              included. Per-block parameters (`transformer/block_i`, no layer scan): the
              Flamingo model interleaves its own blocks between these.
  steps=N     training steps.
  runlocal    a tiny model for a few steps (smoke tests).

  jaxformer train --config=configs/flamingo/lm.py --workdir=runs/flamingo_lm
"""

import ml_collections

from configs import common
from jaxformer.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, steps=1600, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict(dict(
        name="gpt", variant="", num_layers=4, num_heads=4, d_model=128, mlp_ratio=4,
        dropout_rate=0.0, scan_layers=False))
    config.task = ml_collections.ConfigDict(dict(name="lm"))
    config.data = ml_collections.ConfigDict(dict(
        name="books_captions", tokenizer="bpe", vocab_size=4096, block_size=128,
        holdout_subcategories=("animal-mammal", "animal-bird", "animal-marine", "food-fruit",
                               "food-vegetable"),
        fashion_mnist=True, caption_repeats=8, data_dir=""))
    num_steps = arg.steps
    config.train = common.train(batch_size=32, num_steps=num_steps, log_every=50,
                                checkpoint_every=500)
    config.evals = ml_collections.ConfigDict()
    config.evals.val = common.evaluator("loss", every_steps=max(num_steps // 8, 1),
                                        split="validation", num_batches=20,
                                        perplexity_of="loss")
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3, min_lr=1e-4, schedule="cosine", warmup_steps=num_steps // 20,
        decay_steps=num_steps, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1, grad_clip=1.0))
    config.sample = ml_collections.ConfigDict(dict(
        prompt="\n", max_new_tokens=200, temperature=0.8, top_k=200, top_p=1.0))

    if arg.runlocal:
        config.model.update(num_layers=2, num_heads=2, d_model=32)
        config.data.update(block_size=32, vocab_size=512)
        config.train.update(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1)
        config.evals.val.update(every_steps=2, num_batches=2)
        config.optim.update(warmup_steps=1, decay_steps=4)
        config.sample.max_new_tokens = 20
    return config
